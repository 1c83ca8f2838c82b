//! End-to-end tests of the `fhirsync` binary: one test binary, one module per area.

mod auth;
mod bulk;
mod discover;
mod errors;
mod init;
mod locks;
mod metrics;
mod push;
mod replay;
mod report;
mod secrets;
mod status;
mod sync;
mod util;
mod views;
