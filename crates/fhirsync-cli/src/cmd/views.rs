//! `fhirsync views ...`: run a SQL-on-FHIR ViewDefinition over an NDJSON file, list the views
//! shipped with fhirsync.
//!
//! `views run` streams the input line by line (one FHIR resource per line, blank lines skipped),
//! so files larger than memory work. Resources of other types than the view's are ignored.
//! Output is CSV (RFC 4180 quoting, header row, empty cell for null, JSON text for collections)
//! or NDJSON (one object per row, keys in column order).

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::ValueEnum;
use fhirsync_views::{Row, View, default_views, load_dir, load_file};
use serde_json::Value;
use tracing::info;

use crate::Globals;
use crate::cmd::Failure;

/// Subcommands of `fhirsync views`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Run a ViewDefinition over an NDJSON file and print the rows.
    Run(RunArgs),
    /// List the default views (and, with --dir, the views in a folder).
    List(ListArgs),
}

/// Arguments of `fhirsync views run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// ViewDefinition JSON file, or the name of a default view (see `fhirsync views list`).
    pub view: String,
    /// NDJSON file with one FHIR resource per line (`-` reads standard input).
    #[arg(long, short)]
    pub input: PathBuf,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Format::Csv)]
    pub format: Format,
    /// Write the rows to this file instead of standard output.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

/// Arguments of `fhirsync views list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Also list the ViewDefinitions (`*.json`) in this folder.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Show each view's columns and types.
    #[arg(long)]
    pub columns: bool,
}

/// Row output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Comma-separated values with a header row.
    Csv,
    /// One JSON object per row.
    Ndjson,
}

/// Runs the command.
pub async fn run(command: Command, _globals: &Globals) -> anyhow::Result<()> {
    match command {
        Command::Run(args) => tokio::task::spawn_blocking(move || run_view(&args)).await?,
        Command::List(args) => list(&args),
    }
}

/// Resolves `spec` to a view: an existing file, else a default view name.
fn resolve_view(spec: &str) -> anyhow::Result<View> {
    let path = Path::new(spec);
    if path.exists() {
        return load_file(path).map_err(|e| Failure::config(e.to_string()));
    }
    default_views().into_iter().find(|v| v.name() == spec).ok_or_else(|| {
        Failure::config(format!(
            "`{spec}` is neither a ViewDefinition file nor a default view; run `fhirsync views list` for the names"
        ))
    })
}

fn run_view(args: &RunArgs) -> anyhow::Result<()> {
    let view = resolve_view(&args.view)?;
    let input: Box<dyn BufRead> = if args.input.as_os_str() == "-" {
        Box::new(BufReader::new(std::io::stdin()))
    } else {
        let file = File::open(&args.input)
            .map_err(|e| Failure::config(format!("cannot open input {}: {e}", args.input.display())))?;
        Box::new(BufReader::new(file))
    };
    let stats = match &args.output {
        Some(path) => {
            let file = File::create(path)
                .with_context(|| format!("cannot create output file {}", path.display()))?;
            let mut out = BufWriter::new(file);
            let stats = write_rows(&view, input, &mut out, args.format)?;
            out.flush().with_context(|| format!("cannot write {}", path.display()))?;
            stats
        }
        None => {
            let mut out = BufWriter::new(std::io::stdout().lock());
            let stats = write_rows(&view, input, &mut out, args.format)?;
            out.flush().context("cannot write to standard output")?;
            stats
        }
    };
    info!(view = view.name(), resources = stats.resources, rows = stats.rows, "View evaluated.");
    Ok(())
}

/// Counts of one `views run`.
#[derive(Debug, Default, PartialEq, Eq)]
struct Stats {
    /// Input lines holding a resource.
    resources: u64,
    /// Rows written.
    rows: u64,
}

