//! Delta Lake destination settings.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Default number of patient-id hash buckets (the `bucket` partition column) of a new table.
pub const DEFAULT_BUCKETS: u32 = 16;

/// Delta Lake destination settings (`kind = "delta"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeltaConfig {
    /// Where the tables go: a folder (`landing/`, `file:///data/landing`) or an object-store URL
    /// (`s3://bucket/prefix`, `gs://bucket/prefix`, `az://container/prefix`) whose credentials
    /// come from the environment as `object_store` reads them (`AWS_ACCESS_KEY_ID`,
    /// `AWS_REGION`, `AWS_ENDPOINT`, `GOOGLE_SERVICE_ACCOUNT`, `AZURE_STORAGE_ACCOUNT_NAME`, ...).
    /// Each resource type is the table `<uri>/<Type>`, each view `<uri>/view_<name>`.
    pub uri: String,
    /// Local folder whose `_fhirsync/` holds the writer lock, the durable staging of an
    /// unfinished run, the run history and the cohort exits. Default: `uri` itself when it is a
    /// folder; required for an object-store URL.
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// Patient-id hash buckets of a new table (partition column `bucket`, default 16); an
    /// existing table keeps the count it was created with.
    #[serde(default = "default_buckets")]
    pub buckets: u32,
}

fn default_buckets() -> u32 {
    DEFAULT_BUCKETS
}

impl DeltaConfig {
    /// Settings for the folder or URL `uri` with defaults.
    pub fn new(uri: impl Into<String>) -> Self {
        DeltaConfig { uri: uri.into(), state_dir: None, buckets: DEFAULT_BUCKETS }
    }

    /// Whether `uri` names an object store rather than a local folder.
    pub fn is_remote(&self) -> bool {
        self.uri.split_once("://").is_some_and(|(scheme, _)| scheme != "file")
    }

    /// The local folder whose `_fhirsync/` holds the lock, staging and run history; `None` for
    /// an object-store URL without `state_dir`.
    pub fn state_root(&self) -> Option<PathBuf> {
        if let Some(dir) = &self.state_dir {
            return Some(dir.clone());
        }
        if self.is_remote() {
            return None;
        }
        Some(PathBuf::from(self.uri.strip_prefix("file://").unwrap_or(&self.uri)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A folder is its own state root; an object-store URL has none unless `state_dir` is set.
    #[test]
    fn state_root_follows_the_uri() {
        assert_eq!(DeltaConfig::new("landing/").state_root(), Some(PathBuf::from("landing/")));
        assert_eq!(DeltaConfig::new("file:///data/l").state_root(), Some(PathBuf::from("/data/l")));
        let mut s3 = DeltaConfig::new("s3://bucket/prefix");
        assert!(s3.is_remote());
        assert_eq!(s3.state_root(), None);
        s3.state_dir = Some("state".into());
        assert_eq!(s3.state_root(), Some(PathBuf::from("state")));
        let c: DeltaConfig = toml::from_str("uri = \"landing\"").unwrap();
        assert_eq!(c.buckets, DEFAULT_BUCKETS);
    }
}
