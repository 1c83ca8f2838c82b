//! FHIR XML serialisation of FHIR JSON (the generic mapping of the FHIR spec, "XML
//! Representation"): objects become elements, primitives become `<name value="…"/>`, arrays repeat
//! the element, `_name` companions add `id`/`extension` to a primitive, element `id` and
//! extension `url` become attributes, nested resources are wrapped in their type element, and
//! narrative `div` is written as XHTML verbatim.

use std::fmt::Write;

use serde_json::{Map, Value};

use super::order::ordered;

/// The FHIR namespace.
const NS: &str = "http://hl7.org/fhir";

/// `resource` (a JSON object with `resourceType`) as FHIR XML.
pub(crate) fn to_xml(resource: &Value) -> String {
    let mut out = String::with_capacity(4096);
    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>");
    match resource.as_object() {
        Some(obj) => write_resource(&mut out, obj),
        None => out.push_str("<OperationOutcome xmlns=\"http://hl7.org/fhir\"/>"),
    }
    out
}

/// Appends `resource` as a FHIR XML element (no XML declaration).
pub(crate) fn write_value(out: &mut String, resource: &Value) {
    if let Some(obj) = resource.as_object() {
        write_resource(out, obj);
    }
}

/// Escapes text for an attribute value.
pub(crate) fn attr(s: &str) -> String {
    escape(s)
}

fn write_resource(out: &mut String, obj: &Map<String, Value>) {
    let name = obj.get("resourceType").and_then(Value::as_str).unwrap_or("Resource");
    let _ = write!(out, "<{name} xmlns=\"{NS}\">");
    write_children(out, name, obj, &[]);
    let _ = write!(out, "</{name}>");
}

/// Writes every member of `obj` (the value of `name`) as child elements in FHIR order, skipping
/// `skip` and `_` companions.
fn write_children(out: &mut String, name: &str, obj: &Map<String, Value>, skip: &[&str]) {
    for (key, value) in ordered(name, obj) {
        if key == "resourceType" || key.starts_with('_') || skip.contains(&key.as_str()) {
            continue;
        }
        let companion = obj.get(&format!("_{key}"));
        write_element(out, key, value, companion);
    }
}

fn write_element(out: &mut String, name: &str, value: &Value, companion: Option<&Value>) {
    match value {
        Value::Null => {}
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let c = companion.and_then(|c| c.get(i)).filter(|c| !c.is_null());
                write_element(out, name, item, c);
            }
        }
        Value::Object(obj) if obj.contains_key("resourceType") => {
            let _ = write!(out, "<{name}>");
            write_resource(out, obj);
            let _ = write!(out, "</{name}>");
        }
        Value::Object(obj) => {
            let _ = write!(out, "<{name}");
            let mut skip: Vec<&str> = Vec::new();
            if let Some(id) = obj.get("id").and_then(Value::as_str) {
                let _ = write!(out, " id=\"{}\"", escape(id));
                skip.push("id");
            }
            if name.ends_with("xtension")
                && let Some(url) = obj.get("url").and_then(Value::as_str)
            {
                let _ = write!(out, " url=\"{}\"", escape(url));
                skip.push("url");
            }
            out.push('>');
            write_children(out, name, obj, &skip);
            let _ = write!(out, "</{name}>");
        }
        primitive => {
            if name == "div" {
                if let Value::String(xhtml) = primitive {
                    out.push_str(xhtml);
                }
                return;
            }
            let text = match primitive {
                Value::String(s) => escape(s),
                other => other.to_string(),
            };
            let _ = write!(out, "<{name}");
            let extra = companion.and_then(Value::as_object);
            if let Some(id) = extra.and_then(|c| c.get("id")).and_then(Value::as_str) {
                let _ = write!(out, " id=\"{}\"", escape(id));
            }
            let _ = write!(out, " value=\"{text}\"");
            match extra {
                Some(c) if c.contains_key("extension") => {
                    out.push('>');
                    write_children(out, name, c, &["id"]);
                    let _ = write!(out, "</{name}>");
                }
                _ => out.push_str("/>"),
            }
        }
    }
}

/// XML attribute/text escaping.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#xA;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The JSON-to-XML mapping handles primitives, arrays, extensions, companions and nesting.
    #[test]
    fn maps_json_to_fhir_xml() {
        let bundle = json!({
            "resourceType": "Bundle",
            "type": "searchset",
            "total": 1,
            "entry": [{"resource": {
                "resourceType": "Patient",
                "id": "p1",
                "extension": [{"url": "http://x/e", "valueString": "a&b"}],
                "name": [{"given": ["A", "B"]}],
                "birthDate": "2000-01-01",
                "_birthDate": {"extension": [{"url": "http://x/t", "valueTime": "10:00"}]},
                "active": true,
                "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">x</div>"}
            }}]
        });
        let xml = to_xml(&bundle);
        assert!(
            xml.contains(
                "<Bundle xmlns=\"http://hl7.org/fhir\"><type value=\"searchset\"/><total value=\"1\"/><entry>"
            ),
            "{xml}"
        );
        assert!(xml.contains("<Patient xmlns=\"http://hl7.org/fhir\"><id value=\"p1\"/><text><status value=\"generated\"/><div"), "{xml}");
        assert!(xml.contains("</extension><active value=\"true\"/><name>"), "{xml}");
        assert!(xml.contains("<entry><resource><Patient xmlns=\"http://hl7.org/fhir\">"), "{xml}");
        assert!(
            xml.contains("<extension url=\"http://x/e\"><valueString value=\"a&amp;b\"/></extension>"),
            "{xml}"
        );
        assert!(xml.contains("<name><given value=\"A\"/><given value=\"B\"/></name>"), "{xml}");
        assert!(xml.contains("<birthDate value=\"2000-01-01\"><extension url=\"http://x/t\"><valueTime value=\"10:00\"/></extension></birthDate>"), "{xml}");
        assert!(xml.contains("<active value=\"true\"/>"), "{xml}");
        assert!(xml.contains("<div xmlns=\"http://www.w3.org/1999/xhtml\">x</div>"), "{xml}");
        assert!(xml.contains("<id value=\"p1\"/>"), "{xml}");
    }
}
