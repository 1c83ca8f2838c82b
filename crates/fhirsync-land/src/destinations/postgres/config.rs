//! PostgreSQL destination settings.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Default target schema.
pub const DEFAULT_POSTGRES_SCHEMA: &str = "fhirsync";
/// Default environment variable holding the password.
pub const DEFAULT_PASSWORD_ENV: &str = "FHIRSYNC_POSTGRES_PASSWORD";

/// PostgreSQL destination settings (`kind = "postgres"`).
///
/// `Debug` never shows the password, even if one was written into the URL.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// Connection URL without the password, e.g. `postgresql://fhirsync@localhost:5432/fhirsync`.
    pub url: String,
    /// Environment variable read for the password (default `FHIRSYNC_POSTGRES_PASSWORD`); unset
    /// means no password (trust/peer auth). A password inside `url` is refused
    /// ([`crate::Error::InlinePassword`]).
    #[serde(default = "default_password_env")]
    pub password_env: String,
    /// Schema that receives all tables; created if missing (default `fhirsync`).
    #[serde(default = "default_schema")]
    pub schema: String,
    /// PEM file of the CA that signed the server's certificate (a private or cloud CA), trusted
    /// besides the system roots. TLS follows the URL's `sslmode` (`prefer` by default, also
    /// `require` or `disable`); when TLS is used the certificate and host name are always
    /// verified.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

fn default_password_env() -> String {
    DEFAULT_PASSWORD_ENV.to_string()
}

fn default_schema() -> String {
    DEFAULT_POSTGRES_SCHEMA.to_string()
}

impl PostgresConfig {
    /// Settings for `url` with the default schema and password variable.
    pub fn new(url: impl Into<String>) -> Self {
        PostgresConfig {
            url: url.into(),
            password_env: default_password_env(),
            schema: default_schema(),
            ca_file: None,
        }
    }
}

impl PostgresConfig {
    /// Refuses a password written into `url` (either form, `user:password@` or `password=`),
    /// without echoing it: the password goes in the variable named by `password_env`.
    pub fn validate(&self) -> crate::Result<()> {
        let parsed: tokio_postgres::Config =
            self.url.parse().map_err(|source| crate::Error::PostgresUrl { source })?;
        if parsed.get_password().is_some() {
            return Err(crate::Error::InlinePassword { variable: self.password_env.clone() });
        }
        Ok(())
    }
}

impl std::fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &redact_url(&self.url))
            .field("password_env", &self.password_env)
            .field("schema", &self.schema)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// The URL with any `user:password@` password replaced by `***`.
pub(crate) fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            let masked = if userinfo.contains(':') { format!("{user}:***") } else { user.to_string() };
            format!("{scheme}://{masked}@{host}{tail}")
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Passwords inside the URL never reach Debug output.
    #[test]
    fn debug_redacts_password() {
        let c = PostgresConfig::new("postgresql://u:s3cret@db:5432/x");
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("u:***@db:5432/x"), "{shown}");
        assert_eq!(redact_url("postgresql://u@h/db"), "postgresql://u@h/db");
    }

    /// A password inside the url, in either url form, is refused with the fix and not echoed.
    #[test]
    fn inline_password_refused_without_echo() {
        for url in ["postgresql://u:s3cret@db:5432/x", "host=db user=u password=s3cret dbname=x"] {
            let e = PostgresConfig::new(url).validate().expect_err(url).to_string();
            assert!(!e.contains("s3cret"), "{e}");
            assert!(e.contains("password_env = \"FHIRSYNC_POSTGRES_PASSWORD\""), "{e}");
        }
        PostgresConfig::new("postgresql://u@db:5432/x").validate().expect("no password");
    }
}
