//! Flattening NDJSON files with SQL-on-FHIR ViewDefinitions (`fhirsync views run`), and the
//! list of the shipped views (`fhirsync views list`).
//!
//! [`flatten`] streams the input line by line (one FHIR resource per line, blank lines skipped),
//! so files larger than memory work. Resources of other types than the view's are ignored.
//! Output is CSV (RFC 4180 quoting, header row, empty cell for null, JSON text for collections,
//! decimals as written) or NDJSON (one object per row, keys in column order).

use std::io::{BufRead, Write};
use std::path::Path;

use fhirsync_views::{Row, View, default_views, load_dir, load_file};
use serde_json::Value;

use crate::{Error, Result};

/// Row output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Format {
    /// Comma-separated values with a header row.
    Csv,
    /// One JSON object per row.
    Ndjson,
}

/// Resolves `spec` to a view: an existing file, else a default view name.
pub fn resolve_view(spec: &str) -> Result<View> {
    let path = Path::new(spec);
    if path.exists() {
        return Ok(load_file(path)?);
    }
    default_views().into_iter().find(|v| v.name() == spec).ok_or_else(|| {
        Error::config(format!(
            "`{spec}` is neither a ViewDefinition file nor a default view; run `fhirsync views list` for the names"
        ))
    })
}

/// Counts of one flattening.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Input lines holding a resource.
    pub resources: u64,
    /// Rows written.
    pub rows: u64,
}

/// Evaluates `view` over every NDJSON line of `input` and writes the rows to `out`.
///
/// Fails on a line that is not JSON or whose resource the view rejects, naming the line.
pub fn flatten(view: &View, input: impl BufRead, out: &mut impl Write, format: Format) -> Result<Stats> {
    let write_err = |source| Error::Output { source };
    let mut stats = Stats::default();
    if format == Format::Csv {
        let header: Vec<String> = view.columns().iter().map(|c| csv_field(&c.name)).collect();
        writeln!(out, "{}", header.join(",")).map_err(write_err)?;
    }
    for (i, line) in input.lines().enumerate() {
        let line_no = i + 1;
        let line = line.map_err(|source| Error::Input { line: line_no, source })?;
        if line.trim().is_empty() {
            continue;
        }
        let resource: Value =
            serde_json::from_str(&line).map_err(|source| Error::InputJson { line: line_no, source })?;
        stats.resources += 1;
        let rows = view.evaluate(&resource).map_err(|source| Error::ViewFailed {
            view: view.name().to_string(),
            line: line_no,
            id: resource.get("id").and_then(Value::as_str).unwrap_or("?").to_string(),
            source: Box::new(source),
        })?;
        for row in rows {
            match format {
                Format::Csv => write_csv_row(out, &row).map_err(write_err)?,
                Format::Ndjson => write_json_row(out, view, &row).map_err(write_err)?,
            }
            stats.rows += 1;
        }
    }
    Ok(stats)
}

fn write_csv_row(out: &mut impl Write, row: &Row) -> std::io::Result<()> {
    let cells: Vec<String> = row.iter().map(|v| csv_field(&cell_text(v))).collect();
    writeln!(out, "{}", cells.join(","))
}

/// Cell text: strings raw, null empty, everything else as JSON.
fn cell_text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// RFC 4180 quoting: fields with a comma, quote or line break are quoted, quotes doubled.
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

/// One JSON object with keys in column order (a `serde_json::Map` would sort them).
fn write_json_row(out: &mut impl Write, view: &View, row: &Row) -> std::io::Result<()> {
    out.write_all(b"{")?;
    for (i, (col, v)) in view.columns().iter().zip(row).enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        serde_json::to_writer(&mut *out, &col.name)?;
        out.write_all(b":")?;
        serde_json::to_writer(&mut *out, v)?;
    }
    out.write_all(b"}\n")
}

