//! Private keys for SMART Backend Services: loading PEM (RSA as PKCS#1 `BEGIN RSA PRIVATE KEY`
//! or PKCS#8 `BEGIN PRIVATE KEY`; EC P-384/P-256 as PKCS#8 or SEC1 `BEGIN EC PRIVATE KEY`),
//! generating new keys (aws-lc-rs; written as PKCS#8 PEM), and deriving the public JWK / JWKS to
//! publish at a JWK Set URL.
//!
//! Algorithms: RSA keys sign with RS384, P-384 keys with ES384, P-256 keys with ES256 (Epic accepts
//! EC only from a JWK Set URL). The `kid` is the RFC 7638 SHA-256 JWK thumbprint unless configured.
//! Epic requires RSA keys of at least 2048 bits.

use std::fmt;
use std::path::Path;
use std::sync::Once;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use fhirsync_core::{SecretError, SecretRef};
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use zeroize::Zeroizing;

use crate::fsutil;
use crate::{Error, Result};

/// Smallest accepted RSA modulus, bits (Epic's rule).
pub const MIN_RSA_BITS: usize = 2048;

/// Makes sure jsonwebtoken uses the aws-lc-rs provider (it panics on first use when it cannot
/// pick one from crate features).
pub(crate) fn ensure_crypto_provider() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        // Err only means a provider is already installed, which is what we want.
        let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
    });
}

/// Where a private key PEM comes from: `env:VAR`, `file:PATH` or a bare path
/// ([`SecretRef::parse_path`]).
pub type KeySource = SecretRef;

/// Reads the PEM text of a private key from a file or an environment variable.
pub fn load_private_key(source: &KeySource) -> Result<SecretString> {
    source.read(false).map_err(|e| match e {
        SecretError::File { path, source } => Error::File { action: "read private key", path, source },
        SecretError::Unset { .. } | SecretError::Inline => Error::Key {
            origin: source.describe(),
            problem: "the variable is unset or empty; put the PEM text of the private key in it".into(),
        },
    })
}

/// Kind of key to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    /// RSA with the given modulus size (2048, 3072 or 4096 bits); signs RS384.
    Rsa(usize),
    /// EC on NIST P-384; signs ES384 (Epic: JWK Set URL registrations only).
    EcP384,
}

/// Generates a private key; returns it as PKCS#8 PEM.
pub fn generate_private_key(kind: KeyType) -> Result<SecretString> {
    let origin = || "generation".to_string();
    let der: Zeroizing<Vec<u8>> = match kind {
        KeyType::Rsa(bits) => {
            let size = match bits {
                2048 => aws_lc_rs::rsa::KeySize::Rsa2048,
                3072 => aws_lc_rs::rsa::KeySize::Rsa3072,
                4096 => aws_lc_rs::rsa::KeySize::Rsa4096,
                other => {
                    return Err(Error::Key {
                        origin: origin(),
                        problem: format!("{other}-bit RSA is not offered; use 2048, 3072 or 4096"),
                    });
                }
            };
            let pair = aws_lc_rs::rsa::KeyPair::generate(size)
                .map_err(|_| Error::Key { origin: origin(), problem: "RSA key generation failed".into() })?;
            let der: aws_lc_rs::encoding::Pkcs8V1Der<'static> = pair
                .as_der()
                .map_err(|_| Error::Key { origin: origin(), problem: "PKCS#8 export failed".into() })?;
            Zeroizing::new(der.as_ref().to_vec())
        }
        KeyType::EcP384 => {
            let doc = EcdsaKeyPair::generate_pkcs8(
                &ECDSA_P384_SHA384_FIXED_SIGNING,
                &aws_lc_rs::rand::SystemRandom::new(),
            )
            .map_err(|_| Error::Key { origin: origin(), problem: "EC key generation failed".into() })?;
            Zeroizing::new(doc.as_ref().to_vec())
        }
    };
    Ok(SecretString::from(pem_encode("PRIVATE KEY", &der)))
}

