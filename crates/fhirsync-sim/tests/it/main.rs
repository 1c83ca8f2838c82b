//! Integration tests of the Epic simulator's FHIR side, over real HTTP (reqwest).

mod bulk;
mod common;
mod create;
mod epic;
mod faults;
mod identity;
mod licence;
mod lists;
mod metadata;
mod mutation;
mod paging;
mod profile;
mod rules;
mod search;
