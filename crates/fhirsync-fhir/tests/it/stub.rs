//! Test helpers: in-process axum stubs, raw TCP stubs, token providers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use fhirsync_fhir::{BoxFuture, TokenError, TokenProvider};
use fhirsync_fhir::{ClientConfig, ConcurrencyConfig, FhirClient, RetryPolicy};
use secrecy::{ExposeSecret, SecretString};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use url::Url;

/// Serves `app` on an ephemeral loopback port; returns its base URL.
pub async fn serve(app: Router) -> Url {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Url::parse(&format!("http://{addr}/api/FHIR/R4")).unwrap()
}

/// A raw TCP server answering the n-th connection with `answers[n]` (then the last one forever).
/// An empty answer closes the connection without responding.
pub async fn raw_server(answers: Vec<&'static str>) -> (Url, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else { return };
            let n = c.fetch_add(1, Ordering::SeqCst);
            let answer = answers[n.min(answers.len() - 1)];
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                if !answer.is_empty() {
                    let _ = sock.write_all(answer.as_bytes()).await;
                }
                let _ = sock.shutdown().await;
            });
        }
    });
    (Url::parse(&format!("http://{addr}/api/FHIR/R4")).unwrap(), count)
}

/// Fast retry settings for tests; the outage breaker is off, so each request gives up after its
/// own retries (see `outage.rs` for the breaker's tests).
pub fn fast_config(max: usize) -> ClientConfig {
    ClientConfig {
        concurrency: ConcurrencyConfig { max, min: 1, adaptive: false, ..ConcurrencyConfig::default() },
        rate_limit: None,
        retry: RetryPolicy {
            max_retries: 3,
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(20),
            retry_after_floor: Duration::from_millis(1),
            retry_after_ceiling: Duration::from_secs(5),
        },
        outage: None,
        ..ClientConfig::default()
    }
}

/// A client with a fixed token.
pub fn client(config: ClientConfig) -> FhirClient {
    FhirClient::new(config, token()).unwrap()
}

/// A provider that always hands out the token `t`.
pub fn token() -> Arc<dyn TokenProvider> {
    Arc::new(fhirsync_fhir::StaticToken("t".to_string().into()))
}

/// Hands out `t1`, then `t2` after an invalidation; counts invalidations.
#[derive(Debug, Default)]
pub struct RotatingToken {
    /// Invalidations seen.
    pub invalidated: AtomicUsize,
}

impl TokenProvider for RotatingToken {
    fn access_token(&self) -> BoxFuture<'_, Result<SecretString, TokenError>> {
        let n = self.invalidated.load(Ordering::SeqCst);
        Box::pin(async move { Ok(SecretString::from(format!("t{}", n + 1))) })
    }
    fn invalidate(&self, token: &SecretString) {
        assert!(token.expose_secret().starts_with('t'));
        self.invalidated.fetch_add(1, Ordering::SeqCst);
    }
}

/// A searchset page JSON with `ids` as Observations and an optional next link.
pub fn page(ids: &[&str], next: Option<&str>) -> String {
    let entries: Vec<String> = ids
        .iter()
        .map(|id| format!(r#"{{"fullUrl":"x","resource":{{"resourceType":"Observation","id":"{id}"}},"search":{{"mode":"match"}}}}"#))
        .collect();
    let link = match next {
        Some(n) => format!(r#"[{{"relation":"self","url":"s"}},{{"relation":"next","url":"{n}"}}]"#),
        None => r#"[{"relation":"self","url":"s"}]"#.to_string(),
    };
    // `total` deliberately wrong (Epic: entries on the page), to prove it is ignored.
    format!(
        r#"{{"resourceType":"Bundle","type":"searchset","total":1,"link":{link},"entry":[{}]}}"#,
        entries.join(",")
    )
}

/// An OperationOutcome with one Epic-coded issue.
pub fn outcome(code: &str, severity: &str, text: &str) -> String {
    format!(
        r#"{{"resourceType":"OperationOutcome","issue":[{{"severity":"{severity}","code":"processing","details":{{"coding":[{{"system":"urn:oid:1.2.840.114350.1.13.0.1.7.2.657369","code":"{code}","display":"{text}"}}],"text":"{text}"}}}}]}}"#
    )
}
