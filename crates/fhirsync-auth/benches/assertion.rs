//! Cost of minting a backend-services client assertion (done once per token) and of parsing a
//! private key (done once per run), for RSA 2048 (RS384) and EC P-384 (ES384).

use fhirsync_auth::{BackendServicesAuth, KeyType, SigningKey, generate_private_key};
use secrecy::SecretString;

fn main() {
    divan::main();
}

fn pem(kind: KeyType) -> SecretString {
    generate_private_key(kind).expect("key generation")
}

fn provider(kind: KeyType) -> BackendServicesAuth {
    let key = SigningKey::from_pem(&pem(kind), "bench", None).expect("key parses");
    let url = url::Url::parse("https://fhir.example/oauth2/token").expect("url");
    BackendServicesAuth::new(reqwest::Client::new(), "bench-client", url, key, None)
}

/// Signing one assertion (header + claims + RS384 signature).
#[divan::bench]
fn sign_rs384(bencher: divan::Bencher) {
    let auth = provider(KeyType::Rsa(2048));
    bencher.bench_local(|| auth.client_assertion().expect("signs"));
}

/// Signing one assertion with ES384.
#[divan::bench]
fn sign_es384(bencher: divan::Bencher) {
    let auth = provider(KeyType::EcP384);
    bencher.bench_local(|| auth.client_assertion().expect("signs"));
}

/// Parsing a PKCS#8 RSA PEM and deriving its JWK + thumbprint.
#[divan::bench]
fn parse_rsa_pem(bencher: divan::Bencher) {
    let pem = pem(KeyType::Rsa(2048));
    bencher.bench_local(|| SigningKey::from_pem(&pem, "bench", None).expect("parses"));
}
