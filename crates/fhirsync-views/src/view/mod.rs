//! ViewDefinition model ([`model`]: parse + validate + compile) and runner ([`run`]).

pub(crate) mod model;
pub(crate) mod run;
