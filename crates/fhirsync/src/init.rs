//! [`init`] (`fhirsync init`): from nothing to a working connection in one step.
//!
//! Writes a commented `fhirsync.toml` for Epic's public sandbox, a production Epic or any SMART
//! server, generates the private key (mode 0600), prints the public JWK Set to register and the
//! ways to host it at a JWK Set URL (Epic requires one for backend apps), and the next commands.
//! Asks for what the flags leave out when stdin is a terminal; otherwise a missing value is an
//! error naming its flag, so scripts never hang. Never overwrites a file without `--force`.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use fhirsync_auth::{KeyType, SigningKey, generate_private_key, write_private_key};
use url::Url;

use crate::{Config as FileConfig, Error, Result};

/// Epic's public sandbox, R4.
pub const SANDBOX_R4: &str = "https://fhir.epic.com/interconnect-fhir-oauth/api/FHIR/R4";
/// Epic's public sandbox, STU3 (patient lists).
pub const SANDBOX_STU3: &str = "https://fhir.epic.com/interconnect-fhir-oauth/api/FHIR/STU3";
/// Epic's published sandbox test patients (R4/STU3 FHIR ids) with their names.
const SANDBOX_PATIENTS: [(&str, &str); 5] = [
    ("erXuFYUfucBZaryVksYEcMg3", "Camila Lopez"),
    ("eq081-VQEgP8drUUqCWzHfw3", "Derrick Lin"),
    ("eAB3mDIBBcyUKviyzrxsnAw3", "Desiree Powell"),
    ("eIXesllypH3M9tAA5WdJftQ3", "Linda Ross"),
    ("e0w0LEDCYtfckT6N.CkJKCw3", "Warren McGinnis"),
];
/// Default path of the private key.
pub const DEFAULT_KEY_OUT: &str = "keys/fhirsync.pem";

/// Which server the configuration is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Target {
    /// Epic's public sandbox (fhir.epic.com), with its published test patients.
    EpicSandbox,
    /// A health system's Epic (its own FHIR base, a patient list).
    EpicProduction,
    /// Any other SMART-on-FHIR server (generic search rules).
    Smart,
}

impl Target {
    fn describe(self) -> &'static str {
        match self {
            Target::EpicSandbox => "Epic's public sandbox",
            Target::EpicProduction => "a production Epic",
            Target::Smart => "a SMART-on-FHIR server",
        }
    }
}

/// What `fhirsync init` is asked for (its flags).
#[derive(Debug, Clone)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct Args {
    /// Server kind.
    #[cfg_attr(feature = "clap", arg(long, value_enum))]
    pub target: Option<Target>,
    /// Client id of the registered app (Epic: the Non-Production or Production Client ID).
    #[cfg_attr(feature = "clap", arg(long))]
    pub client_id: Option<String>,
    /// R4 FHIR base URL (default for epic-sandbox: Epic's sandbox).
    #[cfg_attr(feature = "clap", arg(long, value_name = "URL"))]
    pub fhir_base: Option<String>,
    /// STU3 FHIR base URL, where Epic serves patient lists (optional).
    #[cfg_attr(feature = "clap", arg(long, value_name = "URL"))]
    pub stu3_base: Option<String>,
    /// Cohort: an Epic patient list, `system|value` (e.g. `systemlist|6442`).
    #[cfg_attr(feature = "clap", arg(long, value_name = "SYSTEM|VALUE", conflicts_with_all = ["patient_ids", "group"]))]
    pub patient_list: Option<String>,
    /// Cohort: a patient's FHIR id (repeat for more).
    #[cfg_attr(feature = "clap", arg(long = "patient-id", value_name = "ID", conflicts_with = "group"))]
    pub patient_ids: Vec<String>,
    /// Cohort: a Group's FHIR id.
    #[cfg_attr(feature = "clap", arg(long, value_name = "ID"))]
    pub group: Option<String>,
    /// Where to write the private key (PEM, mode 0600).
    #[cfg_attr(feature = "clap", arg(long, default_value = DEFAULT_KEY_OUT))]
    pub key_out: PathBuf,
    /// Generate an EC P-384 key (ES384) instead of RSA 2048.
    #[cfg_attr(feature = "clap", arg(long))]
    pub ec: bool,
    /// Where to write the configuration (default: the global --config, `fhirsync.toml`).
    #[cfg_attr(feature = "clap", arg(long))]
    pub out: Option<PathBuf>,
    /// Overwrite an existing configuration or key file.
    #[cfg_attr(feature = "clap", arg(long))]
    pub force: bool,
    /// Never ask, even on a terminal: a missing value is an error.
    #[cfg_attr(feature = "clap", arg(long))]
    pub no_input: bool,
}

