//! [`ConnectionConfig`]: the `[connection]` table of the configuration file, typed once.
//!
//! ```toml
//! [connection]
//! client_id = "my-epic-client-id"
//! auth_base_uri = "https://fhir.epic.com/interconnect-fhir-oauth/oauth2"
//! fhir_r4_endpoint = "https://fhir.epic.com/interconnect-fhir-oauth/api/FHIR/R4"
//! fhir_stu3_endpoint = "https://fhir.epic.com/interconnect-fhir-oauth/api/FHIR/STU3"
//! private_key = "keys/epic.pem"          # or "env:EPIC_PRIVATE_KEY"
//! patient_list_identifier = "systemlist|6442"
//! ```
//!
//! Endpoints are parsed as [`Url`]s while the file is read, so a bad URL is refused with its key
//! and line. Every stage borrows the section it needs: authentication (`fhirsync-auth`), the
//! FHIR client's network settings and the extraction's endpoints and patient list.
//!
//! Secrets are never written inline: `client_secret` and `private_key` take `env:VARIABLE` or
//! `file:/path` ([`SecretRef`]; `private_key` also a bare path). An inline `client_secret` is
//! rejected by [`ConnectionConfig::validate`] without being echoed, because config files end up
//! in backups, tickets and version control. The environment overrides
//! (`FHIRSYNC_CLIENT_SECRET`, ...) may carry the value itself.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, de};
use url::Url;

use crate::{Error, FhirVersion, Result, SecretRef};

/// Environment variable prefix of the overrides.
pub const ENV_PREFIX: &str = "FHIRSYNC_";

/// The environment variable that may carry the client secret itself.
const CLIENT_SECRET_ENV: &str = "FHIRSYNC_CLIENT_SECRET";

/// How to reach and authenticate to Epic (`[connection]`).
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionConfig {
    /// Epic client id of the registered app (also sent as `Epic-Client-ID` on metadata calls).
    #[serde(default)]
    pub client_id: Option<String>,
    /// Client secret for standalone launch: `env:VARIABLE` or `file:/path`. Never inline (kept as
    /// text until [`ConnectionConfig::validate`], so that an inline value is never echoed).
    #[serde(default)]
    pub client_secret: Option<SecretString>,
    /// OAuth base, e.g. `https://fhir.epic.com/interconnect-fhir-oauth/oauth2` (token and
    /// authorize endpoints below it). When unset, discovered from the FHIR endpoint's metadata.
    #[serde(default, deserialize_with = "http_url")]
    pub auth_base_uri: Option<Url>,
    /// `aud` sent on authorize requests: the FHIR base URL of the resource server (default: the
    /// FHIR base).
    #[serde(default, deserialize_with = "http_url")]
    pub audience: Option<Url>,
    /// R4 FHIR base URL (Epic's primary API).
    #[serde(default, deserialize_with = "http_url")]
    pub fhir_r4_endpoint: Option<Url>,
    /// STU3 FHIR base URL (patient lists, STU3-only types).
    #[serde(default, deserialize_with = "http_url")]
    pub fhir_stu3_endpoint: Option<Url>,
    /// DSTU2 FHIR base URL (DSTU2-only types such as MedicationOrder).
    #[serde(default, deserialize_with = "http_url")]
    pub fhir_dstu2_endpoint: Option<Url>,
    /// Epic server root, e.g. `https://fhir.epic.com/interconnect-fhir-oauth`. Version endpoints
    /// that are not set individually default to `{fhir_base_url}/api/FHIR/{R4|STU3|DSTU2}`.
    #[serde(default, deserialize_with = "http_url")]
    pub fhir_base_url: Option<Url>,
    /// Private key (PEM) for backend services: a path, `file:/path` or `env:VARIABLE`.
    #[serde(default, deserialize_with = "secret_path")]
    pub private_key: Option<SecretRef>,
    /// `kid` of the signing key in the app's JWK Set (default: the RFC 7638 thumbprint).
    #[serde(default)]
    pub key_id: Option<String>,
    /// Patient list, `system|value` as in Epic (`systemlist|6442`).
    #[serde(default)]
    pub patient_list_identifier: Option<String>,
    /// OAuth scope to request (Epic ignores it for backend services; the registration decides).
    #[serde(default)]
    pub scope: Option<String>,
    /// Redirect URI registered for standalone launch.
    #[serde(default, deserialize_with = "any_url")]
    pub redirect_uri: Option<Url>,
    /// File where tokens of a standalone launch are kept (created with mode 0600).
    #[serde(default)]
    pub token_store: Option<PathBuf>,
    /// HTTPS proxy, e.g. `http://proxy.hospital.local:3128`. Kept as text and checked by
    /// [`ConnectionConfig::validate`]: it may carry credentials, which a parse error of the file
    /// would quote.
    #[serde(default)]
    pub https_proxy: Option<String>,
    /// PEM bundle of extra trusted CA certificates (hospital TLS inspection).
    #[serde(default)]
    pub ca_bundle: Option<PathBuf>,
}

