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
use fhirsync_sim::testing::{SimBuilder, backend_client, launch_client};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let key_path = args.next().ok_or("usage: auth_sim KEY.pem REDIRECT_URI")?;
    let redirect = args.next().ok_or("usage: auth_sim KEY.pem REDIRECT_URI")?;
    let key = SigningKey::load(&KeySource::parse_path(&key_path), None)?;
    let secret = std::env::var("FHIRSYNC_CLIENT_SECRET").map_err(|_| "set FHIRSYNC_CLIENT_SECRET")?;
    let backend = ClientRegistration {
        scopes: vec!["system/Patient.read".into(), "system/Observation.read".into()],
        ..backend_client("demo-backend", key.jwks(), true)
    };
    let launch = launch_client("demo-launch", &secret, &redirect, true);
    let sim = SimBuilder::new().register(backend).register(launch).try_start().await?;
    sim.state().oauth.set_auto_approve(true);
    println!("{}", sim.fhir_base(FhirVersion::R4));
    tokio::signal::ctrl_c().await?;
    Ok(())
}
