//! Network failures say which (DNS, refused, timeout after N s, reset, cut body) with the fix,
//! every retry is counted, and the request timeout holds.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use fhirsync_fhir::{Error, RetryPolicy, RetryReason};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use url::Url;

use crate::stub::{client, fast_config, raw_server};

/// A loopback port nothing listens on: bind a listener, note its port, drop it.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A server that accepts connections, reads the request and never answers; counts connections.
async fn silent_server() -> (Url, Arc<AtomicUsize>) {
    silent_after(None).await
}

/// [`silent_server`] that answers the first connection with `first` (when given).
async fn silent_after(first: Option<&'static str>) -> (Url, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else { return };
            let n = c.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                if let (0, Some(answer)) = (n, first) {
                    let _ = sock.write_all(answer.as_bytes()).await;
                    let _ = sock.shutdown().await;
                    return;
                }
                tokio::time::sleep(Duration::from_secs(600)).await;
            });
        }
    });
    (Url::parse(&format!("http://{addr}/api/FHIR/R4")).unwrap(), count)
}

/// A refused connection says "connection refused", suggests checking the port, is retried
/// (every retry counted) and names the URL without its query values.
#[tokio::test]
async fn refused_connection_says_refused_and_port() {
    let base = Url::parse(&format!("http://127.0.0.1:{}/api/FHIR/R4", closed_port())).unwrap();
    let c = client(fast_config(1));
    let err = c.search(&base, "Patient", &[("identifier".into(), "secret-mrn".into())]).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, Error::RetriesExhausted { attempts: 4, reason: RetryReason::Connection, .. }),
        "{msg}"
    );
    assert!(msg.contains("connection refused") && msg.contains("check the port"), "{msg}");
    assert!(!msg.contains("secret-mrn") && msg.contains("/api/FHIR/R4/Patient"), "{msg}");
    assert!(!msg.contains("Auth Base"), "{msg}");
    assert_eq!(c.stats().retries, 3);
    assert_eq!(c.stats().requests, 4);
}

/// An unresolvable host says "host not found" and suggests checking the host name and proxy.
#[tokio::test]
async fn unknown_host_says_host_not_found() {
    let base = Url::parse("http://fhirsync-test.invalid/api/FHIR/R4").unwrap();
    let c = client(fast_config(1));
    let err = c.search(&base, "Patient", &[]).await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("host not found") && msg.contains("host name") && msg.contains("proxy"), "{msg}");
    assert!(msg.contains("fhirsync-test.invalid"), "{msg}");
}

/// A server that accepts and never answers fails each attempt after the 1 s request timeout:
/// 3 attempts take about 3 s plus backoff, not more; the message says "timeout after 1 s".
#[tokio::test]
async fn silent_server_times_out_per_attempt() {
    let (base, count) = silent_server().await;
    let mut config = fast_config(1);
    config.request_timeout = Duration::from_secs(1);
    config.retry = RetryPolicy { max_retries: 2, ..config.retry };
    let c = client(config);
    let started = Instant::now();
    let err = c.search(&base, "Patient", &[]).await.unwrap_err();
    let took = started.elapsed();
    let msg = err.to_string();
    assert!(
        matches!(err, Error::RetriesExhausted { attempts: 3, reason: RetryReason::Timeout, .. }),
        "{msg}"
    );
    assert!(msg.contains("timeout after 1 s") && msg.contains("request_timeout_secs"), "{msg}");
    // 3 attempts × 1 s + backoff (≤ 20 ms each) + slack for a loaded machine.
    assert!(took >= Duration::from_millis(2900), "{took:?}");
    assert!(took < Duration::from_millis(4500), "{took:?}");
    assert_eq!(count.load(Ordering::SeqCst), 3);
    assert_eq!(c.stats().retries, 2);
}

