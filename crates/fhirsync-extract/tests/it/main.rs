//! Integration tests of extraction: against a scripted mini-Epic stub (exact control of
//! outcomes and faults) and against the in-process simulator.

mod crawl;
mod outage;
mod sim;
mod stub;
