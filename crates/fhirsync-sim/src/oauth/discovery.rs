//! `GET {fhir_base}/.well-known/smart-configuration`, shaped like Epic's sandbox document
//! (endpoints, auth methods, grant types, PKCE S256 only, capabilities).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use fhirsync_core::FhirVersion;
use serde_json::json;

use crate::{PREFIX, SimState};

/// The SMART configuration document of one FHIR base.
pub async fn smart_configuration(
    State(state): State<Arc<SimState>>,
    Path(version): Path<String>,
) -> Response {
    if version.parse::<FhirVersion>().is_err() {
        return StatusCode::NOT_FOUND.into_response();
    }
    Json(document(&state)).into_response()
}

/// The document content (same for every FHIR version, as Epic).
pub fn document(state: &SimState) -> serde_json::Value {
    let base = &state.base_url;
    json!({
        "issuer": format!("{base}{PREFIX}/oauth2"),
        "jwks_uri": format!("{base}{PREFIX}/api/epic/2019/Security/Open/PublicKeys/530027/OIDC"),
        "authorization_endpoint": state.authorize_url(),
        "token_endpoint": state.token_url(),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic", "private_key_jwt"],
        "grant_types_supported": [
            "authorization_code",
            "refresh_token",
            "client_credentials",
            "urn:ietf:params:oauth:grant-type:jwt-bearer",
            "urn:ietf:params:oauth:grant-type:token-exchange"
        ],
        "scopes_supported": ["epic.scanning.dmsusername", "fhirUser", "launch", "openid", "profile"],
        "response_types_supported": ["code"],
        "capabilities": [
            "launch-ehr",
            "launch-standalone",
            "client-public",
            "client-confidential-symmetric",
            "client-confidential-asymmetric",
            "context-passthrough-banner",
            "context-passthrough-style",
            "context-ehr-patient",
            "context-ehr-encounter",
            "context-standalone-patient",
            "permission-offline",
            "permission-patient",
            "permission-user",
            "permission-v1",
            "permission-v2",
            "authorize-post"
        ],
        "code_challenge_methods_supported": ["S256"]
    })
}
