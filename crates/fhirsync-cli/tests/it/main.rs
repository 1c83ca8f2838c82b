//! End-to-end tests of the `fhirsync` binary: one test binary, one module per area.

mod auth;
mod discover;
mod errors;
mod locks;
mod push;
mod replay;
mod secrets;
mod status;
mod sync;
mod util;
