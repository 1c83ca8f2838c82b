//! Typed view columns and exact decimals on every destination (issue 17): the same resources
//! land through two views, and each destination's test states how it reads them back.

use fhirsync_core::{Dataset, FhirVersion, RawResource};
use fhirsync_land::Method;
use fhirsync_views::View;

use crate::support::*;

/// The decimal literals landed, one per Observation `t1`..`t4`.
pub const DECIMALS: [&str; 4] = ["1.50", "0.10", "1e2", "123456789012345678.9"];

/// Observation view: a decimal, a dateTime and an instant (each with its `_text` companion).
pub fn obs_typed_view() -> View {
    View::from_json(&serde_json::json!({
        "name": "obs_typed", "resource": "Observation",
        "select": [{"column": [
            {"name": "value", "path": "valueQuantity.value", "type": "decimal"},
            {"name": "effective", "path": "effective.ofType(dateTime)", "type": "dateTime"},
            {"name": "issued", "path": "issued", "type": "instant"}
        ]}]
    }))
    .unwrap()
}

/// Patient view: a date, a boolean and an integer.
pub fn patient_typed_view() -> View {
    View::from_json(&serde_json::json!({
        "name": "patient_typed", "resource": "Patient",
        "select": [{"column": [
            {"name": "birth_date", "path": "birthDate", "type": "date"},
            {"name": "deceased", "path": "deceased.ofType(boolean)", "type": "boolean"},
            {"name": "births", "path": "multipleBirth.ofType(integer)", "type": "integer"}
        ]}]
    }))
    .unwrap()
}

/// Columns of [`obs_typed_view`] read back, in order.
pub const OBS_COLUMNS: [&str; 6] = ["_id", "value", "effective", "effective_text", "issued", "issued_text"];
/// Columns of [`patient_typed_view`] read back, in order.
pub const PATIENT_COLUMNS: [&str; 5] = ["_id", "birth_date", "birth_date_text", "deceased", "births"];

/// `(id, decimal literal, effectiveDateTime, issued)` of the Observations.
const OBSERVATIONS: [(&str, &str, &str, Option<&str>); 4] = [
    ("t1", DECIMALS[0], "2019-04-01T10:30:00+02:00", Some("2019-04-01T08:30:00.123Z")),
    ("t2", DECIMALS[1], "2019-04", None),
    ("t3", DECIMALS[2], "2019-04-01", Some("2019-04-01T12:00:00.123456Z")),
    ("t4", DECIMALS[3], "2020-02-29T23:59:59.5-05:00", None),
];

fn typed_obs(id: &str, value: &str, effective: &str, issued: Option<&str>) -> RawResource {
    let issued = issued.map(|i| format!(r#","issued":"{i}""#)).unwrap_or_default();
    let json = format!(
        r#"{{"resourceType":"Observation","id":"{id}","status":"final","subject":{{"reference":"Patient/p1"}},"effectiveDateTime":"{effective}"{issued},"valueQuantity":{{"value":{value},"unit":"mg"}}}}"#
    );
    RawResource::from_json(json, Some("p1".into()), lab(), FhirVersion::R4, SOURCE).unwrap()
}

fn typed_patient(id: &str, extra: &str) -> RawResource {
    let json = format!(r#"{{"resourceType":"Patient","id":"{id}"{extra}}}"#);
    RawResource::from_json(json, Some(id.into()), Dataset::new("Patient"), FhirVersion::R4, SOURCE).unwrap()
}

/// How a destination reads each typed value back as text.
pub struct Forms {
    /// The four [`DECIMALS`], in order.
    pub decimals: [&'static str; 4],
    /// Instants in UTC: `2019-04-01T08:30:00Z` (t1 effective), `2020-03-01T04:59:59.5Z` (t4
    /// effective), `2019-04-01T08:30:00.123Z` (t1 issued), `2019-04-01T12:00:00.123456Z` (t3
    /// issued).
    pub instants: [&'static str; 4],
    /// The date `1970-06-15`.
    pub date: &'static str,
    /// Booleans false and true.
    pub booleans: [&'static str; 2],
}

/// Lands the typed resources with both views, then checks every cell against `forms`: decimals
/// exact, complete dates/instants typed (instants in UTC), partial ones NULL with their text in
/// the companion, booleans and integers typed.
pub fn typed_columns(h: &dyn Harness, forms: &Forms) {
    let mut resources: Vec<RawResource> =
        OBSERVATIONS.iter().map(|(id, v, e, i)| typed_obs(id, v, e, *i)).collect();
    resources.push(typed_patient(
        "p1",
        r#","birthDate":"1970-06-15","deceasedBoolean":false,"multipleBirthInteger":2"#,
    ));
    resources.push(typed_patient("p2", r#","birthDate":"1970","deceasedBoolean":true"#));
    let views = [obs_typed_view(), patient_typed_view()];
    let mut dest = h.open();
    let scope = run_scope(&["p1", "p2"], scopes_of(&["p1", "p2"]));
    let m = land_with_views(&mut *dest, Method::FullLoad, &Default::default(), &resources, scope, &views)
        .unwrap();
    assert_eq!(m.view_rows, 6);

    let s = |v: &str| Some(v.to_string());
    let [d1, d2, d3, d4] = forms.decimals;
    let [e1, e4, i1, i3] = forms.instants;
    let obs_want = vec![
        vec![s("t1"), s(d1), s(e1), s("2019-04-01T10:30:00+02:00"), s(i1), s("2019-04-01T08:30:00.123Z")],
        vec![s("t2"), s(d2), None, s("2019-04"), None, None],
        vec![s("t3"), s(d3), None, s("2019-04-01"), s(i3), s("2019-04-01T12:00:00.123456Z")],
        vec![s("t4"), s(d4), s(e4), s("2020-02-29T23:59:59.5-05:00"), None, None],
    ];
    assert_eq!(h.view_rows("view_obs_typed", &OBS_COLUMNS), obs_want);
    let [no, yes] = forms.booleans;
    let patient_want = vec![
        vec![s("p1"), s(forms.date), s("1970-06-15"), s(no), s("2")],
        vec![s("p2"), None, s("1970"), s(yes), None],
    ];
    assert_eq!(h.view_rows("view_patient_typed", &PATIENT_COLUMNS), patient_want);

    // Whatever the form, each decimal read back is exactly the literal's value.
    for (form, literal) in forms.decimals.iter().zip(DECIMALS) {
        let (a, b): (fhirsync_views::Decimal, fhirsync_views::Decimal) =
            (form.parse().unwrap(), literal.parse().unwrap());
        assert_eq!(a, b, "{form} read back for {literal}");
    }
}
