//! SMART standalone launch (Qlik's "Authenticate" flow) for a confidential client with a
//! client secret.
//!
//! 1. [`PendingLogin::new`] builds the authorize URL:
//!    `{authorize}?response_type=code&client_id&redirect_uri&scope&state&aud&code_challenge&code_challenge_method=S256`
//!    with a short random `state` (22 chars: long states plus JWT codes can overflow the
//!    customer's web server) and a PKCE S256 challenge (Epic supports only S256).
//! 2. The user signs in; the server redirects to `redirect_uri?code=...&state=...`. For a loopback
//!    redirect URI ([`is_loopback`]) a [`LoopbackListener`] captures it; otherwise the user pastes
//!    the code or the whole redirect URL ([`parse_pasted`]).
//! 3. [`PendingLogin::finish`] checks `state`, exchanges the code (`grant_type=authorization_code`,
//!    `code`, `redirect_uri`, `code_verifier`; client secret in HTTP Basic with URL-encoded id and
//!    secret and no `client_id` in the body; public clients send `client_id` instead) and saves
//!    the tokens in the token store. With the loopback listener the browser's connection is held
//!    open until the exchange is done ([`PendingLogin::finish_redirect`]): the page it shows is the
//!    result of the exchange (success, or the token endpoint's error), not just receipt of the code.

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{debug, info};
use url::Url;
use zeroize::Zeroizing;

use crate::discovery::Endpoints;
use crate::store::{StoredTokens, TokenStore};
use crate::token::{self, ClientAuthKind};
use crate::{Error, Result};

/// Scope asked for when none is configured (the sandbox requires a scope).
pub const DEFAULT_SCOPE: &str = "openid fhirUser offline_access";
/// How long the loopback listener waits for the redirect.
pub const DEFAULT_LOGIN_TIMEOUT: Duration = Duration::from_secs(300);
/// Largest HTTP request head read by the loopback listener.
const MAX_REQUEST_HEAD: usize = 16 * 1024;

/// Everything a standalone login needs.
#[derive(Debug, Clone)]
pub struct LaunchSettings {
    /// Client id.
    pub client_id: String,
    /// Client secret (confidential client); `None` for a public client.
    pub client_secret: Option<SecretString>,
    /// Registered redirect URI.
    pub redirect_uri: Url,
    /// Requested scopes, space-separated.
    pub scope: String,
    /// `aud`: the FHIR base URL of the resource server.
    pub audience: String,
    /// OAuth endpoints (authorize is required).
    pub endpoints: Endpoints,
}

/// A login in progress: the authorize URL to open plus the secrets to finish it.
#[derive(Debug)]
pub struct PendingLogin {
    settings: LaunchSettings,
    authorize_url: Url,
    state: String,
    verifier: SecretString,
}

/// What came back on the redirect. Debug never shows the code.
#[derive(Debug, Clone)]
pub struct Callback {
    /// The authorization code.
    pub code: SecretString,
    /// The echoed `state`; `None` when only the bare code was pasted.
    pub state: Option<String>,
}

fn random_b64(bytes: usize) -> Result<String> {
    let mut buf = Zeroizing::new(vec![0u8; bytes]);
    aws_lc_rs::rand::fill(&mut buf)
        .map_err(|_| Error::Redirect { problem: "the system random generator failed".into() })?;
    Ok(URL_SAFE_NO_PAD.encode(&*buf))
}

