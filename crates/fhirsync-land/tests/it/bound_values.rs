//! Values shaped like SQL (quotes, `;`, comments) land as data on the SQL destinations: every
//! value reaches the database as a bound parameter, never as SQL text.

use fhirsync_land::{LandOptions, Method, OnCohortExit};

use crate::postgres::PostgresHarness;
use crate::sqlite::SqliteHarness;
use crate::support::*;

/// Patient ids (cohort, scopes, exits, deletes), resource ids and a failure's text shaped like
/// SQL injection land verbatim, and the destination keeps working.
fn quoted_values_are_data(h: &dyn Harness) {
    let (quoted, hostile) = ("o'brien", "x'); DROP TABLE _fhirsync_runs; --");
    let (p1, p2) = (patient(quoted, "O'Brien"), patient(hostile, "Drop"));
    let (o1, o2) = (obs("o'1", quoted, "1"), obs("o2", hostile, "2"));
    let mut dest = h.open();
    let r1 = land(
        &mut *dest,
        Method::FullLoad,
        &LandOptions::default(),
        &[p1.clone(), p2.clone(), o1.clone(), o2.clone()],
        run_scope(&[quoted, hostile], scopes_of(&[quoted, hostile])),
    )
    .unwrap()
    .run_id;
    // `hostile` left the cohort, and its rows go.
    let delete = LandOptions { on_cohort_exit: OnCohortExit::Delete, ..LandOptions::default() };
    let m2 = land(
        &mut *dest,
        Method::ReloadAndCompare,
        &delete,
        &[p1.clone(), o1.clone()],
        run_scope(&[quoted], scopes_of(&[quoted])),
    )
    .unwrap();
    let r2 = m2.run_id.clone();
    assert_eq!((m2.cohort_exits, m2.deleted, m2.unchanged), (1, 2, 2));
    assert_eq!(h.exits(), vec![hostile.to_string()]);
    assert_eq!(
        h.changes(&r2),
        sorted(vec![
            change("D", "Patient", hostile, Some(&p2), None),
            change("D", "Observation", "o2", Some(&o2), None)
        ])
    );
    assert_eq!(h.rows(), sorted(vec![landed(&p1, &r1, &r2), landed(&o1, &r1, &r2)]));
    dest.begin(Method::Reload, &LandOptions::default()).unwrap();
    dest.fail("it's `broken'); DROP TABLE _fhirsync_runs; --").unwrap();
    let statuses: Vec<String> = h.runs().into_iter().map(|r| r.status).collect();
    assert_eq!(statuses, ["succeeded", "succeeded", "failed"]);
}

/// SQLite: values shaped like SQL are data.
#[test]
fn sqlite_quoted_values_are_data() {
    quoted_values_are_data(&SqliteHarness::new());
}

/// PostgreSQL (with `FHIRSYNC_TEST_POSTGRES_URL`): values shaped like SQL are data.
#[test]
fn postgres_quoted_values_are_data() {
    if let Some(h) = PostgresHarness::from_env() {
        quoted_values_are_data(&h);
    }
}
