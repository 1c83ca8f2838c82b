//! Shared helpers: fixture keys, and the auth-typed views of a simulator started with
//! `fhirsync_sim::testing`.

use fhirsync_auth::{Endpoints, SigningKey};
use fhirsync_core::FhirVersion;
use fhirsync_sim::Sim;
use fhirsync_sim::oauth::ClientRegistration;
use fhirsync_sim::testing::backend_client;
use secrecy::SecretString;
use url::Url;

/// RSA 2048 PKCS#8 test key.
pub const RSA_PKCS8: &str = include_str!("fixtures/rsa-pkcs8.pem");
/// The same key as PKCS#1.
pub const RSA_PKCS1: &str = include_str!("fixtures/rsa-pkcs1.pem");
/// EC P-384 SEC1 test key.
pub const EC_P384_SEC1: &str = include_str!("fixtures/ec-p384-sec1.pem");
/// RSA 1024 (too small).
pub const RSA_1024: &str = include_str!("fixtures/rsa-1024.pem");

/// A key parsed from PEM text.
pub fn key(pem: &str) -> SigningKey {
    SigningKey::from_pem(&SecretString::from(pem), "test fixture", None).expect("fixture key parses")
}

/// Registers a backend client whose JWKS is `key`'s public set, granted Patient and Observation.
pub fn register_backend(sim: &Sim, client_id: &str, key: &SigningKey, from_url: bool) {
    sim.state().oauth.register_client(ClientRegistration {
        scopes: vec!["system/Patient.read".into(), "system/Observation.read".into()],
        ..backend_client(client_id, key.jwks(), from_url)
    });
}

/// Token endpoint URL of `sim`.
pub fn token_url(sim: &Sim) -> Url {
    Url::parse(&sim.token_url()).expect("sim token URL")
}

/// R4 FHIR base of `sim`.
pub fn r4_base(sim: &Sim) -> Url {
    Url::parse(&sim.fhir_base(FhirVersion::R4)).expect("sim FHIR base")
}

/// Endpoints of `sim` from its Auth Base URI.
pub fn endpoints(sim: &Sim) -> Endpoints {
    let base = Url::parse(&sim.auth_base()).expect("auth base");
    Endpoints::from_auth_base(&base).expect("endpoints")
}