/// A connection dropped mid-body on every attempt is retried, each retry counted, and the
/// final message says the connection was closed mid-body.
#[tokio::test]
async fn dropped_mid_body_retries_are_counted() {
    let cut = "HTTP/1.1 200 OK\r\ncontent-type: application/fhir+json\r\ncontent-length: 500\r\nconnection: close\r\n\r\n{\"resourceType\":\"Bundle\",\"entry\":[{\"resource\":";
    let (base, count) = raw_server(vec![cut]).await;
    let c = client(fast_config(1));
    let err = c.search(&base, "Observation", &[]).await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("closed mid-body"), "{msg}");
    assert_eq!(count.load(Ordering::SeqCst), 4);
    assert_eq!(c.stats().retries, 3);
}

/// A connection closed before any answer says it was reset/closed, not a generic send error.
#[tokio::test]
async fn closed_before_answer_says_reset() {
    let (base, count) = raw_server(vec![""]).await;
    let c = client(fast_config(1));
    let err = c.search(&base, "Observation", &[]).await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("connection reset") || msg.contains("closed"), "{msg}");
    assert!(!msg.contains("error sending request"), "{msg}");
    assert_eq!(count.load(Ordering::SeqCst), 4);
    assert_eq!(c.stats().retries, 3);
}

/// An https URL pointing at a plain-HTTP server is a TLS failure with its reason and the
/// `ca_bundle` hint, failed at once (no retry can fix it).
#[tokio::test]
async fn tls_failure_says_tls_and_ca_bundle() {
    let (base, count) = raw_server(vec!["HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"]).await;
    let mut https = base.clone();
    https.set_scheme("https").unwrap();
    let c = client(fast_config(1));
    let err = c.search(&https, "Observation", &[]).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Transport { .. }), "{msg}");
    assert!(msg.contains("TLS failure") && msg.contains("ca_bundle"), "{msg}");
    assert_eq!(count.load(Ordering::SeqCst), 1);
    assert_eq!(c.stats().retries, 0);
}

/// Breaker settings for the tests below: quick probes, a 2 s outage limit.
fn breaker_config() -> fhirsync_fhir::ClientConfig {
    let mut config = fast_config(1);
    config.request_timeout = Duration::from_secs(1);
    config.retry = RetryPolicy { max_retries: 1, ..config.retry };
    config.outage = Some(fhirsync_fhir::OutagePolicy {
        first_probe: Duration::from_millis(50),
        max_probe_interval: Duration::from_millis(400),
        max_outage: Duration::from_secs(2),
        ..fhirsync_fhir::OutagePolicy::default()
    });
    config
}

/// With the outage breaker on, a server that never answered (e.g. a wrong URL) is not waited
/// for: the request ends after its own attempts (2 × the 1 s timeout).
#[tokio::test]
async fn silent_server_never_answered_is_not_waited_for() {
    let (base, count) = silent_server().await;
    let c = client(breaker_config());
    let started = Instant::now();
    let err = c.search(&base, "Patient", &[]).await.unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(err, Error::RetriesExhausted { attempts: 2, reason: RetryReason::Timeout, .. }),
        "{err}"
    );
    assert!(took < Duration::from_millis(3500), "{took:?}");
    assert_eq!(count.load(Ordering::SeqCst), 2);
}

/// With the outage breaker on, a server that answered once and then goes silent is an outage:
/// the request's attempts (1 s each), one metadata probe (1 s), then the breaker waits up to
/// `max_outage` (2 s) and the run stops resumable; each attempt still ends at the timeout.
#[tokio::test]
async fn silent_after_answering_waits_for_the_breaker_then_stops() {
    let ok = "HTTP/1.1 200 OK\r\ncontent-type: application/fhir+json\r\ncontent-length: 57\r\nconnection: close\r\n\r\n{\"resourceType\":\"Bundle\",\"type\":\"searchset\",\"entry\":[]}  ";
    let (base, _count) = silent_after(Some(ok)).await;
    let c = client(breaker_config());
    c.search(&base, "Patient", &[]).await.unwrap();
    let started = Instant::now();
    let err = c.search(&base, "Patient", &[]).await.unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, Error::ServerUnavailable { .. }), "{err}");
    // 2 attempts + 1 probe at 1 s each, then the 2 s outage limit (measured: 5.2 s).
    assert!(took >= Duration::from_secs(4), "{took:?}");
    assert!(took < Duration::from_millis(7500), "{took:?}");
    assert!(c.stats().retries >= 1, "{:?}", c.stats());
}