/// Evaluates `view` over every NDJSON line of `input` and writes the rows to `out`.
///
/// Fails on a line that is not JSON or whose resource the view rejects, naming the line.
fn write_rows(
    view: &View,
    input: impl BufRead,
    out: &mut impl Write,
    format: Format,
) -> anyhow::Result<Stats> {
    let mut stats = Stats::default();
    if format == Format::Csv {
        let header: Vec<String> = view.columns().iter().map(|c| csv_field(&c.name)).collect();
        writeln!(out, "{}", header.join(","))?;
    }
    for (i, line) in input.lines().enumerate() {
        let line_no = i + 1;
        let line = line.with_context(|| format!("cannot read input line {line_no}"))?;
        if line.trim().is_empty() {
            continue;
        }
        let resource: Value =
            serde_json::from_str(&line).with_context(|| format!("input line {line_no} is not valid JSON"))?;
        stats.resources += 1;
        let rows = view.evaluate(&resource).with_context(|| {
            let id = resource.get("id").and_then(Value::as_str).unwrap_or("?");
            format!("view `{}` failed on input line {line_no} (resource id {id})", view.name())
        })?;
        for row in rows {
            match format {
                Format::Csv => write_csv_row(out, &row)?,
                Format::Ndjson => write_json_row(out, view, &row)?,
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
fn write_json_row(out: &mut impl Write, view: &View, row: &Row) -> anyhow::Result<()> {
    out.write_all(b"{")?;
    for (i, (col, v)) in view.columns().iter().zip(row).enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        serde_json::to_writer(&mut *out, &col.name)?;
        out.write_all(b":")?;
        serde_json::to_writer(&mut *out, v)?;
    }
    out.write_all(b"}\n")?;
    Ok(())
}

fn list(args: &ListArgs) -> anyhow::Result<()> {
    let mut views = default_views();
    let mut origin = vec!["default"; views.len()];
    if let Some(dir) = &args.dir {
        let user = load_dir(dir).map_err(|e| Failure::config(e.to_string()))?;
        origin.extend(std::iter::repeat_n("user", user.len()));
        views.extend(user);
    }
    let mut out = std::io::stdout().lock();
    write_list(&mut out, &views, &origin, args.columns)?;
    Ok(())
}

fn write_list(out: &mut impl Write, views: &[View], origin: &[&str], columns: bool) -> std::io::Result<()> {
    let width = views.iter().map(|v| v.name().len()).max().unwrap_or(0);
    for (v, o) in views.iter().zip(origin) {
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
        let stats = write_rows(&names_view(), INPUT.as_bytes(), &mut out, Format::Csv).expect("runs");
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
        write_rows(&names_view(), INPUT.as_bytes(), &mut out, Format::Ndjson).expect("runs");
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
        write_rows(&view, input.as_bytes(), &mut csv, Format::Csv).expect("runs");
        assert_eq!(String::from_utf8(csv).expect("utf8"), "v\n1.50\n123456789012345678.9\n");
        let mut ndjson = Vec::new();
        write_rows(&view, input.as_bytes(), &mut ndjson, Format::Ndjson).expect("runs");
        assert_eq!(String::from_utf8(ndjson).expect("utf8"), "{\"v\":1.50}\n{\"v\":123456789012345678.9}\n");
    }

    /// A malformed line fails with its line number.
    #[test]
    fn bad_line_is_named() {
        let err = write_rows(&names_view(), "{}\nnot json\n".as_bytes(), &mut Vec::new(), Format::Csv)
            .expect_err("must fail");
        assert!(format!("{err:#}").contains("line 2"), "{err:#}");
    }

    /// Default views resolve by name; unknown names are a configuration error.
    #[test]
    fn resolves_default_view_names() {
        assert_eq!(resolve_view("observation").expect("default view").resource(), "Observation");
        let err = resolve_view("no-such-view").expect_err("unknown");
        assert_eq!(crate::cmd::exit_code(&err), crate::cmd::EXIT_CONFIG);
    }

    /// `views list` prints every default view with its resource and column count.
    #[test]
    fn lists_default_views() {
        let views = default_views();
        let origin = vec!["default"; views.len()];
        let mut out = Vec::new();
        write_list(&mut out, &views, &origin, true).expect("writes");
        let text = String::from_utf8(out).expect("utf8");
        assert!(text.contains("observation ") && text.contains("Observation"), "{text}");
        assert!(text.contains("    value_quantity: Decimal"), "{text}");
    }
}
