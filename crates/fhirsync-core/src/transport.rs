//! The `[connection]` transport settings (`https_proxy`, `ca_bundle`) applied to an HTTP
//! client: one place, so the token and discovery requests go the same way as the FHIR ones
//! (a hospital's egress proxy and its TLS-inspecting CA apply to both).

use std::path::PathBuf;

use url::Url;

use crate::ConnectionConfig;

/// Why the transport settings of `[connection]` could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum TransportSetupError {
    /// The CA bundle file could not be read, or holds no certificate.
    #[error("cannot read CA bundle {path}: {source}")]
    CaBundleRead {
        /// File path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The CA bundle file is not PEM certificates.
    #[error("CA bundle {path} is not a PEM certificate bundle: {source}")]
    CaBundleParse {
        /// File path.
        path: PathBuf,
        /// Cause.
        source: reqwest::Error,
    },
    /// The HTTPS proxy URL is not usable.
    #[error("invalid HTTPS proxy `{url}`: {source}")]
    Proxy {
        /// Proxy URL without its credentials.
        url: String,
        /// Cause.
        source: reqwest::Error,
    },
}

/// `builder` with `connection`'s `https_proxy` (HTTPS requests tunnel through it) and
/// `ca_bundle` (trusted besides the built-in roots).
pub fn with_connection(
    mut builder: reqwest::ClientBuilder,
    connection: &ConnectionConfig,
) -> Result<reqwest::ClientBuilder, TransportSetupError> {
    if let Some(proxy) = &connection.https_proxy {
        let p = reqwest::Proxy::https(proxy)
            .map_err(|source| TransportSetupError::Proxy { url: without_credentials(proxy), source })?;
        builder = builder.proxy(p);
    }
    if let Some(path) = &connection.ca_bundle {
        let read = |source| TransportSetupError::CaBundleRead { path: path.clone(), source };
        let pem = std::fs::read(path).map_err(read)?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|source| TransportSetupError::CaBundleParse { path: path.clone(), source })?;
        if certs.is_empty() {
            let none = "no `-----BEGIN CERTIFICATE-----` block found";
            return Err(read(std::io::Error::new(std::io::ErrorKind::InvalidData, none)));
        }
        builder = builder.tls_certs_merge(certs);
    }
    Ok(builder)
}

/// `url` without user name and password (or, when it is not a URL with a host, the part after
/// its last `@`).
fn without_credentials(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut u) if u.has_host() => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        _ => url.rsplit_once('@').map_or(url, |(_, host)| host).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A proxy's credentials never reach the error message, parsed or not.
    #[test]
    fn proxy_credentials_are_dropped() {
        assert_eq!(without_credentials("http://u:pa55@proxy:3128"), "http://proxy:3128/");
        assert_eq!(without_credentials("u:pa55@[::1"), "[::1");
    }

    /// A CA bundle without a certificate is refused naming the file.
    #[test]
    fn empty_ca_bundle_is_refused() {
        let dir = std::env::temp_dir().join(format!("fhirsync-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("empty.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let connection = ConnectionConfig { ca_bundle: Some(path.clone()), ..Default::default() };
        let err = with_connection(reqwest::Client::builder(), &connection).unwrap_err();
        assert!(matches!(err, TransportSetupError::CaBundleRead { .. }), "{err}");
        assert!(err.to_string().contains("empty.pem"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
