//! fhirsync-auth (work in progress).

/// Errors of the auth crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {}
