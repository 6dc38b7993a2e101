//! The real OpenID Provider (`tests/idp/server.js`, the npm package `oidc-provider`) for
//! end-to-end tests: discovery, JWKS, client-credentials RFC 9068 JWT access tokens, and a
//! key-rotation control.
//!
//! `make test` installs it (`npm ci` in `tests/idp`). When Node.js or the installed package is
//! missing the tests skip with a loud message, except under `CI=true`, where it is a failure.
//! The provider listens on loopback ports the OS picks and is killed on drop.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::envoy::{ManagedChild, START_TIMEOUT, missing_tool, repo_root};

/// The provider's static client with every scope (`read:documents write:documents
/// delete:documents admin`); its tokens carry `roles: ["admin"]`.
pub const CLIENT_ID: &str = "portcullis-test";
pub const CLIENT_SECRET: &str = "portcullis-test-secret";
/// A second client allowed only `read:documents`; its tokens carry `roles: ["viewer"]`.
pub const READER_CLIENT_ID: &str = "portcullis-reader";
pub const READER_CLIENT_SECRET: &str = "portcullis-reader-secret";
/// A user-like client (`read:documents write:documents`, `roles: ["user"]`) whose tokens say it
/// signed in with a password only: `amr: ["pwd"]`, `acr: "urn:example:loa:1"`, `auth_time`.
pub const WRITER_CLIENT: (&str, &str) = ("portcullis-writer", "portcullis-writer-secret");
/// Like [`WRITER_CLIENT`], but its tokens record a second factor: `amr: ["pwd", "otp"]`,
/// `acr: "urn:example:loa:2"`.
pub const MFA_CLIENT: (&str, &str) = ("portcullis-mfa", "portcullis-mfa-secret");

/// A client whose access tokens are OPAQUE even with a `resource` (which becomes their `aud`
/// at introspection): `read:documents write:documents`, `roles: ["user"]`.
pub const OPAQUE_CLIENT: (&str, &str) = ("portcullis-opaque", "portcullis-opaque-secret");
/// The client a relying party introspects with, by `client_secret_basic`.
pub const INTROSPECTOR_CLIENT: (&str, &str) =
    ("portcullis-introspector", "portcullis-introspector-secret");
/// The client a relying party introspects with, by `client_secret_post`.
pub const INTROSPECTOR_POST_CLIENT: (&str, &str) = (
    "portcullis-introspector-post",
    "portcullis-introspector-post-secret",
);

/// The key state the provider reports (`GET /state` on its admin port).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct IdpState {
    pub issuer: String,
    pub signing_alg: String,
    /// Key ids per algorithm, current signing key first.
    pub keys: std::collections::BTreeMap<String, Vec<String>>,
    /// JWKS documents served so far.
    pub jwks_requests: u64,
    /// Milliseconds since the last JWKS request; `None` before the first.
    pub ms_since_last_jwks_request: Option<u64>,
    /// Introspection requests served so far.
    #[serde(default)]
    pub introspection_requests: u64,
}

#[derive(Debug, serde::Deserialize)]
struct TokenResponse {
    access_token: String,
}

/// A running provider, killed on drop.
pub struct Idp {
    process: ManagedChild,
    issuer: String,
    admin: String,
    http: reqwest::Client,
}

impl Idp {
    /// Starts the provider and waits (bounded) for its ready line. `None` when Node.js or the
    /// provider's packages are not installed (a loud skip; a panic under CI).
    pub async fn start() -> Option<Self> {
        let dir = repo_root().join("tests/idp");
        let node = node_binary()?;
        if !dir.join("node_modules/oidc-provider").is_dir() {
            return missing_tool(
                "the test OpenID Provider's packages (tests/idp/node_modules)",
                "`make deps` (or `cd tests/idp && npm ci`)",
            );
        }
        let mut command = Command::new(node);
        command
            .current_dir(&dir)
            .arg("server.js")
            .args(["--port", "0", "--admin-port", "0"]);
        let mut process = ManagedChild::spawn("idp", command);
        let line = process.wait_for_line("idp ready ", START_TIMEOUT);
        // "idp ready http://127.0.0.1:PORT admin http://127.0.0.1:ADMIN_PORT"
        let words: Vec<&str> = line.split_whitespace().collect();
        let (issuer, admin) = match words.as_slice() {
            ["idp", "ready", issuer, "admin", admin] => ((*issuer).to_owned(), (*admin).to_owned()),
            _ => panic!("unexpected idp ready line: {line:?}"),
        };
        Some(Self {
            process,
            issuer,
            admin,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("reqwest client"),
        })
    }

