//! fhirsync-views (work in progress).
