//! fhirsync-fhir (work in progress).