impl PendingLogin {
    /// Starts a login: fresh `state` and PKCE verifier, authorize URL built.
    pub fn new(settings: LaunchSettings) -> Result<PendingLogin> {
        let authorize = settings.endpoints.authorize.clone().ok_or(Error::Config {
            setting: "auth_base_uri",
            problem: "the server advertises no authorize endpoint; set the Auth Base URI".into(),
        })?;
        if settings.scope.trim().is_empty() {
            return Err(Error::Config {
                setting: "scope",
                problem: "must not be empty (Epic's sandbox requires one)".into(),
            });
        }
        let state = random_b64(16)?;
        let verifier = SecretString::from(random_b64(32)?);
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.expose_secret().as_bytes()));
        let mut authorize_url = authorize;
        authorize_url
            .query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &settings.client_id)
            .append_pair("redirect_uri", settings.redirect_uri.as_str())
            .append_pair("scope", &settings.scope)
            .append_pair("state", &state)
            .append_pair("aud", &settings.audience)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        Ok(PendingLogin { settings, authorize_url, state, verifier })
    }

    /// The URL to open in a browser (holds no secret: state and challenge only).
    pub fn authorize_url(&self) -> &Url {
        &self.authorize_url
    }

    /// The redirect URI of this login.
    pub fn redirect_uri(&self) -> &Url {
        &self.settings.redirect_uri
    }

    /// The `state` sent (tests).
    pub fn state(&self) -> &str {
        &self.state
    }

    /// [`PendingLogin::finish`] for a redirect captured on the loopback listener, then answers
    /// the browser with the result of the exchange (success, or the token endpoint's error).
    pub async fn finish_redirect(
        &self,
        http: &reqwest::Client,
        redirect: Redirect,
        store: &TokenStore,
    ) -> Result<StoredTokens> {
        let result = self.finish(http, redirect.callback.clone(), store).await;
        redirect.respond(&result).await;
        result
    }

    /// Checks `state`, exchanges the code and saves the tokens in `store`.
    pub async fn finish(
        &self,
        http: &reqwest::Client,
        callback: Callback,
        store: &TokenStore,
    ) -> Result<StoredTokens> {
        match callback.state.as_deref() {
            Some(s) if s == self.state => {}
            Some(_) => return Err(Error::StateMismatch),
            None => debug!("Bare code pasted: state cannot be checked."),
        }
        let s = &self.settings;
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", callback.code.expose_secret()),
            ("redirect_uri", s.redirect_uri.as_str()),
            ("code_verifier", self.verifier.expose_secret()),
        ];
        let (kind, basic) = match &s.client_secret {
            Some(secret) => {
                (ClientAuthKind::ClientSecret, Some(token::basic_authorization(&s.client_id, secret)))
            }
            None => {
                form.push(("client_id", s.client_id.as_str()));
                (ClientAuthKind::Public, None)
            }
        };
        let token_url = &s.endpoints.token;
        let response = token::request(http, token_url, &s.client_id, kind, basic.as_ref(), &form).await?;
        let tokens = StoredTokens::from_response(&s.client_id, token_url, Some(s.audience.clone()), response);
        store.save(&tokens)?;
        info!(
            expires_at = %tokens.access_expires_at,
            refreshable = tokens.refresh_token.is_some(),
            path = %store.path().display(),
            "Login complete; tokens saved."
        );
        Ok(tokens)
    }
}

/// Whether `uri` is an `http` loopback address we can listen on ourselves.
pub fn is_loopback(uri: &Url) -> bool {
    uri.scheme() == "http"
        && match uri.host() {
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        }
}

/// A callback from redirect query parameters.
fn callback_from_pairs<'a>(
    pairs: impl Iterator<Item = (std::borrow::Cow<'a, str>, std::borrow::Cow<'a, str>)>,
) -> Result<Callback> {
    let (mut code, mut state, mut error, mut description) = (None, None, None, None);
    for (k, v) in pairs {
        match k.as_ref() {
            "code" => code = Some(SecretString::from(v.into_owned())),
            "state" => state = Some(v.into_owned()),
            "error" => error = Some(v.into_owned()),
            "error_description" => description = Some(v.into_owned()),
            _ => {}
        }
    }
    if let Some(error) = error {
        return Err(Error::AuthorizationDenied { error, description });
    }
    let code = code.ok_or(Error::Redirect { problem: "the redirect has no `code` parameter".into() })?;
    Ok(Callback { code, state })
}

/// Parses what the user pasted: the whole redirect URL (state is then checked) or the bare code.
pub fn parse_pasted(input: &str) -> Result<Callback> {
    let input = input.trim();
    if input.is_empty() {
        return Err(Error::Redirect { problem: "nothing was pasted".into() });
    }
    if let Ok(url) = Url::parse(input)
        && url.query().is_some()
    {
        return callback_from_pairs(url.query_pairs());
    }
    if input.contains("code=") {
        return callback_from_pairs(url::form_urlencoded::parse(input.trim_start_matches('?').as_bytes()));
    }
    if input.chars().any(char::is_whitespace) {
        return Err(Error::Redirect { problem: "paste either the code or the whole redirect URL".into() });
    }
    Ok(Callback { code: SecretString::from(input.to_string()), state: None })
}

/// A listener on a loopback redirect URI that captures the authorization redirect.
#[derive(Debug)]
pub struct LoopbackListener {
    listener: tokio::net::TcpListener,
    path: String,
    addr: SocketAddr,
}

