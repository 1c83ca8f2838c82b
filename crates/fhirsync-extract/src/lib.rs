//! fhirsync-extract (work in progress).
