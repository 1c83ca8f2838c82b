//! Integration tests of fhirsync-auth against the in-process Epic simulator.

mod backend;
mod common;
mod discovery;
mod keys;
mod launch;
