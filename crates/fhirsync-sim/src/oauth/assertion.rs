//! Verification of a SMART Backend Services client assertion (a JWT signed with the client's
//! private key), with Epic's rules:
//! - `alg` RS256/RS384/RS512 for every client; ES256/ES384 only for clients whose key set was
//!   registered as a JWK Set URL; `typ`, when present, is `JWT`;
//! - signature verified against the client's registered public keys (by `kid` for JKU clients;
//!   static uploads keep only `kty`, `n`, `e`, so every RSA key is tried);
//! - `iss == sub == client_id`, `aud ==` the token URL;
//! - `exp` in the future and at most 5 minutes ahead; `nbf`/`iat` not in the future and at most
//!   5 minutes before `exp`;
//! - `jti` a string of at most 151 characters, not reused before its `exp`.

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use super::{ClientRegistration, OAuthState};

/// Longest accepted assertion lifetime (`exp - now`, `exp - iat`, `exp - nbf`), seconds.
pub const MAX_ASSERTION_LIFETIME_SECS: u64 = 300;
/// Longest accepted `jti`.
pub const MAX_JTI_LEN: usize = 151;

/// Why an assertion was refused.
#[derive(Debug)]
pub enum Rejection {
    /// `invalid_client`, with the (logged, never returned) reason.
    InvalidClient(&'static str),
    /// `unauthorized_client`: valid assertion, but no background user mapped.
    UnauthorizedClient,
}

/// Verifies `assertion` posted to `token_url`; returns the authenticated client.
pub fn verify(
    state: &OAuthState,
    assertion: &str,
    token_url: &str,
    now: u64,
) -> Result<ClientRegistration, Rejection> {
    use Rejection::InvalidClient;
    static PROVIDER: std::sync::Once = std::sync::Once::new();
    // jsonwebtoken panics when it cannot pick a crypto provider from crate features.
    PROVIDER.call_once(|| {
        let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
    });
    let header = jsonwebtoken::decode_header(assertion).map_err(|_| InvalidClient("malformed JWT header"))?;
    let unverified: Value = jsonwebtoken::dangerous::insecure_decode_claims(assertion)
        .map_err(|_| InvalidClient("malformed JWT claims"))?;
    let iss = unverified.get("iss").and_then(Value::as_str).ok_or(InvalidClient("iss missing"))?;
    let client = state.client(iss).ok_or(InvalidClient("unknown client"))?;

    let rsa = matches!(header.alg, Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512);
    let ec = matches!(header.alg, Algorithm::ES256 | Algorithm::ES384);
    let allowed = rsa || (ec && client.jwks_from_url);
    if !allowed {
        return Err(InvalidClient("algorithm not allowed for this client"));
    }
    if header.typ.as_deref().is_some_and(|t| t != "JWT") {
        return Err(InvalidClient("typ is not JWT"));
    }
    let claims = verify_signature(&client, assertion, header.alg, header.kid.as_deref())?;
    check_claims(&claims, &client.client_id, token_url, now)?;
    let jti =
        claims.get("jti").and_then(Value::as_str).ok_or(InvalidClient("jti missing or not a string"))?;
    if jti.is_empty() || jti.chars().count() > MAX_JTI_LEN {
        return Err(InvalidClient("jti empty or longer than 151 characters"));
    }
    let exp = claims.get("exp").and_then(Value::as_u64).unwrap_or(0);
    if !state.remember_jti(&client.client_id, jti, exp, now) {
        return Err(InvalidClient("jti reused"));
    }
    if client.background_user_missing {
        return Err(Rejection::UnauthorizedClient);
    }
    Ok(client)
}

/// Candidate verification keys for `alg`/`kid` from the client's registered set.
fn candidate_keys(client: &ClientRegistration, alg: Algorithm, kid: Option<&str>) -> Vec<Jwk> {
    let Some(set) = client.jwks.as_ref() else { return Vec::new() };
    let keys = set.get("keys").and_then(Value::as_array).cloned().unwrap_or_default();
    let want_kty = if matches!(alg, Algorithm::ES256 | Algorithm::ES384) { "EC" } else { "RSA" };
    keys.into_iter()
        .filter(|k| k.get("kty").and_then(Value::as_str) == Some(want_kty))
        .filter_map(|mut k| {
            if client.jwks_from_url {
                if let (Some(kid), Some(have)) = (kid, k.get("kid").and_then(Value::as_str))
                    && kid != have
                {
                    return None;
                }
            } else {
                // Static upload: Epic keeps only kty, n, e.
                let obj = k.as_object_mut()?;
                obj.retain(|name, _| matches!(name.as_str(), "kty" | "n" | "e"));
            }
            serde_json::from_value::<Jwk>(k).ok()
        })
        .collect()
}

fn verify_signature(
    client: &ClientRegistration,
    assertion: &str,
    alg: Algorithm,
    kid: Option<&str>,
) -> Result<Value, Rejection> {
    let keys = candidate_keys(client, alg, kid);
    if keys.is_empty() {
        return Err(Rejection::InvalidClient("no registered key for this algorithm/kid"));
    }
    let mut validation = Validation::new(alg);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    for jwk in &keys {
        let Ok(key) = DecodingKey::from_jwk(jwk) else { continue };
        if let Ok(data) = jsonwebtoken::decode::<Value>(assertion, &key, &validation) {
            return Ok(data.claims);
        }
    }
    Err(Rejection::InvalidClient("signature does not verify with any registered key"))
}

fn check_claims(claims: &Value, client_id: &str, token_url: &str, now: u64) -> Result<(), Rejection> {
    use Rejection::InvalidClient;
    let str_claim = |name: &str| claims.get(name).and_then(Value::as_str);
    if str_claim("iss") != Some(client_id) || str_claim("sub") != Some(client_id) {
        return Err(InvalidClient("iss and sub must both be the client id"));
    }
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => a == token_url,
        Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(token_url)),
        _ => false,
    };
    if !aud_ok {
        return Err(InvalidClient("aud is not the token endpoint URL"));
    }
    let exp =
        claims.get("exp").and_then(Value::as_u64).ok_or(InvalidClient("exp missing or not an integer"))?;
    if exp <= now {
        return Err(InvalidClient("exp is in the past"));
    }
    if exp > now + MAX_ASSERTION_LIFETIME_SECS {
        return Err(InvalidClient("exp more than 5 minutes in the future"));
    }
    for name in ["nbf", "iat"] {
        match claims.get(name) {
            None => {}
            Some(v) => {
                let t = v.as_u64().ok_or(InvalidClient("nbf/iat not an integer"))?;
                if t > now {
                    return Err(InvalidClient("nbf/iat in the future"));
                }
                if t > exp || exp - t > MAX_ASSERTION_LIFETIME_SECS {
                    return Err(InvalidClient("nbf/iat more than 5 minutes before exp"));
                }
            }
        }
    }
    Ok(())
}
