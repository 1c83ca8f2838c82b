//! The `fhirsync.toml` file: one table per stage of the data flow.
//!
//! ```toml
//! [connection]   # how to reach and authenticate to Epic (fhirsync_core::ConnectionConfig)
//! [extract]      # what to read and how politely (fhirsync_extract::ExtractConfig)
//! [destination]  # where to land: kind = "sqlite" | "postgres" | "parquet" | "ndjson"
//! [land]         # knobs of the update methods (fhirsync_land::LandOptions)
//! [sync]         # default update method, state folder
//! [views]        # SQL-on-FHIR ViewDefinitions to materialise
//! ```
//!
//! The file is parsed and typed once ([`Config::from_toml`]): endpoints become URLs, and an
//! unknown key or a bad value is refused with its key path and line. Environment variables
//! `FHIRSYNC_*` override the `[connection]` settings (see the README). Each stage borrows the
//! section it needs: authentication reads `[connection]` through [`Config::auth_settings`].

use std::path::{Path, PathBuf};

use fhirsync_auth::AuthSettings;
use fhirsync_core::ConnectionConfig;
use fhirsync_extract::ExtractConfig;
use fhirsync_land::{DestinationConfig, LandOptions, Method};
use fhirsync_views::View;
use serde::Deserialize;

use crate::{Error, Result};

/// Default folder for resumable run state (Bulk status URLs) and the run lock.
pub const DEFAULT_STATE_DIR: &str = ".fhirsync";

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// How to reach and authenticate to Epic.
    #[serde(default)]
    pub connection: ConnectionConfig,
    /// What to extract and how politely.
    #[serde(default)]
    pub extract: ExtractConfig,
    /// Where to land (default: SQLite `fhirsync.db`).
    #[serde(default)]
    pub destination: DestinationConfig,
    /// Knobs of the update methods.
    #[serde(default)]
    pub land: LandOptions,
    /// Defaults of `fhirsync sync`.
    #[serde(default)]
    pub sync: SyncConfig,
    /// Flat tables.
    #[serde(default)]
    pub views: ViewsConfig,
}

/// `[sync]`: defaults of `fhirsync sync`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncConfig {
    /// Update method when `--method` is not given: `full-load`, `reload` or
    /// `reload-and-compare` (default).
    #[serde(default = "default_method")]
    pub method: Method,
    /// Folder for resumable state (Bulk status URL) and the lock that keeps two syncs apart.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
}

fn default_method() -> Method {
    Method::ReloadAndCompare
}

fn default_state_dir() -> PathBuf {
    PathBuf::from(DEFAULT_STATE_DIR)
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig { method: default_method(), state_dir: default_state_dir() }
    }
}

/// `[views]`: which SQL-on-FHIR ViewDefinitions are materialised after landing.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ViewsConfig {
    /// Materialise the shipped views for the common Epic resources (default true).
    #[serde(default = "default_true")]
    pub defaults: bool,
    /// Folder of extra ViewDefinition `*.json` files.
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Identifier system of the site's MRN (e.g. `urn:oid:1.2.840.114350.1.13.0.1.7.5.737384.14`):
    /// `view_patient.mrn` takes the identifier of this system first, else the one Epic types
    /// `EPI`, else one typed `MRN`. Epic's OIDs differ per customer and environment.
    #[serde(default)]
    pub mrn_identifier: Option<String>,
}

fn default_true() -> bool {
    true
}

impl Default for ViewsConfig {
    fn default() -> Self {
        ViewsConfig { defaults: true, dir: None, mrn_identifier: None }
    }
}

impl ViewsConfig {
    /// Settings of the shipped views.
    fn default_view_settings(&self) -> fhirsync_views::DefaultViewSettings {
        fhirsync_views::DefaultViewSettings { mrn_identifier: self.mrn_identifier.clone() }
    }

    /// Checks the settings (a bad `mrn_identifier` is named with the fix).
    pub fn validate(&self) -> Result<()> {
        self.default_view_settings().validate().map_err(Error::Views)
    }

    /// The views to materialise.
    pub fn load(&self) -> Result<Vec<View>> {
        let mut views = if self.defaults {
            fhirsync_views::default_views_with(&self.default_view_settings()).map_err(Error::Views)?
        } else {
            Vec::new()
        };
        if let Some(dir) = &self.dir {
            let extra = fhirsync_views::load_dir(dir)
                .map_err(|e| Error::config_from(format!("views folder {}", dir.display()), e, None))?;
            views.extend(extra);
        }
        Ok(views)
    }
}