impl LoopbackListener {
    /// Binds the host and port of `redirect_uri` (bind before showing the authorize URL).
    pub async fn bind(redirect_uri: &Url) -> Result<LoopbackListener> {
        if !is_loopback(redirect_uri) {
            return Err(Error::Config {
                setting: "redirect_uri",
                problem: "only http loopback URIs (127.0.0.1, localhost, [::1]) can be listened on".into(),
            });
        }
        let port = redirect_uri.port_or_known_default().unwrap_or(80);
        let ip: std::net::IpAddr = match redirect_uri.host() {
            Some(url::Host::Ipv6(ip)) => ip.into(),
            Some(url::Host::Ipv4(ip)) => ip.into(),
            _ => std::net::Ipv4Addr::LOCALHOST.into(),
        };
        let wanted = SocketAddr::new(ip, port);
        let listener = tokio::net::TcpListener::bind(wanted)
            .await
            .map_err(|source| Error::Listen { addr: wanted.to_string(), source })?;
        let addr =
            listener.local_addr().map_err(|source| Error::Listen { addr: wanted.to_string(), source })?;
        Ok(LoopbackListener { listener, path: redirect_uri.path().to_string(), addr })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits for the redirect (other requests, e.g. `/favicon.ico`, get 404). The browser's
    /// connection is kept open: answer it with [`Redirect::respond`] once the code exchange is
    /// done (or use [`PendingLogin::finish_redirect`]). An error redirect from the authorization
    /// server is answered at once with a failure page and returned as the error.
    pub async fn wait(self, timeout: Duration) -> Result<Redirect> {
        let addr = self.addr.to_string();
        tokio::time::timeout(timeout, self.accept_loop())
            .await
            .map_err(|_| Error::LoginTimeout { addr, seconds: timeout.as_secs() })?
    }

    async fn accept_loop(&self) -> Result<Redirect> {
        loop {
            let (mut stream, _) = self
                .listener
                .accept()
                .await
                .map_err(|source| Error::Listen { addr: self.addr.to_string(), source })?;
            let Some(target) = read_request_target(&mut stream).await else { continue };
            let (path, query) = target.split_once('?').unwrap_or((target.as_str(), ""));
            if path != self.path {
                let _ = stream
                    .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .await;
                continue;
            }
            return match callback_from_pairs(url::form_urlencoded::parse(query.as_bytes())) {
                Ok(callback) => Ok(Redirect { callback, stream }),
                Err(e) => {
                    answer_browser(stream, Err(&e)).await;
                    Err(e)
                }
            };
        }
    }
}

/// A redirect captured by the [`LoopbackListener`], with the browser still waiting for its page.
/// Debug never shows the code.
#[derive(Debug)]
pub struct Redirect {
    callback: Callback,
    stream: tokio::net::TcpStream,
}

impl Redirect {
    /// The code and state of the redirect.
    pub fn callback(&self) -> &Callback {
        &self.callback
    }

    /// Answers the browser with the outcome of the login: success, or the error (its message
    /// names the problem and never holds a secret), then closes the connection.
    pub async fn respond<T>(self, outcome: &Result<T>) {
        answer_browser(self.stream, outcome.as_ref().map(|_| ())).await;
    }
}

/// Writes the result page to the browser and closes the connection (a browser that went away
/// is not an error: the terminal reports the outcome as well).
async fn answer_browser(mut stream: tokio::net::TcpStream, outcome: std::result::Result<(), &Error>) {
    let body = match outcome {
        Ok(()) => "<html><body><h1>Login complete</h1><p>The tokens were obtained and saved. You can \
                   close this window and return to fhirsync.</p></body></html>"
            .to_string(),
        Err(e) => format!(
            "<html><body><h1>Login failed</h1><p>{}</p><p>See the fhirsync terminal for details.</p></body></html>",
            html_escape(&e.to_string())
        ),
    };
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Reads an HTTP request head and returns its request target (`/path?query`).
async fn read_request_target(stream: &mut tokio::net::TcpStream) -> Option<String> {
    let mut buf = Zeroizing::new(Vec::with_capacity(1024));
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 || buf.len() + n > MAX_REQUEST_HEAD {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = std::str::from_utf8(&buf).ok()?;
    let mut parts = head.lines().next()?.split_whitespace();
    (parts.next()? == "GET").then_some(())?;
    parts.next().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loopback detection covers 127.0.0.1, localhost and [::1] over http only.
    #[test]
    fn loopback_detection() {
        for yes in ["http://127.0.0.1:8765/cb", "http://localhost/cb", "http://[::1]:9/x"] {
            assert!(is_loopback(&Url::parse(yes).unwrap()), "{yes}");
        }
        for no in ["https://127.0.0.1/cb", "http://example.com/cb", "https://app.example/cb"] {
            assert!(!is_loopback(&Url::parse(no).unwrap()), "{no}");
        }
    }

    /// A pasted redirect URL yields code and state; a bare code yields no state; errors surface.
    #[test]
    fn pasted_forms() {
        let c = parse_pasted("https://app.example/cb?code=abc%2B1&state=xyz").unwrap();
        assert_eq!((c.code.expose_secret(), c.state.as_deref()), ("abc+1", Some("xyz")));
        let c = parse_pasted("  abc123  \n").unwrap();
        assert_eq!((c.code.expose_secret(), c.state), ("abc123", None));
        let e = parse_pasted("https://app.example/cb?error=access_denied&state=s").unwrap_err();
        assert!(matches!(e, Error::AuthorizationDenied { .. }));
    }
}
