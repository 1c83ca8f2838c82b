//! Object-store tables (`s3://`, `gs://`, `az://`): delta-rs finds the log store of a table by
//! its URL scheme in a process-wide registry that knows only `file://` and `memory://` unless
//! its cloud crates are compiled in. Those crates bring their own SDKs (DynamoDB locking and
//! more); fhirsync registers delta-rs's default log store for the cloud schemes instead, over
//! the `object_store` clients [`super::store`] builds. The default log store commits a version
//! with a put-if-absent (`PutMode::Create`), which S3 (and S3-compatible stores such as MinIO
//! and R2) does with `If-None-Match` (object_store's default `aws_conditional_put = "etag"`),
//! and GCS and Azure natively: two writers can never both commit the same version.

use std::sync::Arc;

use deltalake::DeltaResult;
use deltalake::logstore::{
    LogStore, LogStoreFactory, ObjectStoreRef, StorageConfig, default_logstore, logstore_factories,
};
use url::Url;

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

/// Registers the put-if-absent log store for the scheme of `root` (a factory registered
/// before for that scheme, by this or other code, is kept). The key is the bare `scheme://`,
/// as delta-rs looks it up.
pub(crate) fn register_log_store(root: &Url) {
    if let Ok(scheme) = Url::parse(&format!("{}://", root.scheme())) {
        logstore_factories().entry(scheme).or_insert_with(|| Arc::new(PutIfAbsentLogStore));
    }
}