impl Config {
    /// Parses TOML text (no environment overrides). A syntax error, an unknown key or a bad value
    /// (a URL that does not parse) is named with its key path and line.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Config> {
        let fail = |key: String, e: toml::de::Error| {
            Error::config(format!(
                "{}: {key}{}\nfix the key or value named above (see the configuration reference in the README)",
                origin.display(),
                e.to_string().trim_end()
            ))
        };
        let document = toml::Deserializer::parse(text).map_err(|e| fail(String::new(), e))?;
        serde_path_to_error::deserialize(document).map_err(|e| {
            let path = e.path().to_string();
            let key = if path == "." { String::new() } else { format!("`{path}`: ") };
            fail(key, e.into_inner())
        })
    }

    /// Reads the file, applies `FHIRSYNC_*` environment overrides and validates.
    pub fn load(path: &Path) -> Result<Config> {
        let config = Config::read(path)?;
        config.validate()?;
        Ok(config)
    }

    /// Reads the file and applies `FHIRSYNC_*` environment overrides without validating the
    /// connection and extraction settings, for commands that only look at the destination.
    pub fn read(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::config_from(
                format!("cannot read configuration file {}", path.display()),
                e,
                Some("create it (see the README) or pass --config FILE"),
            )
        })?;
        let mut config = Config::from_toml(&text, path)?;
        config.connection.apply_env().map_err(Error::connection)?;
        Ok(config)
    }

    /// Checks the settings together; errors name the setting and the fix.
    pub fn validate(&self) -> Result<()> {
        self.connection.validate().map_err(Error::connection)?;
        self.extract.validate(&self.connection).map_err(Error::extract_settings)?;
        self.views.validate()?;
        if let fhirsync_land::DestinationConfig::Postgres(pg) = &self.destination {
            pg.validate().map_err(|e| Error::DestinationSettings(Box::new(e)))?;
        }
        Ok(())
    }

    /// A token provider authenticating as `[connection]` says (backend services or the stored
    /// standalone login; discovery of the token endpoint happens here).
    pub async fn token_provider(&self) -> Result<std::sync::Arc<dyn fhirsync_auth::TokenProvider>> {
        let http = fhirsync_auth::http_client(&self.connection)?;
        Ok(self.auth_settings()?.provider(&http).await?)
    }

    /// The authentication of `[connection]`, borrowing it.
    pub fn auth_settings(&self) -> Result<AuthSettings<'_>> {
        Ok(AuthSettings::new(&self.connection)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An unknown key anywhere in the file is rejected with its name.
    #[test]
    fn unknown_key_is_named() {
        let err =
            Config::from_toml("[destination]\nkind = \"sqlite\"\npaht = \"x.db\"\n", Path::new("f.toml"))
                .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("paht"), "{msg}");
        let err = Config::from_toml("[extrakt]\n", Path::new("f.toml")).unwrap_err();
        assert!(err.to_string().contains("extrakt"));
    }

    /// A bad URL in `[connection]` is refused while the file is read, with its key path and
    /// line; so is a URL whose scheme is not http(s).
    #[test]
    fn bad_url_names_key_path_and_line() {
        let text = "[connection]\nclient_id = \"c\"\nfhir_r4_endpoint = \"nope\"\n";
        let msg = Config::from_toml(text, Path::new("f.toml")).unwrap_err().to_string();
        assert!(msg.contains("f.toml: `connection.fhir_r4_endpoint`"), "{msg}");
        assert!(msg.contains("line 3") && msg.contains("not a URL"), "{msg}");
        let text = "[connection]\nauth_base_uri = \"ftp://h/oauth2\"\n";
        let msg = Config::from_toml(text, Path::new("f.toml")).unwrap_err().to_string();
        assert!(msg.contains("`connection.auth_base_uri`") && msg.contains("scheme `ftp`"), "{msg}");
        let ok = Config::from_toml("[connection]\nfhir_base_url = \"https://h/x\"\n", Path::new("f.toml"));
        assert_eq!(ok.unwrap().connection.fhir_base().unwrap().as_str(), "https://h/x/api/FHIR/R4");
    }

    /// An empty file gives the documented defaults: SQLite, reload-and-compare, default views.
    #[test]
    fn defaults() {
        let c = Config::from_toml("", Path::new("f.toml")).unwrap();
        assert_eq!(c.destination.kind(), "sqlite");
        assert_eq!(c.sync.method, Method::ReloadAndCompare);
        assert!(c.views.defaults);
        assert_eq!(c.views.mrn_identifier, None);
    }

    /// `[views] mrn_identifier` reaches the patient view (configured system first); a value with
    /// `|value` is refused at validation, naming the setting.
    #[test]
    fn views_mrn_identifier() {
        let c = Config::from_toml(
            "[views]\nmrn_identifier = \"urn:oid:1.2.840.114350.1.13.0.1.7.5.737384.0\"\n",
            Path::new("f.toml"),
        )
        .unwrap();
        c.views.validate().unwrap();
        let patient = c.views.load().unwrap().into_iter().find(|v| v.name() == "patient").unwrap();
        let mrn = patient.columns().iter().position(|col| col.name == "mrn").unwrap();
        let row = patient
            .evaluate(&serde_json::json!({"resourceType": "Patient", "id": "p", "identifier": [
                {"type": {"text": "EPI"}, "system": "urn:oid:1.2.840.114350.1.13.0.1.7.5.737384.14", "value": "203675"},
                {"type": {"text": "EPIC"}, "system": "urn:oid:1.2.840.114350.1.13.0.1.7.5.737384.0", "value": "E1"}]}))
            .unwrap();
        assert_eq!(row[0][mrn], "E1");
        let bad = Config::from_toml(
            "[views]\nmrn_identifier = \"urn:oid:1.2.840.114350.1.13.0.1.7.5.737384.14|203675\"\n",
            Path::new("f.toml"),
        )
        .unwrap();
        let msg = bad.views.validate().unwrap_err().to_string();
        assert!(msg.contains("views.mrn_identifier") && msg.contains("without `|value`"), "{msg}");
        assert!(Config::from_toml("[views]\nmrn = \"x\"\n", Path::new("f.toml")).is_err());
    }
}