    /// The issuer (`iss` of its tokens, and the base of discovery): `http://127.0.0.1:PORT`.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// `{issuer}/.well-known/openid-configuration`.
    pub fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.issuer)
    }

    /// The provider's JWKS document URL.
    pub fn jwks_uri(&self) -> String {
        format!("{}/jwks", self.issuer)
    }

    /// An RFC 9068 JWT access token for `CLIENT_ID` through the client-credentials grant, with
    /// `aud` = `resource` and `scope` = `scopes` (space separated), signed with the current key.
    pub async fn token(&self, scopes: &[&str], resource: &str) -> String {
        self.token_for(CLIENT_ID, CLIENT_SECRET, scopes, Some(resource))
            .await
            .unwrap_or_else(|e| panic!("idp token request failed: {e}"))
    }

    /// An access token for `client` (id, secret) with `aud` = `resource`: a JWT, or an opaque
    /// one for [`OPAQUE_CLIENT`].
    pub async fn token_as(&self, client: (&str, &str), scopes: &[&str], resource: &str) -> String {
        self.token_for(client.0, client.1, scopes, Some(resource))
            .await
            .unwrap_or_else(|e| panic!("idp token request for {} failed: {e}", client.0))
    }

    /// The client-credentials grant for any client; without `resource` the provider issues an
    /// opaque token (introspectable), with it a JWT. `Err` carries the provider's error body.
    pub async fn token_for(
        &self,
        client_id: &str,
        client_secret: &str,
        scopes: &[&str],
        resource: Option<&str>,
    ) -> Result<String, String> {
        let scope = scopes.join(" ");
        let mut form = vec![
            ("grant_type", "client_credentials"),
            ("scope", scope.as_str()),
        ];
        if let Some(resource) = resource {
            form.push(("resource", resource));
        }
        let (status, text) = self
            .post_form("/token", (client_id, client_secret), &form)
            .await?;
        if !status.is_success() {
            return Err(format!("{status}: {text}"));
        }
        serde_json::from_str::<TokenResponse>(&text)
            .map(|t| t.access_token)
            .map_err(|e| format!("{e}: {text}"))
    }

    /// POSTs `form` (`application/x-www-form-urlencoded`) to the provider's `path`,
    /// authenticated as `client` (id, secret) with HTTP Basic: the status and the body.
    async fn post_form(
        &self,
        path: &str,
        client: (&str, &str),
        form: &[(&str, &str)],
    ) -> Result<(reqwest::StatusCode, String), String> {
        let body = form
            .iter()
            .map(|(k, v)| format!("{k}={}", form_encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let response = self
            .http
            .post(format!("{}{path}", self.issuer))
            .basic_auth(client.0, Some(client.1))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let text = response.text().await.map_err(|e| e.to_string())?;
        Ok((status, text))
    }

    /// Adds a new key for the current signing algorithm and makes it current; the old key stays
    /// published. Returns the new key id.
    pub async fn rotate_key(&self) -> String {
        let state = self.admin_post("/rotate").await;
        state.keys[&state.signing_alg][0].clone()
    }

    /// Removes every key of the current signing algorithm but the current one from the JWKS.
    /// Returns the key ids still published for that algorithm.
    pub async fn retire_old_key(&self) -> Vec<String> {
        let state = self.admin_post("/retire").await;
        state.keys[&state.signing_alg].clone()
    }

    /// The provider's RFC 7662 introspection endpoint.
    pub fn introspection_url(&self) -> String {
        format!("{}/token/introspection", self.issuer)
    }

    /// Revokes `token` at the provider (RFC 7009 `POST /token/revocation`), authenticated as
    /// the `client` (id, secret) it was issued to.
    pub async fn revoke(&self, client: (&str, &str), token: &str) {
        let (status, text) = self
            .post_form("/token/revocation", client, &[("token", token)])
            .await
            .unwrap_or_else(|e| panic!("idp revocation failed: {e}"));
        assert!(
            status.is_success(),
            "idp revocation answered {status}: {text}"
        );
    }

    /// How the introspection endpoint answers from now on: `normal`, `not-json`, `no-active`
    /// (JSON without `active`) or `slow` (after 3 s).
    pub async fn set_introspection_mode(&self, mode: &str) {
        self.admin_post(&format!("/introspection?mode={mode}"))
            .await;
    }

    /// Signs subsequent tokens with `alg` (`RS256` or `ES256`).
    pub async fn set_signing_alg(&self, alg: &str) {
        self.admin_post(&format!("/signing-alg?alg={alg}")).await;
    }

    /// The provider's key state and JWKS request counters.
    pub async fn state(&self) -> IdpState {
        self.http
            .get(format!("{}/state", self.admin))
            .send()
            .await
            .expect("idp admin /state")
            .json()
            .await
            .expect("idp /state JSON")
    }

    async fn admin_post(&self, path: &str) -> IdpState {
        let response = self
            .http
            .post(format!("{}{path}", self.admin))
            .send()
            .await
            .unwrap_or_else(|e| panic!("idp admin {path}: {e}"));
        assert!(
            response.status().is_success(),
            "idp admin {path} answered {}",
            response.status()
        );
        response.json().await.expect("idp admin JSON")
    }

    /// Everything the provider printed (for failure messages).
    pub fn logs(&self) -> String {
        self.process.output()
    }
}

fn node_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PORTCULLIS_NODE").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("node"))
            .find(|p| p.is_file())
    });
    match found {
        Some(path) => Some(path),
        None => missing_tool("Node.js (node)", "`make deps` (installs nodejs and npm)"),
    }
}

/// `application/x-www-form-urlencoded` value encoding.
fn form_encode(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC)
        .to_string()
        .replace("%20", "+")
}