/// Debug never shows the client secret or the proxy (which may carry credentials).
impl fmt::Debug for ConnectionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = |u: &Option<Url>| u.as_ref().map(Url::as_str).map(str::to_string);
        f.debug_struct("ConnectionConfig")
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "[redacted]"))
            .field("auth_base_uri", &url(&self.auth_base_uri))
            .field("fhir_r4_endpoint", &url(&self.fhir_r4_endpoint))
            .field("fhir_stu3_endpoint", &url(&self.fhir_stu3_endpoint))
            .field("fhir_dstu2_endpoint", &url(&self.fhir_dstu2_endpoint))
            .field("fhir_base_url", &url(&self.fhir_base_url))
            .field("private_key", &self.private_key.as_ref().map(SecretRef::describe))
            .field("patient_list_identifier", &self.patient_list_identifier)
            .field("https_proxy", &self.https_proxy.as_ref().map(|_| "[set]"))
            .field("ca_bundle", &self.ca_bundle)
            .finish_non_exhaustive()
    }
}

/// Why a URL setting is refused.
#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    /// The text does not parse as an absolute URL.
    #[error("not a URL ({0}); write the full address, e.g. https://host/api/FHIR/R4")]
    Parse(url::ParseError),
    /// The URL's scheme is not `http` or `https`.
    #[error("scheme `{scheme}` is not http or https")]
    Scheme {
        /// The scheme given (e.g. `ftp`).
        scheme: String,
    },
}

/// Parses an absolute URL; with `http_only`, its scheme must be `http` or `https`.
fn parse_url(text: &str, http_only: bool) -> Result<Url, UrlError> {
    let url = Url::parse(text.trim()).map_err(UrlError::Parse)?;
    if http_only && !matches!(url.scheme(), "http" | "https") {
        return Err(UrlError::Scheme { scheme: url.scheme().to_string() });
    }
    Ok(url)
}

/// Deserializes an optional http(s) URL; the error names the problem (the loader adds the key
/// path and the line).
fn http_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Url>, D::Error> {
    let text = String::deserialize(d)?;
    parse_url(&text, true).map(Some).map_err(de::Error::custom)
}

/// Deserializes an optional absolute URL of any scheme (redirect URIs).
fn any_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Url>, D::Error> {
    let text = String::deserialize(d)?;
    parse_url(&text, false).map(Some).map_err(de::Error::custom)
}

/// Deserializes a key reference: `env:VAR`, `file:PATH` or a bare path.
fn secret_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SecretRef>, D::Error> {
    let text = String::deserialize(d)?;
    Ok(Some(SecretRef::parse_path(&text)))
}

/// The FHIR base URL of each configured version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Endpoints(pub BTreeMap<FhirVersion, Url>);

impl Endpoints {
    /// Base URL of `version`, if configured.
    pub fn get(&self, version: FhirVersion) -> Option<&Url> {
        self.0.get(&version)
    }
    /// Configured versions, newest first.
    pub fn versions(&self) -> Vec<FhirVersion> {
        FhirVersion::ALL.into_iter().filter(|v| self.0.contains_key(v)).collect()
    }
    /// `R4, STU3` style list for messages.
    pub fn describe(&self) -> String {
        self.versions().iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", ")
    }
}

/// `{base}/api/FHIR/{version}`: Epic's layout below the server root.
fn derived_endpoint(base: &Url, version: FhirVersion) -> Url {
    let mut url = base.clone();
    url.set_path(&format!("{}/api/FHIR/{}", base.path().trim_end_matches('/'), version.as_str()));
    url
}

impl ConnectionConfig {
    /// Applies `FHIRSYNC_*` overrides from the process environment.
    pub fn apply_env(&mut self) -> Result<()> {
        self.apply_env_from(|k| std::env::var(k).ok())
    }