/// The default views, and those of `dir`, with where each comes from (`default`, `user`).
pub fn views_with_origin(dir: Option<&Path>) -> Result<Vec<(View, &'static str)>> {
    let mut views: Vec<(View, &'static str)> = default_views().into_iter().map(|v| (v, "default")).collect();
    if let Some(dir) = dir {
        views.extend(load_dir(dir)?.into_iter().map(|v| (v, "user")));
    }
    Ok(views)
}

/// One line per view (name, resource, column count, origin); with `columns` its columns too.
pub fn write_list(out: &mut impl Write, views: &[(View, &str)], columns: bool) -> std::io::Result<()> {
    let width = views.iter().map(|(v, _)| v.name().len()).max().unwrap_or(0);
    for (v, o) in views {
        writeln!(out, "{:width$}  {:20}  {:3} columns  ({o})", v.name(), v.resource(), v.columns().len())?;
        if columns {
            for c in v.columns() {
                let coll = if c.collection { " (collection)" } else { "" };
                writeln!(out, "    {}: {:?}{coll}", c.name, c.ty)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn names_view() -> View {
        View::from_json(&json!({"resource": "Patient", "name": "names", "select": [
            {"column": [{"name": "id", "path": "id"}]},
            {"forEach": "name", "column": [{"name": "family", "path": "family"},
                                          {"name": "given", "path": "given", "collection": true}]}]}))
        .expect("valid view")
    }

    const INPUT: &str = concat!(
        r#"{"resourceType":"Patient","id":"p1","name":[{"family":"O'Neil, Jr","given":["A","B"]}]}"#,
        "\n\n",
        r#"{"resourceType":"Observation","id":"o1"}"#,
        "\n",
        r#"{"resourceType":"Patient","id":"p2","name":[{"family":"Say \"hi\""}]}"#,
        "\n"
    );

    /// CSV output has a header, quotes fields with commas/quotes, and skips other resource types.
    #[test]
    fn csv_rows() {
        let mut out = Vec::new();
        let stats = flatten(&names_view(), INPUT.as_bytes(), &mut out, Format::Csv).expect("runs");
        assert_eq!(stats, Stats { resources: 3, rows: 2 });
        assert_eq!(
            String::from_utf8(out).expect("utf8"),
            "id,family,given\np1,\"O'Neil, Jr\",\"[\"\"A\"\",\"\"B\"\"]\"\np2,\"Say \"\"hi\"\"\",[]\n"
        );
    }

    /// NDJSON output keeps the column order and JSON types.
    #[test]
    fn ndjson_rows() {
        let mut out = Vec::new();
        flatten(&names_view(), INPUT.as_bytes(), &mut out, Format::Ndjson).expect("runs");
        let text = String::from_utf8(out).expect("utf8");
        let first = text.lines().next().expect("a row");
        assert_eq!(first, r#"{"id":"p1","family":"O'Neil, Jr","given":["A","B"]}"#);
    }

    /// Decimals print as written in the resource (`1.50`, not `1.5`), in CSV and NDJSON.
    #[test]
    fn decimals_print_as_written() {
        let view = View::from_json(&json!({"resource": "Observation", "select": [{"column": [
            {"name": "v", "path": "valueQuantity.value", "type": "decimal"}]}]}))
        .expect("valid view");
        let input = concat!(
            r#"{"resourceType":"Observation","valueQuantity":{"value":1.50}}"#,
            "\n",
            r#"{"resourceType":"Observation","valueQuantity":{"value":123456789012345678.9}}"#,
            "\n"
        );
        let mut csv = Vec::new();
        flatten(&view, input.as_bytes(), &mut csv, Format::Csv).expect("runs");
        assert_eq!(String::from_utf8(csv).expect("utf8"), "v\n1.50\n123456789012345678.9\n");
        let mut ndjson = Vec::new();
        flatten(&view, input.as_bytes(), &mut ndjson, Format::Ndjson).expect("runs");
        assert_eq!(String::from_utf8(ndjson).expect("utf8"), "{\"v\":1.50}\n{\"v\":123456789012345678.9}\n");
    }

    /// A malformed line fails with its line number.
    #[test]
    fn bad_line_is_named() {
        let err = flatten(&names_view(), "{}\nnot json\n".as_bytes(), &mut Vec::new(), Format::Csv)
            .expect_err("must fail");
        assert!(err.to_string().contains("line 2"), "{err}");
    }

    /// Default views resolve by name; unknown names are a configuration error.
    #[test]
    fn resolves_default_view_names() {
        assert_eq!(resolve_view("observation").expect("default view").resource(), "Observation");
        let err = resolve_view("no-such-view").expect_err("unknown");
        assert_eq!(err.kind(), crate::ErrorKind::Config);
    }

    /// `views list` prints every default view with its resource and column count.
    #[test]
    fn lists_default_views() {
        let views = views_with_origin(None).expect("defaults");
        let mut out = Vec::new();
        write_list(&mut out, &views, true).expect("writes");
        let text = String::from_utf8(out).expect("utf8");
        assert!(text.contains("observation ") && text.contains("Observation"), "{text}");
        assert!(text.contains("    value_quantity: Decimal"), "{text}");
    }
}
