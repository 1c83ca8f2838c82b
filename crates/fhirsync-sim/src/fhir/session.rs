//! Server-side paging sessions.
//!
//! Epic's `next` links drop the original parameters and carry only `sessionID=<n>-<32 hex>`; the
//! server remembers the query. The simulator stores the query (not the results: they are
//! regenerated deterministically) and the offset of the next page. Expired or unknown sessions
//! answer 400 with OperationOutcome 4113.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fhirsync_core::FhirVersion;

/// Sessions kept at most; the oldest are dropped beyond this.
const MAX_SESSIONS: usize = 100_000;

/// A remembered search.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    /// FHIR version of the base.
    pub version: FhirVersion,
    /// Resource type searched.
    pub ty: String,
    /// Original parameters.
    pub params: Vec<(String, String)>,
    /// Client that searched.
    pub client_id: String,
    /// Offset of the page this session id leads to.
    pub offset: usize,
    /// Page size.
    pub count: usize,
    created: Instant,
}

#[derive(Debug, Default)]
struct Store {
    map: HashMap<String, Session>,
    /// Ids in creation order, for evicting the oldest.
    order: VecDeque<String>,
}

/// The session store.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    counter: AtomicU64,
    store: Mutex<Store>,
}

impl Sessions {
    /// Stores a session; returns its id.
    pub(crate) fn open(
        &self,
        version: FhirVersion,
        ty: &str,
        params: Vec<(String, String)>,
        client_id: &str,
        offset: usize,
        count: usize,
    ) -> String {
        let n = self.counter.fetch_add(1, Ordering::SeqCst) + 1;
        let id = format!("{n}-{}", uuid::Uuid::new_v4().simple().to_string().to_ascii_uppercase());
        let session = Session {
            version,
            ty: ty.to_string(),
            params,
            client_id: client_id.to_string(),
            offset,
            count,
            created: Instant::now(),
        };
        let mut store = self.store.lock().unwrap();
        while store.order.len() >= MAX_SESSIONS {
            if let Some(oldest) = store.order.pop_front() {
                store.map.remove(&oldest);
            }
        }
        store.order.push_back(id.clone());
        store.map.insert(id.clone(), session);
        id
    }

    /// The live session `id` (`None` when unknown or older than `ttl`).
    pub(crate) fn get(&self, id: &str, ttl: Duration) -> Option<Session> {
        let store = self.store.lock().unwrap();
        store.map.get(id).filter(|s| s.created.elapsed() < ttl).cloned()
    }

    /// Fault injection: every session opened so far is expired.
    pub(crate) fn expire_all(&self) {
        *self.store.lock().unwrap() = Store::default();
    }
}
