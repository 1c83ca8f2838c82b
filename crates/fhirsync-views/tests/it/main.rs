//! Integration tests of fhirsync-views (one binary; one module per topic).

mod conformance;
mod default_views;
mod validation;