/// Writes a private key file with mode 0600; refuses to replace an existing file unless `force`.
pub fn write_private_key(path: &Path, pem: &SecretString, force: bool) -> Result<()> {
    fsutil::write_private(path, pem.expose_secret().as_bytes(), force)
}

/// A private signing key with its JWS algorithm and key id. Debug never shows the key.
#[derive(Clone)]
pub struct SigningKey {
    encoding: EncodingKey,
    alg: Algorithm,
    kid: String,
    public: Jwk,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .field("key", &"[REDACTED]")
            .finish()
    }
}

impl SigningKey {
    /// Parses a PEM private key. `origin` names its source in errors; `kid` overrides the
    /// default key id (the RFC 7638 thumbprint of the public key).
    pub fn from_pem(pem: &SecretString, origin: &str, kid: Option<String>) -> Result<SigningKey> {
        ensure_crypto_provider();
        let bad = |problem: &str| Error::Key { origin: origin.to_string(), problem: problem.to_string() };
        let (label, der) = pem_decode(pem.expose_secret()).ok_or_else(|| {
            bad("not a PEM private key (expected `-----BEGIN PRIVATE KEY-----`, `BEGIN RSA PRIVATE KEY` or `BEGIN EC PRIVATE KEY`)")
        })?;
        let (encoding, alg) = match label.as_str() {
            "RSA PRIVATE KEY" => {
                check_rsa(aws_lc_rs::rsa::KeyPair::from_der(&der).ok(), &bad)?;
                (EncodingKey::from_rsa_der(&der), Algorithm::RS384)
            }
            "PRIVATE KEY" => {
                if let Ok(pair) = aws_lc_rs::rsa::KeyPair::from_pkcs8(&der) {
                    check_rsa(Some(pair), &bad)?;
                    let key = EncodingKey::from_rsa_pem(pem.expose_secret().as_bytes())
                        .map_err(|_| bad("the PKCS#8 RSA key cannot be used"))?;
                    (key, Algorithm::RS384)
                } else if contains(&der, RSA_ENCRYPTION_OID) {
                    // aws-lc refuses RSA keys below 2048 bits at parse time.
                    return Err(bad(RSA_SIZE_PROBLEM));
                } else {
                    ec_key(&der, &bad)?
                }
            }
            "EC PRIVATE KEY" => ec_key(&der, &bad)?,
            "ENCRYPTED PRIVATE KEY" => {
                return Err(bad(
                    "encrypted keys are not supported; decrypt it (`openssl pkcs8 -in KEY -out PLAIN.pem`) and keep the file mode 0600",
                ));
            }
            _ => return Err(bad("unsupported PEM block; give an RSA or EC private key")),
        };
        let mut public =
            Jwk::from_encoding_key(&encoding, alg).map_err(|_| bad("cannot derive the public key"))?;
        let kid = match kid {
            Some(k) => k,
            None => public
                .thumbprint(ThumbprintHash::SHA256)
                .map_err(|_| bad("cannot compute the key thumbprint"))?,
        };
        public.common.public_key_use = Some(PublicKeyUse::Signature);
        public.common.key_id = Some(kid.clone());
        Ok(SigningKey { encoding, alg, kid, public })
    }

    /// Reads and parses a key from a file or an environment variable.
    pub fn load(source: &KeySource, kid: Option<String>) -> Result<SigningKey> {
        let pem = load_private_key(source)?;
        SigningKey::from_pem(&pem, &source.describe(), kid)
    }

    /// The JWS algorithm this key signs with (RS384, ES384 or ES256).
    pub fn alg(&self) -> Algorithm {
        self.alg
    }

    /// The key id put in JWT headers and in the JWK.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public JWK: `{kty, n, e | crv, x, y, alg, use: "sig", kid}`.
    pub fn public_jwk(&self) -> serde_json::Value {
        serde_json::to_value(&self.public).unwrap_or_default()
    }

