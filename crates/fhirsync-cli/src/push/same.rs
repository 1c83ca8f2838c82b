//! "Is this resource already on the server?" — the check run before re-sending a create the
//! server did not acknowledge.
//!
//! The search: the patient's resources of the type (`patient`/`subject` = the referenced
//! patient), narrowed by the resource's first `category` and `code` when the endpoint lists
//! those parameters (for `Patient`: by its first identifier). Narrowing only saves work:
//! servers may ignore parameters, so the decision is always made on the client by
//! [`same_resource`]:
//! - both carry identifiers → same iff they share one `(system, value)`; with the push
//!   identifier added by default every pushed resource has one, so this is the normal path;
//! - otherwise → same iff every element of the pushed resource (other than `id`, `meta`, `text`,
//!   `identifier`) is equal in the candidate. A server that rewrites content (adds codings,
//!   normalises dates) defeats this fallback, which is why the identifier is added.

use fhirsync_extract::plan::Capabilities;
use serde_json::{Map, Value};

use super::validate::identifiers;

/// Elements the server may add or rewrite; ignored by the content comparison.
const SERVER_OWNED: &[&str] = &["id", "meta", "text", "identifier"];

/// Search parameters of the duplicate check, or why the type cannot be checked on this endpoint.
pub fn check_params(
    caps: &Capabilities,
    ty: &str,
    resource: &Map<String, Value>,
    patient: Option<&str>,
) -> Result<Vec<(String, String)>, String> {
    let has = |name: &str| caps.types.get(ty).and_then(Option::as_ref).is_some_and(|p| p.contains(name));
    if ty == "Patient" {
        let Some((system, value)) = identifiers(resource).into_iter().next() else {
            return Err("the Patient has no identifier to search by".into());
        };
        if !has("identifier") {
            return Err("this endpoint cannot search Patient by identifier".into());
        }
        let token = if system.is_empty() { value } else { format!("{system}|{value}") };
        return Ok(vec![("identifier".into(), token)]);
    }
    let param =
        caps.patient_param(ty).ok_or_else(|| format!("this endpoint cannot search {ty} by patient"))?;
    let patient = patient.ok_or("the resource has no patient reference")?;
    let mut params = vec![(param.to_string(), patient.to_string())];
    for name in ["category", "code"] {
        if has(name)
            && let Some(token) = first_coding(resource.get(name))
        {
            params.push((name.to_string(), token));
        }
    }
    Ok(params)
}

/// `system|code` (or `code`) of the first coding of a CodeableConcept or a list of them.
fn first_coding(value: Option<&Value>) -> Option<String> {
    let concept = match value? {
        Value::Array(a) => a.first()?,
        v => v,
    };
    let coding = concept.get("coding")?.as_array()?.first()?;
    let code = coding.get("code")?.as_str()?;
    Some(match coding.get("system").and_then(Value::as_str) {
        Some(system) => format!("{system}|{code}"),
        None => code.to_string(),
    })
}

/// True when `candidate` (from the server) is the pushed `resource` (see the module docs).
pub fn same_resource(resource: &Map<String, Value>, candidate: &Map<String, Value>) -> bool {
    let ours = identifiers(resource);
    let theirs = identifiers(candidate);
    if !ours.is_empty() && !theirs.is_empty() {
        return ours.iter().any(|i| theirs.contains(i));
    }
    let mut compared = 0;
    for (key, value) in resource {
        if key == "resourceType" || SERVER_OWNED.contains(&key.as_str()) {
            continue;
        }
        if candidate.get(key) != Some(value) {
            return false;
        }
        compared += 1;
    }
    compared > 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!("test literal is an object"),
        }
    }

    /// Identifiers decide when both sides have them, whatever the rest of the content says.
    #[test]
    fn identifiers_decide() {
        let ours = obj(
            json!({"resourceType":"Observation","identifier":[{"system":"s","value":"1"}],"status":"final"}),
        );
        let same = obj(
            json!({"resourceType":"Observation","id":"e1","identifier":[{"system":"s","value":"1"}],"status":"amended"}),
        );
        let other = obj(
            json!({"resourceType":"Observation","id":"e2","identifier":[{"system":"s","value":"2"}],"status":"final"}),
        );
        assert!(same_resource(&ours, &same));
        assert!(!same_resource(&ours, &other));
    }

    /// Without identifiers on the server, every pushed element must match; server-owned ones are ignored.
    #[test]
    fn content_fallback() {
        let ours = obj(
            json!({"resourceType":"Observation","identifier":[{"system":"s","value":"1"}],"status":"final","valueQuantity":{"value":5}}),
        );
        let stored = obj(
            json!({"resourceType":"Observation","id":"e1","meta":{"versionId":"1"},"status":"final","valueQuantity":{"value":5}}),
        );
        let changed =
            obj(json!({"resourceType":"Observation","id":"e1","status":"final","valueQuantity":{"value":6}}));
        assert!(same_resource(&ours, &stored));
        assert!(!same_resource(&ours, &changed));
        let empty = obj(json!({"resourceType":"Observation"}));
        assert!(!same_resource(&empty, &stored), "nothing compared is never a match");
    }

    /// The check narrows by patient, category and code when the endpoint lists them.
    #[test]
    fn params_narrow_by_patient_category_code() {
        let caps = Capabilities::parse(
            br#"{"resourceType":"CapabilityStatement","rest":[{"resource":[{"type":"Observation","interaction":[{"code":"search-type"},{"code":"create"}],"searchParam":[{"name":"patient"},{"name":"category"},{"name":"code"}]}]}]}"#,
        )
        .unwrap();
        let r = obj(
            json!({"category":[{"coding":[{"system":"c","code":"vital-signs"}]}],"code":{"coding":[{"code":"8867-4"}]}}),
        );
        let p = check_params(&caps, "Observation", &r, Some("p1")).unwrap();
        assert_eq!(
            p,
            vec![
                ("patient".to_string(), "p1".to_string()),
                ("category".to_string(), "c|vital-signs".to_string()),
                ("code".to_string(), "8867-4".to_string())
            ]
        );
        assert!(check_params(&caps, "Condition", &r, Some("p1")).is_err());
    }
}
