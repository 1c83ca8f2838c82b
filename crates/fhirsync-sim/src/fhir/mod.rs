//! FHIR side of the simulator: synthetic data, Epic search rules, paging, patient lists, Bulk
//! `$export`, fault injection. Owned by the simulator work (issue #2).

use std::sync::Arc;

use axum::Router;

use crate::SimState;

/// Synthetic data, search behaviour and fault injection settings.
#[derive(Debug, Clone, Default)]
pub struct FhirConfig {
    /// Number of synthetic patients.
    pub patients: usize,
    /// Seed of the deterministic generator.
    pub seed: u64,
}

/// Runtime FHIR state.
#[derive(Debug)]
pub struct FhirState {
    /// Configuration in force.
    pub config: FhirConfig,
}

impl FhirState {
    /// New state from configuration.
    pub fn new(config: FhirConfig) -> Self {
        FhirState { config }
    }
}

/// FHIR routes.
pub fn routes() -> Router<Arc<SimState>> {
    Router::new()
}
