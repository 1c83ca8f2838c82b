//! Integration tests of the FHIR client against small in-process HTTP stubs.

mod client;
mod network;
mod outage;
mod record;
mod sim;
mod stub;
