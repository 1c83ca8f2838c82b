//! Integration tests of fhirsync-views (one binary; one module per topic).

mod conformance;
mod decimals;
mod default_views;
mod validation;
