//! Recording answers through the client: one file per answer, errors included, secrets out.

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use fhirsync_fhir::{Error, Recorder};

use fhirsync_fhir::FhirClient;

use crate::stub::{fast_config, serve};

/// The bearer token of the recording client.
const TOKEN: &str = "recorded-run-token-5f0c9d2e";

/// Every answer read, a 404 included, lands in its own file in request order; the bearer
/// token the stub echoes into a body and a header never reaches the folder.
#[tokio::test]
async fn answers_are_recorded_without_the_token() {
    let app = Router::new()
        .route(
            "/api/FHIR/R4/Patient/e1",
            get(|headers: HeaderMap| async move {
                let auth = headers[header::AUTHORIZATION].to_str().unwrap().to_string();
                let body = format!(r#"{{"resourceType":"Patient","id":"e1","text":{{"div":"{auth}"}}}}"#);
                (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "application/fhir+json".to_string()), (header::SET_COOKIE, auth)],
                    body,
                )
                    .into_response()
            }),
        )
        .route(
            "/api/FHIR/R4/Patient/missing",
            get(|| async {
                let body = r#"{"resourceType":"OperationOutcome","issue":[{"severity":"fatal","code":"not-found"}]}"#;
                (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, "application/fhir+json")], body).into_response()
            }),
        );
    let base = serve(app).await;
    let dir = tempfile::tempdir().unwrap();
    let c = FhirClient::new(fast_config(1), Arc::new(fhirsync_fhir::StaticToken(TOKEN.to_string().into())))
        .unwrap();
    let recorder = Arc::new(Recorder::create(dir.path().join("rec")).unwrap());
    c.record_to(recorder.clone()).unwrap();
    assert!(c.record_to(recorder.clone()).is_err(), "a second recorder is handed back");

    let ok = c.execute(&fhirsync_fhir::Request::get(fhirsync_fhir::join(&base, "Patient/e1").unwrap())).await;
    assert!(ok.unwrap().body.starts_with(b"{\"resourceType\":\"Patient\""));
    let missing =
        c.execute(&fhirsync_fhir::Request::get(fhirsync_fhir::join(&base, "Patient/missing").unwrap())).await;
    assert!(matches!(missing, Err(Error::Status { status: 404, .. })));

    let mut names: Vec<String> = std::fs::read_dir(recorder.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["000001-GET-Patient.json", "000002-GET-Patient.json"]);
    assert_eq!(recorder.written(), 2);
    let first = std::fs::read_to_string(recorder.dir().join(&names[0])).unwrap();
    assert!(!first.contains(TOKEN), "{first}");
    assert!(first.contains("Bearer REDACTED"), "{first}");
    assert!(!first.to_ascii_lowercase().contains("set-cookie"), "{first}");
    let v: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(v["method"], "GET");
    assert_eq!(v["status"], 200);
    assert!(v["url"].as_str().unwrap().ends_with("/api/FHIR/R4/Patient/e1"));
    assert_eq!(v["headers"]["content-type"], "application/fhir+json");
    assert_eq!(v["body"]["resourceType"], "Patient");
    let second: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(recorder.dir().join(&names[1])).unwrap()).unwrap();
    assert_eq!(second["status"], 404);
    assert_eq!(second["body"]["resourceType"], "OperationOutcome");
}