    /// The public JWK Set `{"keys":[jwk]}` to host at the JWK Set URL.
    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({ "keys": [self.public_jwk()] })
    }

    /// Whether this is an RSA key.
    pub fn is_rsa(&self) -> bool {
        matches!(self.public.algorithm, AlgorithmParameters::RSA(_))
    }

    /// Signs `claims` as a compact JWT with header `{alg, typ: "JWT", kid}`.
    pub fn sign<T: Serialize>(&self, claims: &T) -> Result<String> {
        let mut header = Header::new(self.alg);
        header.typ = Some("JWT".to_string());
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding)
            .map_err(|source| Error::Sign { kid: self.kid.clone(), source })
    }
}

/// DER of the `rsaEncryption` algorithm OID (1.2.840.113549.1.1.1).
const RSA_ENCRYPTION_OID: &[u8] = &[0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01];
const RSA_SIZE_PROBLEM: &str = "the RSA key is refused: RSA keys must have 2048 to 8192 bits; generate a new one with `fhirsync keys generate`";

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn check_rsa(pair: Option<aws_lc_rs::rsa::KeyPair>, bad: &dyn Fn(&str) -> Error) -> Result<()> {
    let pair = pair.ok_or_else(|| bad(RSA_SIZE_PROBLEM))?;
    if pair.public_modulus_len() * 8 < MIN_RSA_BITS {
        return Err(bad(RSA_SIZE_PROBLEM));
    }
    Ok(())
}

/// An EC private key (PKCS#8 or SEC1) as a PKCS#8 [`EncodingKey`] with its algorithm.
fn ec_key(der: &[u8], bad: &dyn Fn(&str) -> Error) -> Result<(EncodingKey, Algorithm)> {
    let curves = [
        (&ECDSA_P384_SHA384_FIXED_SIGNING, Algorithm::ES384),
        (&ECDSA_P256_SHA256_FIXED_SIGNING, Algorithm::ES256),
    ];
    for (curve, alg) in curves {
        if let Ok(pair) = EcdsaKeyPair::from_private_key_der(curve, der) {
            let pkcs8 = pair.to_pkcs8v1().map_err(|_| bad("cannot convert the EC key to PKCS#8"))?;
            return Ok((EncodingKey::from_ec_der(pkcs8.as_ref()), alg));
        }
    }
    Err(bad("not an RSA, P-384 or P-256 private key"))
}

/// PEM-encodes `der` under `label` (64-character lines).
pub(crate) fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = Zeroizing::new(STANDARD.encode(der));
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The label and DER content of the first PEM block in `text`.
fn pem_decode(text: &str) -> Option<(String, Zeroizing<Vec<u8>>)> {
    let start = text.find("-----BEGIN ")?;
    let rest = &text[start + "-----BEGIN ".len()..];
    let label_end = rest.find("-----")?;
    let label = rest[..label_end].to_string();
    let body_and_end = &rest[label_end + 5..];
    let end = body_and_end.find(&format!("-----END {label}-----"))?;
    let body: Zeroizing<String> =
        Zeroizing::new(body_and_end[..end].chars().filter(|c| !c.is_whitespace()).collect());
    let der = STANDARD.decode(body.as_bytes()).ok()?;
    Some((label, Zeroizing::new(der)))
}

/// Path the JWK Set is served at by `serve_jwks` (feature `serve-jwks`).
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

/// Serves `jwks` at [`JWKS_PATH`] on `listener` until `shutdown` resolves. Responses carry
/// `Cache-Control: no-store` so Epic refetches after a key rotation during testing.
#[cfg(feature = "serve-jwks")]
pub async fn serve_jwks(
    listener: tokio::net::TcpListener,
    jwks: serde_json::Value,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    use axum::http::header;
    let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let body = std::sync::Arc::new(jwks);
    let app = axum::Router::new().route(
        JWKS_PATH,
        axum::routing::get(move || {
            let body = body.clone();
            async move {
                ([(header::CACHE_CONTROL, "no-store")], axum::Json(serde_json::Value::clone(&body)))
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| Error::Listen { addr, source })
}