    /// Applies `FHIRSYNC_<KEY>` overrides read through `get` (testable without the process env).
    /// A URL override that does not parse is refused, naming the variable.
    pub fn apply_env_from(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<()> {
        let var = |k: &str| {
            let name = format!("{ENV_PREFIX}{k}");
            get(&name).filter(|v| !v.is_empty()).map(|v| (name, v))
        };
        let url = |k: &str, http_only: bool| -> Result<Option<Url>> {
            var(k)
                .map(|(key, v)| parse_url(&v, http_only).map_err(|source| Error::InvalidUrl { key, source }))
                .transpose()
        };
        macro_rules! over {
            ($($field:ident <- $value:expr),* $(,)?) => {$(
                if let Some(v) = $value { self.$field = Some(v); }
            )*};
        }
        let text = |k: &str| var(k).map(|(_, v)| v);
        over!(
            client_id <- text("CLIENT_ID"),
            auth_base_uri <- url("AUTH_BASE_URI", true)?,
            audience <- url("AUDIENCE", true)?,
            fhir_r4_endpoint <- url("FHIR_R4_ENDPOINT", true)?,
            fhir_stu3_endpoint <- url("FHIR_STU3_ENDPOINT", true)?,
            fhir_dstu2_endpoint <- url("FHIR_DSTU2_ENDPOINT", true)?,
            fhir_base_url <- url("FHIR_BASE_URL", true)?,
            private_key <- text("PRIVATE_KEY").map(|v| SecretRef::parse_path(&v)),
            key_id <- text("KEY_ID"),
            patient_list_identifier <- text("PATIENT_LIST_IDENTIFIER"),
            scope <- text("SCOPE"),
            redirect_uri <- url("REDIRECT_URI", false)?,
            token_store <- text("TOKEN_STORE").map(PathBuf::from),
            https_proxy <- text("HTTPS_PROXY"),
            ca_bundle <- text("CA_BUNDLE").map(PathBuf::from),
        );
        Ok(())
    }

    /// The FHIR endpoints, explicit ones first, then derived from `fhir_base_url`.
    pub fn endpoints(&self) -> Endpoints {
        let explicit = [
            (FhirVersion::R4, &self.fhir_r4_endpoint),
            (FhirVersion::Stu3, &self.fhir_stu3_endpoint),
            (FhirVersion::Dstu2, &self.fhir_dstu2_endpoint),
        ];
        let map = explicit
            .into_iter()
            .filter_map(|(version, url)| {
                let url =
                    url.clone().or_else(|| Some(derived_endpoint(self.fhir_base_url.as_ref()?, version)));
                Some((version, url?))
            })
            .collect();
        Endpoints(map)
    }

    /// The FHIR base authentication is discovered from (and the default `aud`): the R4 endpoint,
    /// else the first configured one.
    pub fn fhir_base(&self) -> Option<Url> {
        let mut endpoints = self.endpoints().0;
        endpoints.remove(&FhirVersion::R4).or_else(|| endpoints.into_values().next())
    }

    /// Checks the settings every stage needs; errors name the key and the fix.
    pub fn validate(&self) -> Result<()> {
        if self.endpoints().0.is_empty() {
            return Err(Error::Setting {
                key: "connection.fhir_r4_endpoint",
                problem: "no FHIR endpoint configured: set fhir_r4_endpoint (and optionally \
                          fhir_stu3_endpoint, fhir_dstu2_endpoint) or fhir_base_url",
            });
        }
        if self.client_id.as_deref().is_none_or(|c| c.trim().is_empty()) {
            return Err(Error::Setting {
                key: "connection.client_id",
                problem: "missing: the Epic client id of the registered app (or FHIRSYNC_CLIENT_ID)",
            });
        }
        if let Some(p) = &self.https_proxy {
            parse_url(p, true)
                .map_err(|source| Error::InvalidUrl { key: "connection.https_proxy".into(), source })?;
        }
        if let Some(secret) = &self.client_secret
            && SecretRef::parse(secret.expose_secret()).is_err()
        {
            return Err(Error::InlineSecret {
                key: "connection.client_secret",
                env_override: CLIENT_SECRET_ENV,
            });
        }
        Ok(())
    }

    /// The client secret: the value of `FHIRSYNC_CLIENT_SECRET` if set, else read from the
    /// `env:`/`file:` reference in `client_secret`.
    pub fn resolve_client_secret(&self) -> Result<Option<SecretString>> {
        self.resolve_client_secret_from(|k| std::env::var(k).ok())
    }

    /// [`Self::resolve_client_secret`] with environment lookups through `get`.
    pub fn resolve_client_secret_from(
        &self,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<SecretString>> {
        const KEY: &str = "connection.client_secret";
        if let Some(v) = get(CLIENT_SECRET_ENV).filter(|v| !v.is_empty()) {
            return Ok(Some(v.into()));
        }
        let Some(secret) = &self.client_secret else { return Ok(None) };
        let reference = SecretRef::parse(secret.expose_secret())
            .map_err(|_| Error::InlineSecret { key: KEY, env_override: CLIENT_SECRET_ENV })?;
        let value = reference.read_with(get, true).map_err(|source| Error::SecretUnavailable {
            key: KEY,
            origin: reference.describe(),
            source,
        })?;
        Ok(Some(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> ConnectionConfig {
        ConnectionConfig {
            client_id: Some("c".into()),
            fhir_r4_endpoint: Some(Url::parse("https://ehr.example/api/FHIR/R4").unwrap()),
            ..ConnectionConfig::default()
        }
    }

    /// A missing endpoint is reported with the key to set.
    #[test]
    fn missing_endpoint_is_explained() {
        let c = ConnectionConfig { client_id: Some("c".into()), ..ConnectionConfig::default() };
        let err = c.validate().unwrap_err();
        assert!(err.to_string().contains("fhir_r4_endpoint"), "{err}");
    }

    /// An inline client secret is rejected without echoing it; env: references pass.
    #[test]
    fn inline_secret_rejected_without_echo() {
        let mut c = conn();
        c.client_secret = Some("s3cr3t-value".to_string().into());
        let err = c.validate().unwrap_err();
        assert!(!err.to_string().contains("s3cr3t"), "{err}");
        assert!(err.to_string().contains("env:"), "{err}");
        assert!(!format!("{c:?}").contains("s3cr3t"));
        c.client_secret = Some("env:EPIC_SECRET".to_string().into());
        c.validate().unwrap();
    }

    /// FHIRSYNC_* overrides win, and a secret given by env var is a value, not a reference.
    #[test]
    fn env_overrides_apply() {
        let mut c = conn();
        let env = BTreeMap::from([
            ("FHIRSYNC_CLIENT_ID", "from-env"),
            ("FHIRSYNC_FHIR_STU3_ENDPOINT", "https://ehr.example/api/FHIR/STU3"),
            ("FHIRSYNC_CLIENT_SECRET", "plain"),
        ]);
        let get = |k: &str| env.get(k).map(|v| v.to_string());
        c.apply_env_from(get).unwrap();
        assert_eq!(c.client_id.as_deref(), Some("from-env"));
        assert_eq!(c.endpoints().versions(), vec![FhirVersion::R4, FhirVersion::Stu3]);
        c.validate().unwrap();
        assert_eq!(c.resolve_client_secret_from(get).unwrap().unwrap().expose_secret(), "plain");
        // Without the override, an env: reference is followed.
        c.client_secret = Some("env:EPIC_SECRET".to_string().into());
        let get = |k: &str| (k == "EPIC_SECRET").then(|| "referenced".to_string());
        assert_eq!(c.resolve_client_secret_from(get).unwrap().unwrap().expose_secret(), "referenced");
    }

    /// A URL override that is not a URL is refused with the variable's name; one that is not
    /// http(s) with its scheme.
    #[test]
    fn bad_url_override_names_the_variable() {
        let mut c = conn();
        let err =
            c.apply_env_from(|k| (k == "FHIRSYNC_FHIR_R4_ENDPOINT").then(|| "nope".into())).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("FHIRSYNC_FHIR_R4_ENDPOINT") && msg.contains("not a URL"), "{msg}");
        let err =
            c.apply_env_from(|k| (k == "FHIRSYNC_AUTH_BASE_URI").then(|| "ftp://h/x".into())).unwrap_err();
        assert!(err.to_string().contains("scheme `ftp`"), "{err}");
    }

    /// fhir_base_url derives the version endpoints that are not set.
    #[test]
    fn base_url_derives_endpoints() {
        let c = ConnectionConfig {
            fhir_base_url: Some(Url::parse("https://ehr.example/interconnect-fhir-oauth/").unwrap()),
            fhir_r4_endpoint: Some(Url::parse("https://other.example/R4").unwrap()),
            ..ConnectionConfig::default()
        };
        let e = c.endpoints();
        assert_eq!(e.get(FhirVersion::R4).unwrap().as_str(), "https://other.example/R4");
        assert_eq!(
            e.get(FhirVersion::Dstu2).unwrap().as_str(),
            "https://ehr.example/interconnect-fhir-oauth/api/FHIR/DSTU2"
        );
        assert_eq!(c.fhir_base().unwrap().as_str(), "https://other.example/R4");
        let root = ConnectionConfig { fhir_base_url: Some(Url::parse("https://h").unwrap()), ..c };
        assert_eq!(root.endpoints().get(FhirVersion::Stu3).unwrap().as_str(), "https://h/api/FHIR/STU3");
    }

    /// A proxy that is not a URL is refused without quoting it (it may carry credentials).
    #[test]
    fn bad_proxy_is_not_echoed() {
        let mut c = conn();
        c.https_proxy = Some("user:pa55@[::1".into());
        let msg = c.validate().unwrap_err().to_string();
        assert!(msg.contains("connection.https_proxy") && !msg.contains("pa55"), "{msg}");
    }
}
