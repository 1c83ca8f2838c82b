//! Key loading (PKCS#1, PKCS#8, SEC1), generation, JWKS and the private key file mode.

use fhirsync_auth::{Error, KeySource, KeyType, SigningKey, generate_private_key, write_private_key};
use secrecy::SecretString;

use crate::common::{self, RSA_1024, RSA_PKCS8};

/// A generated RSA key round-trips through PEM and publishes `{kty,n,e,alg,use,kid}`.
#[test]
fn generated_rsa_jwks() {
    let pem = generate_private_key(KeyType::Rsa(2048)).unwrap();
    let key = SigningKey::from_pem(&pem, "generated", None).unwrap();
    let jwks = key.jwks();
    let jwk = &jwks["keys"][0];
    assert_eq!(jwk["kty"], "RSA");
    assert_eq!(jwk["alg"], "RS384");
    assert_eq!(jwk["use"], "sig");
    assert_eq!(jwk["kid"], key.kid());
    assert_eq!(jwk["e"], "AQAB");
    assert!(jwk.get("d").is_none(), "no private part");
}

/// A generated EC key signs ES384 and publishes a P-384 JWK.
#[test]
fn generated_ec_jwks() {
    let pem = generate_private_key(KeyType::EcP384).unwrap();
    let key = SigningKey::from_pem(&pem, "generated", None).unwrap();
    assert_eq!(key.alg(), jsonwebtoken::Algorithm::ES384);
    assert_eq!(key.public_jwk()["crv"], "P-384");
}

/// A configured key id replaces the thumbprint.
#[test]
fn configured_kid() {
    let key = SigningKey::from_pem(&SecretString::from(RSA_PKCS8), "t", Some("my-kid".into())).unwrap();
    assert_eq!(key.kid(), "my-kid");
    assert_eq!(key.public_jwk()["kid"], "my-kid");
}

/// RSA keys below 2048 bits are refused with a message naming the fix.
#[test]
fn small_rsa_refused() {
    let err = SigningKey::from_pem(&SecretString::from(RSA_1024), "small.pem", None).unwrap_err();
    assert!(err.to_string().contains("2048"), "{err}");
}

/// Garbage is refused and the message does not echo the input.
#[test]
fn garbage_refused_without_echo() {
    let err =
        SigningKey::from_pem(&SecretString::from("not-a-key-SECRETMATERIAL"), "x.pem", None).unwrap_err();
    assert!(matches!(err, Error::Key { .. }));
    assert!(!err.to_string().contains("SECRETMATERIAL"));
}

/// Keys load from a file or from an environment variable.
#[test]
#[allow(unsafe_code)] // `set_var` is unsafe in edition 2024; the only way to test `env:` keys.
fn load_from_file_and_env() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.pem");
    std::fs::write(&path, RSA_PKCS8).unwrap();
    let from_file = SigningKey::load(&KeySource::parse_path(path.to_str().unwrap()), None).unwrap();
    // SAFETY: the variable name is unique to this test.
    unsafe { std::env::set_var("FHIRSYNC_TEST_KEY_PEM", RSA_PKCS8) };
    let from_env = SigningKey::load(&KeySource::parse_path("env:FHIRSYNC_TEST_KEY_PEM"), None).unwrap();
    assert_eq!(from_file.kid(), from_env.kid());
    assert_eq!(from_file.kid(), common::key(RSA_PKCS8).kid());
}

/// The private key file gets mode 0600 and is not overwritten without force.
#[test]
fn private_key_file_mode_and_no_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key.pem");
    let pem = generate_private_key(KeyType::Rsa(2048)).unwrap();
    write_private_key(&path, &pem, false).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let err = write_private_key(&path, &pem, false).unwrap_err();
    assert!(matches!(err, Error::Exists { .. }));
    write_private_key(&path, &pem, true).unwrap();
}

/// `serve_jwks` publishes the public set at /.well-known/jwks.json with no-store caching.
#[cfg(feature = "serve-jwks")]
#[tokio::test]
async fn jwks_served() {
    let key = common::key(RSA_PKCS8);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(fhirsync_auth::keys::serve_jwks(listener, key.jwks(), async move {
        let _ = stopped.await;
    }));
    let r = reqwest::get(format!("http://{addr}/.well-known/jwks.json")).await.unwrap();
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert_eq!(r.json::<serde_json::Value>().await.unwrap(), key.jwks());
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}
