//! Runs the simulator with two clients for trying `fhirsync auth` / `fhirsync keys` by hand:
//! - `demo-backend`: backend services, public key from the PEM given as first argument,
//!   registered as a JWK Set URL (RSA and EC accepted);
//! - `demo-launch`: standalone launch, secret from `FHIRSYNC_CLIENT_SECRET`, redirect URI given as
//!   second argument; authorize requests are auto-approved.
//!
//! `cargo run -p fhirsync-auth --example auth_sim -- key.pem http://127.0.0.1:8765/callback`

use fhirsync_auth::{KeySource, SigningKey};
use fhirsync_core::FhirVersion;
use fhirsync_sim::oauth::ClientRegistration;
use fhirsync_sim::{Sim, SimConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let key_path = args.next().ok_or("usage: auth_sim KEY.pem REDIRECT_URI")?;
    let redirect = args.next().ok_or("usage: auth_sim KEY.pem REDIRECT_URI")?;
    let key = SigningKey::load(&KeySource::parse(&key_path), None)?;
    let secret = std::env::var("FHIRSYNC_CLIENT_SECRET").map_err(|_| "set FHIRSYNC_CLIENT_SECRET")?;
    let sim = Sim::start(SimConfig::default()).await?;
    sim.state().oauth.set_auto_approve(true);
    sim.state().oauth.register_client(ClientRegistration {
        client_id: "demo-backend".into(),
        jwks: Some(key.jwks()),
        jwks_from_url: true,
        scopes: vec!["system/Patient.read".into(), "system/Observation.read".into()],
        ..Default::default()
    });
    sim.state().oauth.register_client(ClientRegistration {
        client_id: "demo-launch".into(),
        client_secret: Some(secret),
        redirect_uris: vec![redirect],
        refresh_tokens: true,
        ..Default::default()
    });
    println!("{}", sim.fhir_base(FhirVersion::R4));
    tokio::signal::ctrl_c().await?;
    Ok(())
}
