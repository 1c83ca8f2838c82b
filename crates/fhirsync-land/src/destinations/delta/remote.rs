//! Object-store tables (`s3://`, `gs://`, `az://`): delta-rs finds the log store of a table by
//! its URL scheme in a process-wide registry that knows only `file://` and `memory://` unless
//! its cloud crates are compiled in. Those crates bring their own SDKs (DynamoDB locking and
//! more); fhirsync registers delta-rs's default log store for the cloud schemes instead, over
//! the `object_store` clients [`super::store`] builds. The default log store commits a version
//! with a put-if-absent (`PutMode::Create`), which S3 (and S3-compatible stores such as MinIO
//! and R2) does with `If-None-Match` (object_store's default `aws_conditional_put = "etag"`),
//! and GCS and Azure natively: two writers can never both commit the same version.

use std::sync::{Arc, Once};

use deltalake::DeltaResult;
use deltalake::logstore::{
    LogStore, LogStoreFactory, ObjectStoreRef, StorageConfig, default_logstore, logstore_factories,
};
use url::Url;

/// The URL schemes [`super::store::Tables::connect`] builds a client for.
pub(crate) const SCHEMES: &[&str] = &["s3", "s3a", "gs", "az", "abfs", "abfss", "azure", "adl"];

/// delta-rs's default (put-if-absent) log store, for any scheme.
#[derive(Debug)]
struct PutIfAbsentLogStore;

impl LogStoreFactory for PutIfAbsentLogStore {
    fn with_options(
        &self,
        prefixed_store: ObjectStoreRef,
        root_store: ObjectStoreRef,
        location: &Url,
        options: &StorageConfig,
    ) -> DeltaResult<Arc<dyn LogStore>> {
        Ok(default_logstore(prefixed_store, root_store, location, options))
    }
}

/// Registers the put-if-absent log store for [`SCHEMES`] (once per process; a factory some
/// other code registered first for a scheme is kept).
pub(crate) fn register_log_stores() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let registry = logstore_factories();
        for scheme in SCHEMES {
            let url = Url::parse(&format!("{scheme}://")).expect("a scheme alone is a valid URL");
            registry.entry(url).or_insert_with(|| Arc::new(PutIfAbsentLogStore));
        }
    });
}
