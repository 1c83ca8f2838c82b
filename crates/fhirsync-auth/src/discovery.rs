//! Finding the OAuth endpoints of a FHIR server.
//!
//! Order (Epic, fact sheet §1.1): an explicit Auth Base URI wins (token = base + `/token`,
//! authorize = base + `/authorize`, Qlik's setting); else `GET {fhir_base}/.well-known/smart-configuration`;
//! else `GET {fhir_base}/metadata` asking for JSON (`Accept: application/fhir+json`, Epic answers
//! XML without it) and reading the `oauth-uris` extension of `rest[0].security`. Every request
//! carries `Epic-Client-ID`, because a customer may override endpoints per client id.

use serde_json::Value;
use tracing::debug;
use url::Url;

use crate::{Error, Result};

/// URL of the SMART `oauth-uris` security extension.
pub const OAUTH_URIS: &str = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris";

/// OAuth endpoints of a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// Token endpoint.
    pub token: Url,
    /// Authorize endpoint (needed for standalone launch only).
    pub authorize: Option<Url>,
}

impl Endpoints {
    /// Endpoints from an Auth Base URI (`https://fhir.epic.com/interconnect-fhir-oauth/oauth2`).
    pub fn from_auth_base(base: &Url) -> Result<Endpoints> {
        let root = base.as_str().trim_end_matches('/');
        let parse = |suffix: &str| {
            Url::parse(&format!("{root}/{suffix}")).map_err(|source| Error::InvalidUrl {
                setting: "auth_base_uri",
                suffix: suffix.to_string(),
                source,
            })
        };
        Ok(Endpoints { token: parse("token")?, authorize: Some(parse("authorize")?) })
    }

    /// Uses `auth_base` when given, else discovers from `fhir_base`.
    pub async fn resolve(
        http: &reqwest::Client,
        auth_base: Option<&Url>,
        fhir_base: &Url,
        client_id: &str,
    ) -> Result<Endpoints> {
        match auth_base {
            Some(base) => Endpoints::from_auth_base(base),
            None => discover(http, fhir_base, client_id).await,
        }
    }
}

/// `{fhir_base}/{path}` without doubling slashes.
pub(crate) fn under_base(fhir_base: &Url, path: &str) -> Result<Url> {
    let joined = format!("{}/{path}", fhir_base.as_str().trim_end_matches('/'));
    Url::parse(&joined).map_err(|source| Error::InvalidUrl {
        setting: "fhir_base",
        suffix: path.to_string(),
        source,
    })
}

/// Discovers the endpoints: smart-configuration first, `/metadata` second.
pub async fn discover(http: &reqwest::Client, fhir_base: &Url, client_id: &str) -> Result<Endpoints> {
    let smart = match from_smart_configuration(http, fhir_base, client_id).await {
        Ok(endpoints) => return Ok(endpoints),
        Err(e) => e,
    };
    let smart_unreachable = matches!(smart, Error::Unreachable { .. });
    debug!(problem = %smart, "SMART configuration unusable; trying /metadata.");
    match from_metadata(http, fhir_base, client_id).await {
        Ok(endpoints) => Ok(endpoints),
        // The server could not be reached at all: a network problem (with its own fix), not a
        // server without discovery documents that needs the Auth Base URI.
        Err(e @ Error::Unreachable { .. }) if smart_unreachable => Err(e),
        Err(e) => Err(Error::Discovery {
            fhir_base: fhir_base.to_string(),
            smart_configuration: Box::new(smart),
            source: Box::new(e),
        }),
    }
}

async fn get_json(http: &reqwest::Client, url: &Url, accept: &str, client_id: &str) -> Result<Value> {
    let response = http
        .get(url.clone())
        .header(reqwest::header::ACCEPT, accept)
        .header("Epic-Client-ID", client_id)
        .send()
        .await
        .map_err(|e| Error::unreachable(url.as_str(), e))?;
    let status = response.status();
    if !status.is_success() {
        return Err(Error::UnexpectedResponse {
            url: url.to_string(),
            status: status.as_u16(),
            problem: "not a success status".into(),
        });
    }
    response.json::<Value>().await.map_err(|_| Error::UnexpectedResponse {
        url: url.to_string(),
        status: status.as_u16(),
        problem: "the body is not JSON".into(),
    })
}

fn url_field(doc: &Value, field: &str) -> Option<Url> {
    doc.get(field).and_then(Value::as_str).and_then(|s| Url::parse(s).ok())
}

/// Endpoints from `{fhir_base}/.well-known/smart-configuration`.
pub async fn from_smart_configuration(
    http: &reqwest::Client,
    fhir_base: &Url,
    client_id: &str,
) -> Result<Endpoints> {
    let url = under_base(fhir_base, ".well-known/smart-configuration")?;
    let doc = get_json(http, &url, "application/json", client_id).await?;
    let token = url_field(&doc, "token_endpoint").ok_or_else(|| Error::UnexpectedResponse {
        url: url.to_string(),
        status: 200,
        problem: "no valid `token_endpoint`".into(),
    })?;
    debug!(token_url = %token, "OAuth endpoints discovered from smart-configuration.");
    Ok(Endpoints { token, authorize: url_field(&doc, "authorization_endpoint") })
}

/// Endpoints from the `oauth-uris` extension of `{fhir_base}/metadata` (asked as FHIR JSON).
pub async fn from_metadata(http: &reqwest::Client, fhir_base: &Url, client_id: &str) -> Result<Endpoints> {
    let url = under_base(fhir_base, "metadata")?;
    let doc = get_json(http, &url, "application/fhir+json", client_id).await?;
    let uris = doc
        .pointer("/rest/0/security/extension")
        .and_then(Value::as_array)
        .and_then(|exts| exts.iter().find(|e| e.get("url").and_then(Value::as_str) == Some(OAUTH_URIS)))
        .and_then(|e| e.get("extension"))
        .and_then(Value::as_array)
        .ok_or_else(|| Error::UnexpectedResponse {
            url: url.to_string(),
            status: 200,
            problem: "no oauth-uris extension in rest[0].security".into(),
        })?;
    let find = |name: &str| {
        uris.iter()
            .find(|e| e.get("url").and_then(Value::as_str) == Some(name))
            .and_then(|e| e.get("valueUri"))
            .and_then(Value::as_str)
            .and_then(|s| Url::parse(s).ok())
    };
    let token = find("token").ok_or_else(|| Error::UnexpectedResponse {
        url: url.to_string(),
        status: 200,
        problem: "oauth-uris has no valid `token`".into(),
    })?;
    debug!(token_url = %token, "OAuth endpoints discovered from metadata.");
    Ok(Endpoints { token, authorize: find("authorize") })
}
