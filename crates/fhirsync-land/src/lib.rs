//! fhirsync-land (work in progress).
