//! [`SecretRef`]: where a secret comes from (`env:VARIABLE` or `file:PATH`), never the secret.
//! The one parser of secret references for every configuration key that takes one.

use std::fmt;
use std::path::PathBuf;

use secrecy::SecretString;

/// A reference to a secret: an environment variable or a file. Its `Debug` and `Display` show
/// the reference (`env:FHIRSYNC_CLIENT_SECRET`, `file:keys/app.pem`), never a value.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum SecretRef {
    /// An environment variable holding the secret.
    Env(String),
    /// A file holding the secret.
    File(PathBuf),
}

/// Why a secret reference cannot be parsed or read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The value is not a reference (`env:` or `file:`): a secret written inline.
    #[error("the value is not an `env:VARIABLE` or `file:PATH` reference")]
    Inline,
    /// The referenced environment variable is unset or empty.
    #[error("environment variable {variable} is not set")]
    Unset {
        /// The variable's name.
        variable: String,
    },
    /// The referenced file cannot be read.
    #[error("cannot read {}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl SecretRef {
    /// Parses `env:VARIABLE` or `file:PATH`; anything else is [`SecretError::Inline`] (the
    /// value itself is never kept or echoed).
    pub fn parse(spec: &str) -> Result<SecretRef, SecretError> {
        if let Some(var) = spec.strip_prefix("env:") {
            Ok(SecretRef::Env(var.trim().to_string()))
        } else if let Some(path) = spec.strip_prefix("file:") {
            Ok(SecretRef::File(PathBuf::from(path.trim())))
        } else {
            Err(SecretError::Inline)
        }
    }

    /// Like [`SecretRef::parse`], but a bare value is a file path (private keys are files).
    pub fn parse_path(spec: &str) -> SecretRef {
        SecretRef::parse(spec).unwrap_or_else(|_| SecretRef::File(PathBuf::from(spec)))
    }

    /// Reads the secret, looking variables up with `get` (tests pass their own environment).
    /// A file's content is taken whole when `trim` is false (a PEM), trimmed otherwise.
    pub fn read_with(
        &self,
        get: impl Fn(&str) -> Option<String>,
        trim: bool,
    ) -> Result<SecretString, SecretError> {
        let text = match self {
            SecretRef::Env(var) => get(var)
                .filter(|v| !v.trim().is_empty())
                .ok_or_else(|| SecretError::Unset { variable: var.clone() })?,
            SecretRef::File(path) => std::fs::read_to_string(path)
                .map_err(|source| SecretError::File { path: path.clone(), source })?,
        };
        Ok(SecretString::from(if trim { text.trim().to_string() } else { text }))
    }

    /// [`SecretRef::read_with`] on the process environment.
    pub fn read(&self, trim: bool) -> Result<SecretString, SecretError> {
        self.read_with(|k| std::env::var(k).ok(), trim)
    }

    /// Where the secret comes from, for messages: the file path, or "environment variable X".
    pub fn describe(&self) -> String {
        match self {
            SecretRef::File(p) => p.display().to_string(),
            SecretRef::Env(v) => format!("environment variable {v}"),
        }
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Env(v) => write!(f, "env:{v}"),
            SecretRef::File(p) => write!(f, "file:{}", p.display()),
        }
    }
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretRef({self})")
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    /// References parse by prefix, inline values are refused without being kept, bare paths
    /// are files for keys; reading takes the variable or the (trimmed) file; Debug shows only
    /// the reference.
    #[test]
    fn parse_read_and_show() {
        assert_eq!(SecretRef::parse("env:X").unwrap(), SecretRef::Env("X".into()));
        assert_eq!(SecretRef::parse("file:a/b").unwrap(), SecretRef::File("a/b".into()));
        let err = SecretRef::parse("s3cret").unwrap_err();
        assert!(matches!(err, SecretError::Inline) && !err.to_string().contains("s3cret"));
        assert_eq!(SecretRef::parse_path("keys/k.pem"), SecretRef::File("keys/k.pem".into()));
        let env = SecretRef::Env("X".into());
        let got = env.read_with(|k| (k == "X").then(|| "v".to_string()), true).unwrap();
        assert_eq!(got.expose_secret(), "v");
        assert!(
            matches!(env.read_with(|_| None, true), Err(SecretError::Unset { variable }) if variable == "X")
        );
        let dir = std::env::temp_dir().join(format!("fhirsync-secret-{}", std::process::id()));
        std::fs::write(&dir, "abc\n").unwrap();
        let file = SecretRef::File(dir.clone());
        assert_eq!(file.read(true).unwrap().expose_secret(), "abc");
        assert_eq!(file.read(false).unwrap().expose_secret(), "abc\n");
        std::fs::remove_file(&dir).unwrap();
        assert_eq!(format!("{env:?}"), "SecretRef(env:X)");
    }
}