impl Default for Args {
    /// No values given: the key at [`DEFAULT_KEY_OUT`], RSA, no overwriting, asking allowed.
    fn default() -> Args {
        Args {
            target: None,
            client_id: None,
            fhir_base: None,
            stu3_base: None,
            patient_list: None,
            patient_ids: Vec::new(),
            group: None,
            key_out: PathBuf::from(DEFAULT_KEY_OUT),
            ec: false,
            out: None,
            force: false,
            no_input: false,
        }
    }
}

/// The cohort the configuration reads.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Cohort {
    /// Epic's sandbox test patients.
    SandboxPatients,
    /// A patient list `system|value`.
    List(String),
    /// Patient ids.
    Ids(Vec<String>),
    /// A Group id.
    Group(String),
}

/// Everything the configuration is written from.
#[derive(Debug, Clone)]
struct Plan {
    target: Target,
    client_id: String,
    fhir_base: String,
    stu3_base: Option<String>,
    cohort: Cohort,
}

/// Asks questions on a terminal (or any reader/writer pair, in tests).
pub struct Prompter<'a> {
    /// Answers.
    pub input: &'a mut dyn BufRead,
    /// Questions.
    pub output: &'a mut dyn Write,
}

impl std::fmt::Debug for Prompter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prompter").finish_non_exhaustive()
    }
}

impl Prompter<'_> {
    /// Asks until the answer is non-empty (Enter takes `default` when there is one).
    fn ask(&mut self, question: &str, default: Option<&str>) -> Result<String> {
        let io = |source| Error::Terminal { source };
        loop {
            match default {
                Some(d) => write!(self.output, "{question} [{d}]: ").map_err(io)?,
                None => write!(self.output, "{question}: ").map_err(io)?,
            }
            self.output.flush().map_err(io)?;
            let mut line = String::new();
            if self.input.read_line(&mut line).map_err(io)? == 0 {
                return Err(Error::config(format!(
                    "input ended before `{question}` was answered: rerun, or pass the values as flags (see `fhirsync init --help`)"
                )));
            }
            let answer = line.trim();
            match (answer.is_empty(), default) {
                (false, _) => return Ok(answer.to_string()),
                (true, Some(d)) => return Ok(d.to_string()),
                (true, None) => writeln!(self.output, "  (an answer is needed)").map_err(io)?,
            }
        }
    }
}

/// A value from its flag, else from the prompter, else an error naming the flag.
fn value(
    given: Option<String>,
    prompter: &mut Option<Prompter<'_>>,
    flag: &str,
    question: &str,
    default: Option<&str>,
) -> Result<String> {
    if let Some(v) = given.filter(|v| !v.trim().is_empty()) {
        return Ok(v.trim().to_string());
    }
    match prompter {
        Some(p) => p.ask(question, default),
        None => match default {
            Some(d) => Ok(d.to_string()),
            None => Err(Error::config(format!(
                "{flag} is missing: pass it (see `fhirsync init --help`), or run `fhirsync init` on a terminal to be asked"
            ))),
        },
    }
}

