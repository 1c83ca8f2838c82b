//! fhirsync-sim (work in progress).
