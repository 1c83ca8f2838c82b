//! End-to-end tests of the `fhirsync` binary: one test binary, one module per area.

mod auth;
mod errors;
mod secrets;
mod sync;
mod util;