/// Fills in the plan from the flags and, where they are silent, the prompter.
fn resolve(args: &Args, mut prompter: Option<Prompter<'_>>) -> Result<Plan> {
    let target = match args.target {
        Some(t) => t,
        None => {
            let answer = value(
                None,
                &mut prompter,
                "--target",
                "Server: 1 = Epic sandbox, 2 = production Epic, 3 = other SMART server",
                Some("1"),
            )?;
            match answer.as_str() {
                "1" | "epic-sandbox" => Target::EpicSandbox,
                "2" | "epic-production" => Target::EpicProduction,
                "3" | "smart" => Target::Smart,
                other => {
                    return Err(Error::config(format!(
                        "`{other}` is not a server choice: answer 1, 2 or 3 (or pass --target epic-sandbox|epic-production|smart)"
                    )));
                }
            }
        }
    };
    let client_id = value(
        args.client_id.clone(),
        &mut prompter,
        "--client-id",
        match target {
            Target::EpicSandbox => "Non-Production Client ID of your fhir.epic.com app",
            Target::EpicProduction => "Production Client ID of your app (as the health system registered it)",
            Target::Smart => "Client id registered with the server",
        },
        None,
    )?;
    let fhir_base = value(
        args.fhir_base.clone(),
        &mut prompter,
        "--fhir-base",
        "R4 FHIR base URL",
        (target == Target::EpicSandbox).then_some(SANDBOX_R4),
    )?;
    check_base("--fhir-base", &fhir_base, target)?;
    let stu3_base = match (&args.stu3_base, target) {
        (Some(b), _) => Some(b.trim().to_string()),
        (None, Target::EpicSandbox) if fhir_base == SANDBOX_R4 => Some(SANDBOX_STU3.to_string()),
        (None, _) => None,
    };
    if let Some(b) = &stu3_base {
        check_base("--stu3-base", b, target)?;
    }
    let cohort = if let Some(list) = &args.patient_list {
        Cohort::List(list.trim().to_string())
    } else if !args.patient_ids.is_empty() {
        Cohort::Ids(args.patient_ids.iter().map(|s| s.trim().to_string()).collect())
    } else if let Some(group) = &args.group {
        Cohort::Group(group.trim().to_string())
    } else {
        match target {
            Target::EpicSandbox => Cohort::SandboxPatients,
            Target::EpicProduction => Cohort::List(value(
                None,
                &mut prompter,
                "--patient-list (or --patient-id / --group)",
                "Patient list identifier (system|value, e.g. systemlist|6442)",
                None,
            )?),
            Target::Smart => {
                let ids = value(
                    None,
                    &mut prompter,
                    "--patient-id (or --group / --patient-list)",
                    "Patient FHIR ids to read, separated by commas",
                    None,
                )?;
                Cohort::Ids(ids.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
            }
        }
    };
    Ok(Plan { target, client_id, fhir_base, stu3_base, cohort })
}

/// A FHIR base must be an absolute URL; HTTPS, except on a loopback host (a local proxy or
/// the simulator).
fn check_base(flag: &str, base: &str, target: Target) -> Result<()> {
    let url = Url::parse(base).map_err(|e| {
        Error::config(format!("{flag} {base:?} is not a URL ({e}): give the full https:// address"))
    })?;
    let loopback = matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
    if url.scheme() != "https" && !(url.scheme() == "http" && loopback) {
        return Err(Error::config(format!(
            "{flag} {base:?}: {} needs an https:// URL (plain http only on a loopback host)",
            target.describe()
        )));
    }
    Ok(())
}

/// A TOML string literal.
fn quoted(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// A path as a TOML string (forward slashes).
fn quoted_path(p: &Path) -> String {
    quoted(&p.display().to_string().replace('\\', "/"))
}

/// The commented configuration file.
fn render(plan: &Plan, key: &Path) -> String {
    let mut t = String::new();
    t.push_str(&format!(
        "# fhirsync configuration for {}, written by `fhirsync init`.\n\
         # Reference: the README's \"Configuration reference\". Unknown keys are rejected.\n\
         # Relative paths are relative to the folder fhirsync runs in.\n\n",
        plan.target.describe()
    ));
    render_connection(plan, key, &mut t);
    render_extract(plan, &mut t);
    render_destination_and_rest(plan.target != Target::Smart, &mut t);
    t
}

/// The `[connection]` table.
fn render_connection(plan: &Plan, key: &Path, t: &mut String) {
    t.push_str("[connection]\n");
    t.push_str(&format!("client_id = {}\n", quoted(&plan.client_id)));
    t.push_str("# FHIR bases. The token endpoint is discovered from the server's metadata.\n");
    t.push_str(&format!("fhir_r4_endpoint = {}\n", quoted(&plan.fhir_base)));
    match (&plan.stu3_base, plan.target) {
        (Some(b), _) => t.push_str(&format!("fhir_stu3_endpoint = {}   # patient lists\n", quoted(b))),
        (None, Target::Smart) => {}
        (None, _) => {
            let hint = plan.fhir_base.trim_end_matches('/').strip_suffix("/R4").map(|b| format!("{b}/STU3"));
            t.push_str(&format!(
                "# fhir_stu3_endpoint = {}   # patient lists; take it from the health system\n",
                quoted(hint.as_deref().unwrap_or("https://.../api/FHIR/STU3"))
            ));
        }
    }
    t.push_str(
        "# SMART Backend Services: the JWT assertion is signed with this key. Its public half (the JWK Set\n\
         # `fhirsync init` printed, or `fhirsync keys jwks --key ...`) must be registered with the app.\n",
    );
    t.push_str(&format!("private_key = {}\n", quoted_path(key)));
    t.push_str(
        "# key_id = \"...\"                 # kid in your JWK Set; the RFC 7638 thumbprint when unset\n",
    );
    if let Cohort::List(list) = &plan.cohort {
        t.push_str(&format!("patient_list_identifier = {}\n", quoted(list)));
    }
    t.push_str(
        "# https_proxy = \"http://proxy.hospital.local:3128\"\n\
         # ca_bundle = \"certs/hospital-ca.pem\"   # extra trusted CAs (TLS inspection)\n\n",
    );
}

/// The `[extract]` table and its cohort.
fn render_extract(plan: &Plan, t: &mut String) {
    let epic = plan.target != Target::Smart;
    t.push_str("[extract]\n");
    t.push_str(if epic {
        "server = \"auto\"                   # Epic's search rules when the CapabilityStatement says Epic\n"
    } else {
        "server = \"generic\"                # one search per type, without Epic's per-category fan-out\n"
    });
    t.push_str("mode = \"search\"                   # per-patient searches; \"bulk\" exports a Group\n");
    t.push_str(
        "# datasets = [\"Patient\", \"Observation:laboratory\", \"Condition\"]   # empty = all searchable\n",
    );
    t.push_str(if plan.target == Target::EpicProduction {
        "# Politeness: Epic asks apps to throttle themselves; raise these only with the customer's agreement.\n"
    } else {
        "# Politeness towards the server.\n"
    });
    t.push_str("concurrency = 4\nrate_limit = 10.0                  # requests per second\n");
    match &plan.cohort {
        Cohort::SandboxPatients => {
            t.push_str("[extract.cohort]                   # Epic's published sandbox test patients\npatient_ids = [\n");
            for (id, name) in SANDBOX_PATIENTS {
                t.push_str(&format!("  {},   # {name}\n", quoted(id)));
            }
            t.push_str("]\n");
        }
        Cohort::Ids(ids) => {
            let ids: Vec<String> = ids.iter().map(|i| quoted(i)).collect();
            t.push_str(&format!("[extract.cohort]\npatient_ids = [{}]\n", ids.join(", ")));
        }
        Cohort::Group(g) => t.push_str(&format!("[extract.cohort]\ngroup = {}\n", quoted(g))),
        Cohort::List(_) => t.push_str(
            "# The cohort is connection.patient_list_identifier; [extract.cohort] can name another.\n",
        ),
    }
    t.push('\n');
}

/// The `[destination]`, `[sync]` and `[views]` tables (the MRN hint only for Epic).
fn render_destination_and_rest(epic: bool, t: &mut String) {
    t.push_str(
        "[destination]\n\
         kind = \"sqlite\"\n\
         path = \"fhirsync.db\"\n\
         # kind = \"postgres\"  url = \"postgresql://fhirsync@db.hospital.local:5432/analytics\"  schema = \"fhirsync\"\n\
         #                    password_env = \"FHIRSYNC_POSTGRES_PASSWORD\"   (the password never goes in this file)\n\
         # kind = \"parquet\"   dir = \"landing/\"\n\n\
         [sync]\n\
         method = \"reload-and-compare\"      # inserts, updates and deletes, with a change history\n\
         state_dir = \".fhirsync\"            # run lock, Bulk status URLs, push ledgers\n\n\
         [views]\n\
         defaults = true                    # flat tables (view_patient, view_observation, ...)\n",
    );
    if epic {
        t.push_str("# mrn_identifier = \"urn:oid:...\"   # your MRN's identifier system (OIDs differ per customer)\n");
    }
}

/// Fails when `path` exists and `--force` was not given.
fn refuse_existing(path: &Path, what: &str, force: bool) -> Result<()> {
    if !force && path.exists() {
        return Err(Error::config(format!(
            "{what} {} already exists: pass --force to overwrite it, or choose another path ({})",
            path.display(),
            if what == "configuration" { "--out" } else { "--key-out" }
        )));
    }
    Ok(())
}

/// Writes the configuration (creating its folder); without `force` an existing file is kept.
fn write_config(path: &Path, text: &str, force: bool) -> Result<()> {
    let fail =
        |e: std::io::Error| Error::config(format!("cannot write the configuration {}: {e}", path.display()));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let mut file = std::fs::File::options()
        .write(true)
        .truncate(true)
        .create(force)
        .create_new(!force)
        .open(path)
        .map_err(fail)?;
    file.write_all(text.as_bytes()).map_err(fail)
}

/// Writes the configuration (to `args.out`, else `default_out`) and a new private key, and
/// returns what to do next: the JWK Set to register, where to host it, the commands to try.
/// `prompter` asks for what `args` leaves out; without one a missing value is an error naming
/// its flag. Nothing is written when a value is wrong or a file exists (without `force`).
pub fn init(args: &Args, default_out: &Path, prompter: Option<Prompter<'_>>) -> Result<String> {
    let out = args.out.clone().unwrap_or_else(|| default_out.to_path_buf());
    refuse_existing(&out, "configuration", args.force)?;
    refuse_existing(&args.key_out, "key file", args.force)?;
    let plan = resolve(args, prompter)?;
    let text = render(&plan, &args.key_out);
    // What is written must load: a bad value (patient list, URL) fails here, before any file.
    FileConfig::from_toml(&text, &out)?.validate()?;

    let kind = if args.ec { KeyType::EcP384 } else { KeyType::Rsa(fhirsync_auth::keys::MIN_RSA_BITS) };
    let pem = generate_private_key(kind)?;
    let key = SigningKey::from_pem(&pem, &args.key_out.display().to_string(), None)?;
    write_private_key(&args.key_out, &pem, args.force)?;
    write_config(&out, &text, args.force)?;
    Ok(instructions(&plan, &out, &args.key_out, &key))
}

/// What to do next: the JWK Set, where to host it, the commands to try.
fn instructions(plan: &Plan, out: &Path, key_path: &Path, key: &SigningKey) -> String {
    // A JWK Set is a JSON value: it always serialises.
    let jwks = serde_json::to_string_pretty(&key.jwks()).unwrap_or_default();
    let (out, key_path) = (out.display(), key_path.display());
    let register = match plan.target {
        Target::EpicSandbox => {
            "Epic requires a JWK Set URL (JKU) for backend apps: public HTTPS, no authentication, stable.\n\
             \x20  Enter it as the Non-Production JWK Set URL of your fhir.epic.com app (use another key for\n\
             \x20  production)."
        }
        Target::EpicProduction => {
            "Epic requires a JWK Set URL (JKU) for backend apps: public HTTPS, no authentication, stable.\n\
             \x20  Enter it as the Production JWK Set URL of your app (one key pair per environment)."
        }
        Target::Smart => {
            "Register the JWK Set with the server's client registration: as a JWK Set URL (preferred),\n\
             \x20  or pasted as the client's public keys if the server accepts that."
        }
    };
    let wait = match plan.target {
        Target::EpicSandbox => {
            "Epic syncs a new or changed client to its sandbox within hours; until then the token\n\
             \x20  endpoint answers `invalid_client`.\n"
        }
        Target::EpicProduction => {
            "The health system must activate the client and map it to a background user; until then\n\
             \x20  the token endpoint answers `unauthorized_client` (or `invalid_client` before the key syncs).\n"
        }
        Target::Smart => "Once the server knows the client:\n",
    };
    format!(
        "Wrote {out} (for {}) and the private key {key_path} (mode 0600, {:?}, kid {}).\n\n\
         1. Register this public JWK Set (it holds no secret; keep {key_path} private):\n\n\
         {jwks}\n\n\
         2. {register}\n\
         \x20  To host it at a URL, either:\n\
         \x20  - `fhirsync keys serve --key {key_path}` serves it at http://127.0.0.1:8089/.well-known/jwks.json;\n\
         \x20    put your HTTPS reverse proxy in front and register https://<your host>/.well-known/jwks.json\n\
         \x20  - or save it as a static file on any HTTPS host:\n\
         \x20    `fhirsync keys jwks --key {key_path} > jwks.json`\n\n\
         3. {wait}\
         \x20  Check the connection, then see what the client may read, then sync:\n\
         \x20    fhirsync --config {out} auth test\n\
         \x20    fhirsync --config {out} discover\n\
         \x20    fhirsync --config {out} sync\n",
        plan.target.describe(),
        key.alg(),
        key.kid(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(target: Option<Target>) -> Args {
        Args { target, client_id: Some("abc-123".into()), no_input: true, ..Args::default() }
    }

    fn loads(plan: &Plan) -> FileConfig {
        let text = render(plan, Path::new(DEFAULT_KEY_OUT));
        let config = FileConfig::from_toml(&text, Path::new("fhirsync.toml"))
            .unwrap_or_else(|e| panic!("{e:#}\n{text}"));
        config.validate().unwrap_or_else(|e| panic!("{e:#}\n{text}"));
        config
    }

    /// The sandbox configuration loads and validates, with Epic's sandbox bases, the key and the
    /// published test patients.
    #[test]
    fn sandbox_config_loads() {
        let plan = resolve(&args(Some(Target::EpicSandbox)), None).unwrap();
        let c = loads(&plan);
        assert_eq!(c.connection.client_id.as_deref(), Some("abc-123"));
        assert_eq!(c.connection.fhir_r4_endpoint.as_ref().map(url::Url::as_str), Some(SANDBOX_R4));
        assert_eq!(c.connection.fhir_stu3_endpoint.as_ref().map(url::Url::as_str), Some(SANDBOX_STU3));
        assert_eq!(c.connection.private_key, Some(fhirsync_core::SecretRef::File(DEFAULT_KEY_OUT.into())));
        assert_eq!(c.extract.cohort.patient_ids.len(), SANDBOX_PATIENTS.len());
        assert_eq!(c.destination.kind(), "sqlite");
    }

    /// A production configuration takes the patient list into the connection; without a FHIR
    /// base or a cohort, non-interactive init names the missing flag.
    #[test]
    fn production_config_loads_and_missing_flags_are_named() {
        let mut a = args(Some(Target::EpicProduction));
        let err = format!("{:#}", resolve(&a, None).unwrap_err());
        assert!(err.contains("--fhir-base is missing"), "{err}");
        a.fhir_base = Some("https://fhir.hospital.example/FHIR/api/FHIR/R4/".into());
        let err = format!("{:#}", resolve(&a, None).unwrap_err());
        assert!(err.contains("--patient-list"), "{err}");
        a.patient_list = Some("systemlist|6442".into());
        let plan = resolve(&a, None).unwrap();
        let text = render(&plan, Path::new(DEFAULT_KEY_OUT));
        assert!(
            text.contains("# fhir_stu3_endpoint = \"https://fhir.hospital.example/FHIR/api/FHIR/STU3\""),
            "{text}"
        );
        let c = loads(&plan);
        assert_eq!(c.connection.patient_list_identifier.as_deref(), Some("systemlist|6442"));
        a.fhir_base = Some("http://fhir.hospital.example/R4".into());
        let err = format!("{:#}", resolve(&a, None).unwrap_err());
        assert!(err.contains("needs an https:// URL"), "{err}");
    }

    /// A SMART server gets the generic search rules and its cohort from the prompts; the
    /// prompter re-asks after an empty answer and takes defaults on Enter.
    #[test]
    fn smart_config_from_prompts() {
        let mut a = args(None);
        a.client_id = None;
        let mut input = std::io::Cursor::new("3\n\nmy-client\nhttps://smart.example/fhir\np1, p2\n");
        let mut output = Vec::new();
        let plan = resolve(&a, Some(Prompter { input: &mut input, output: &mut output })).unwrap();
        assert_eq!(plan.target, Target::Smart);
        assert_eq!(plan.cohort, Cohort::Ids(vec!["p1".into(), "p2".into()]));
        let shown = String::from_utf8(output).unwrap();
        assert!(shown.contains("(an answer is needed)"), "{shown}");
        let c = loads(&plan);
        assert_eq!(c.connection.client_id.as_deref(), Some("my-client"));
        assert_eq!(c.extract.cohort.patient_ids, ["p1", "p2"]);
        assert!(render(&plan, Path::new("k.pem")).contains("server = \"generic\""));
        // Input that ends early is an error, not a hang or a panic.
        let mut input = std::io::Cursor::new("2\n");
        let mut output = Vec::new();
        let err =
            resolve(&args(None), Some(Prompter { input: &mut input, output: &mut output })).unwrap_err();
        assert!(format!("{err:#}").contains("input ended"), "{err:#}");
    }

    /// A bad patient list is refused by the configuration's own validation, naming the key.
    #[test]
    fn bad_patient_list_fails_validation() {
        let mut a = args(Some(Target::EpicSandbox));
        a.patient_list = Some("6442".into());
        let plan = resolve(&a, None).unwrap();
        let text = render(&plan, Path::new(DEFAULT_KEY_OUT));
        let err = FileConfig::from_toml(&text, Path::new("f.toml")).and_then(|c| c.validate()).unwrap_err();
        assert!(format!("{err:#}").contains("patient_list"), "{err:#}");
    }

    /// The example configurations shipped in `deploy/` load with the validation `sync` applies.
    #[test]
    fn deploy_configs_load() {
        for file in ["deploy/kubernetes/fhirsync.toml", "deploy/systemd/fhirsync.toml"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(file);
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
            let config = FileConfig::from_toml(&text, &path).unwrap_or_else(|e| panic!("{file}: {e:#}"));
            config.validate().unwrap_or_else(|e| panic!("{file}: {e:#}"));
            assert_eq!(
                config.sync.state_dir,
                Path::new(".fhirsync"),
                "{file}: state under the working folder"
            );
        }
    }
}
