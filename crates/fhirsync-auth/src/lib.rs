//! fhirsync-auth (work in progress).
