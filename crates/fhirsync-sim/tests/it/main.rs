//! Integration tests of the Epic simulator's FHIR side, over real HTTP (reqwest).

mod bulk;
mod common;
mod create;
mod faults;
mod lists;
mod metadata;
mod mutation;
mod paging;
mod search;
