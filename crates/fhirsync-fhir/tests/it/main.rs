//! Integration tests of the FHIR client against small in-process HTTP stubs.

mod client;
mod record;
mod sim;
mod stub;
