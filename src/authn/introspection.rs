//! OAuth 2.0 token introspection (RFC 7662): asks an issuer's introspection endpoint whether a
//! token is active, for opaque bearer tokens (which only the provider can check) and for JWTs
//! on routes that say `require.introspect` (so a token revoked at the provider stops at once).
//!
//! One [`Introspector`] per `introspection` entry and configuration generation. Its answers are
//! kept in a bounded cache keyed by the token's SHA-256: an active token until the earlier of
//! its `exp` and the configured `cache_ttl`, a refused one (`active: false`, expired, wrong
//! audience) for `negative_cache_ttl`, a failure (endpoint down, slow, garbage) not at all.
//! Concurrent checks of one token share one call (single-flight: the first caller asks, the
//! others wait for its answer). A response is checked like a JWT's claims: `active` must be
//! `true`, `iss` (when sent) ours, `aud` one of the issuer's audiences, `exp`/`nbf` with the
//! issuer's clock skew, `token_type` (when sent) `Bearer` and no `cnf` (a sender-constrained
//! token needs a proof portcullis does not check); subject, scopes and roles are read under the entry's member names.
//! Anything that is not a well-formed answer is a 503, never an allow.
//!
//! This module must never log, cache or return a token (only its hash) or the client secret,
//! and never follow a redirect (`fetch` holds the URL rule, timeout and size cap).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Expiry;
use serde_json::{Map, Value};
use tokio::sync::OnceCell;

use super::cache::{MAX_ENTRY_LIFETIME, TokenHash, unix_now};
use super::jwt::{check_audience, identity_from_claims, lookup, numeric_date};
use super::{AuthnError, ClaimPaths, IssuerConfig};
use crate::decision::{TokenProblem, Unavailable};
use crate::error::ErrorChain;
use crate::fetch;
use crate::identity::{AuthMethod, CachePolicy, Identity};

/// Default longest time an active answer is served from the cache (never past the token's
/// `exp`): how long a token revoked at the provider may still pass.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(60);
/// Default time a refused answer (`active: false`, expired, wrong audience) is remembered.
pub const DEFAULT_NEGATIVE_CACHE_TTL: Duration = Duration::from_secs(10);
/// Default bound of one introspection call, below the 0.5 s `ext_authz` timeout of the
/// committed Envoy configuration, so portcullis answers its 503 before Envoy gives up.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(400);
/// Default largest introspection response accepted.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Name of the CLIENT span of one introspection call.
pub const INTROSPECTION_SPAN: &str = "portcullis.introspection";

/// Where the introspection endpoint comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// This URL (checked against the fetch URL rule at load).
    Url(String),
    /// `introspection_endpoint` of `{issuer}/.well-known/openid-configuration` (whose `issuer`
    /// must equal ours), read on first use.
    Discovery,
}

/// How portcullis authenticates to the endpoint (RFC 6749 §2.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// HTTP Basic with the form-encoded client id and secret (the default).
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
}

impl ClientAuth {
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "client_secret_basic" => Some(Self::ClientSecretBasic),
            "client_secret_post" => Some(Self::ClientSecretPost),
            _ => None,
        }
    }
}

/// Where the client secret is read from when the configuration is loaded. Never inline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// A file's content, surrounding whitespace trimmed.
    File(PathBuf),
    /// An environment variable of the portcullis process.
    Env(String),
}

/// The client secret. Its `Debug` never shows it, so a stray `{:?}` of a configuration cannot
/// log it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ClientSecret(String);

impl ClientSecret {
    pub fn new(secret: String) -> Self {
        Self(secret)
    }

    fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientSecret(<redacted>)")
    }
}

/// One `introspection` entry, validated (the secret read by `config::load`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntrospectionConfig {
    /// The `name` of the `issuers` entry whose tokens this endpoint answers for (its `issuer`,
    /// audiences, clock skew, claim headers and MFA methods apply to the answers).
    pub issuer: String,
    pub endpoint: Endpoint,
    pub client_id: String,
    pub secret_source: SecretSource,
    pub client_secret: ClientSecret,
    pub auth_method: ClientAuth,
    /// Longest time an active answer is cached (never past the token's `exp`).
    pub cache_ttl: Duration,
    /// Time a refused answer is cached.
    pub negative_cache_ttl: Duration,
    /// Bound of one call (connect, request, response).
    pub timeout: Duration,
    pub max_response_bytes: usize,
    /// Response member holding the subject (default `sub`).
    pub subject: String,
    /// Response member holding the roles; `None`: the issuer's `claims.roles`.
    pub roles: Option<String>,
    /// Whether bearer tokens that are not JWTs are sent here (at most one entry).
    pub opaque_tokens: bool,
    pub allow_insecure_http: bool,
}

/// A settled or pending answer for one token hash, shared by every concurrent check of it.
#[derive(Default)]
struct Slot {
    answer: OnceCell<Result<Arc<Identity>, AuthnError>>,
}

/// Keeps each slot as long as its answer deserves: an active identity until its deadline, a
/// refusal for the negative TTL, a failure not at all, a pending call at most a little longer
/// than the call may take.
struct SlotExpiry {
    negative: Duration,
    pending: Duration,
}

impl SlotExpiry {
    fn lifetime(&self, slot: &Slot) -> Duration {
        match slot.answer.get() {
            None => self.pending,
            Some(Ok(identity)) => {
                let until = identity.cached_until().unwrap_or(0);
                Duration::from_secs(until.saturating_sub(unix_now())).min(MAX_ENTRY_LIFETIME)
            }
            Some(Err(AuthnError::Invalid(_))) => self.negative,
            Some(Err(AuthnError::Unavailable(_))) => Duration::ZERO,
        }
    }
}

impl Expiry<TokenHash, Arc<Slot>> for SlotExpiry {
    fn expire_after_create(
        &self,
        _key: &TokenHash,
        slot: &Arc<Slot>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(self.lifetime(slot))
    }

    fn expire_after_update(
        &self,
        _key: &TokenHash,
        slot: &Arc<Slot>,
        _updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(self.lifetime(slot))
    }
}

/// Asks one issuer's introspection endpoint, with a bounded single-flight answer cache.
pub struct Introspector {
    config: IntrospectionConfig,
    /// The issuer, with its claim paths replaced by the entry's member names.
    issuer: IssuerConfig,
    /// `None` when the HTTP client could not be built: every call then fails closed.
    client: Option<reqwest::Client>,
    endpoint: OnceCell<reqwest::Url>,
    slots: moka::sync::Cache<TokenHash, Arc<Slot>>,
}

impl std::fmt::Debug for Introspector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print cached identities.
        f.debug_struct("Introspector")
            .field("issuer", &self.config.issuer)
            .field("entries", &self.slots.entry_count())
            .finish_non_exhaustive()
    }
}

/// Why a call produced no answer; the text names the issuer and the redacted URL only.
#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error(transparent)]
    Fetch(#[from] fetch::FetchError),
    #[error("introspection endpoint URL refused")]
    Url(#[source] fetch::UrlError),
    #[error("discovery document: {0}")]
    Discovery(&'static str),
    #[error("the HTTP client could not be built")]
    NoClient,
}

impl Introspector {
    /// An introspector for `config`, answering for `issuer`, caching at most `capacity`
    /// answers.
    pub fn new(config: IntrospectionConfig, issuer: &IssuerConfig, capacity: u64) -> Self {
        let mut mapped = issuer.clone();
        mapped.claims = ClaimPaths {
            subject: config.subject.clone(),
            // RFC 7662 §2.2: `scope` is a space-separated string.
            scopes: Some("scope".to_owned()),
            roles: config.roles.clone().or_else(|| issuer.claims.roles.clone()),
        };
        let expiry = SlotExpiry {
            negative: config.negative_cache_ttl,
            pending: config.timeout.saturating_mul(2) + Duration::from_secs(1),
        };
        let client = match fetch::client() {
            Ok(client) => Some(client),
            Err(error) => {
                tracing::error!(
                    issuer.name = %config.issuer,
                    error = %ErrorChain(&error),
                    "introspection: cannot build the HTTP client; its tokens are refused (503)"
                );
                None
            }
        };
        Self {
            issuer: mapped,
            client,
            endpoint: OnceCell::new(),
            slots: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .expire_after(expiry)
                .build(),
            config,
        }
    }

    /// The `iss` value of the issuer this endpoint answers for.
    pub fn issuer(&self) -> &str {
        &self.issuer.issuer
    }

    /// Whether opaque bearer tokens are sent to this endpoint.
    pub fn takes_opaque_tokens(&self) -> bool {
        self.config.opaque_tokens
    }

    /// The identity the endpoint vouches for `token` (whose SHA-256 is `hash`), from the cache
    /// or from one call shared with every concurrent check of the same token; or why not.
    pub async fn introspect(
        &self,
        token: &str,
        hash: TokenHash,
    ) -> Result<Arc<Identity>, AuthnError> {
        let slot = self.slots.get_with(hash, || Arc::new(Slot::default()));
        let mut asked = false;
        let answer = slot
            .answer
            .get_or_init(|| {
                asked = true;
                self.ask(token)
            })
            .await
            .clone();
        if asked {
            // Settled: insert again so the slot's expiry follows the answer.
            self.slots.insert(hash, slot);
        }
        answer
    }

    /// One call to the endpoint, bounded by the entry's timeout.
    async fn ask(&self, token: &str) -> Result<Arc<Identity>, AuthnError> {
        let issuer = opentelemetry::KeyValue::new("issuer.name", self.config.issuer.clone());
        let body = fetch::in_client_span(INTROSPECTION_SPAN, vec![issuer], self.call(token))
            .await
            .map_err(|error| {
                let why = match &error {
                    CallError::Fetch(fetch::FetchError::TooLarge { .. }) => {
                        Unavailable::IntrospectionBadResponse
                    }
                    _ => Unavailable::IntrospectionUnreachable,
                };
                tracing::warn!(
                    issuer.name = %self.config.issuer,
                    error = %ErrorChain(&error),
                    "introspection failed; the token is refused (503)"
                );
                AuthnError::Unavailable(why)
            })?;
        match read_answer(&body, &self.issuer, self.config.cache_ttl, unix_now()) {
            Ok(identity) => Ok(Arc::new(identity)),
            Err(Answer::Refused(problem)) => Err(AuthnError::Invalid(problem)),
            Err(Answer::Garbage(what)) => {
                tracing::warn!(
                    issuer.name = %self.config.issuer,
                    reason = what,
                    "introspection answered an invalid response; the token is refused (503)"
                );
                Err(AuthnError::Unavailable(
                    Unavailable::IntrospectionBadResponse,
                ))
            }
        }
    }

    async fn call(&self, token: &str) -> Result<Vec<u8>, CallError> {
        let client = self.client.as_ref().ok_or(CallError::NoClient)?;
        let limits = fetch::Limits {
            timeout: self.config.timeout,
            max_bytes: self.config.max_response_bytes,
        };
        let url = self
            .endpoint
            .get_or_try_init(|| self.resolve_endpoint(client, limits))
            .await?;
        let secret = self.config.client_secret.expose();
        let mut form = vec![("token", token), ("token_type_hint", "access_token")];
        let basic = match self.config.auth_method {
            ClientAuth::ClientSecretBasic => Some((self.config.client_id.as_str(), secret)),
            ClientAuth::ClientSecretPost => {
                form.push(("client_id", &self.config.client_id));
                form.push(("client_secret", secret));
                None
            }
        };
        let fetched =
            fetch::post_form(client, url, "application/json", limits, &form, basic).await?;
        Ok(fetched.body)
    }

    /// The configured URL, or discovery's `introspection_endpoint`; both under the URL rule.
    async fn resolve_endpoint(
        &self,
        client: &reqwest::Client,
        limits: fetch::Limits,
    ) -> Result<reqwest::Url, CallError> {
        let allow_http = self.config.allow_insecure_http;
        let raw = match &self.config.endpoint {
            Endpoint::Url(url) => url.clone(),
            Endpoint::Discovery => {
                let issuer = &self.issuer.issuer;
                let discovery = format!(
                    "{}/.well-known/openid-configuration",
                    issuer.trim_end_matches('/')
                );
                let url = fetch::checked_url(&discovery, allow_http).map_err(CallError::Url)?;
                let fetched = fetch::get(client, &url, "application/json", limits).await?;
                let document: Map<String, Value> = serde_json::from_slice(&fetched.body)
                    .map_err(|_| CallError::Discovery("not a JSON object"))?;
                if document.get("issuer").and_then(Value::as_str) != Some(issuer.as_str()) {
                    return Err(CallError::Discovery("its `issuer` is not ours"));
                }
                document
                    .get("introspection_endpoint")
                    .and_then(Value::as_str)
                    .ok_or(CallError::Discovery("no `introspection_endpoint`"))?
                    .to_owned()
            }
        };
        fetch::checked_url(&raw, allow_http).map_err(CallError::Url)
    }
}

/// Why a response yields no identity.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    /// A well-formed answer that refuses the token (401).
    Refused(TokenProblem),
    /// Not an RFC 7662 response (503); the text says what was wrong, never a value.
    Garbage(&'static str),
}

/// The identity an introspection response vouches for at `now`, cached until `now + ttl` at
/// most; or why not. Members of the wrong type make the whole answer garbage (the endpoint is
/// not what the configuration says it is), never a partial identity.
fn read_answer(
    body: &[u8],
    issuer: &IssuerConfig,
    ttl: Duration,
    now: u64,
) -> Result<Identity, Answer> {
    let Ok(Value::Object(members)) = serde_json::from_slice::<Value>(body) else {
        return Err(Answer::Garbage("not a JSON object"));
    };
    match members.get("active") {
        Some(Value::Bool(true)) => {}
        Some(Value::Bool(false)) => return Err(Answer::Refused(TokenProblem::Inactive)),
        Some(_) => return Err(Answer::Garbage("`active` is not a boolean")),
        None => return Err(Answer::Garbage("no `active` member")),
    }
    let date = |name: &'static str| match members.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => numeric_date(value)
            .map(Some)
            .ok_or(Answer::Garbage("a date member is not a number")),
    };
    let (exp, nbf) = (date("exp")?, date("nbf")?);
    date("iat")?;
    let is_string = |value: Option<&Value>| matches!(value, None | Some(Value::String(_)));
    if !is_string(members.get("scope")) {
        return Err(Answer::Garbage("`scope` is not a string"));
    }
    if !is_string(lookup(&members, &issuer.claims.subject)) {
        return Err(Answer::Garbage("the subject member is not a string"));
    }
    if !is_string(members.get("iss")) {
        return Err(Answer::Garbage("`iss` is not a string"));
    }
    if !is_string(members.get("token_type")) {
        return Err(Answer::Garbage("`token_type` is not a string"));
    }
    let strings = |value: Option<&Value>| match value {
        None | Some(Value::String(_)) => true,
        Some(Value::Array(items)) => items.iter().all(Value::is_string),
        Some(_) => false,
    };
    if !strings(members.get("aud")) {
        return Err(Answer::Garbage(
            "`aud` is not a string or a list of strings",
        ));
    }
    if let Some(roles) = &issuer.claims.roles
        && !strings(lookup(&members, roles))
    {
        return Err(Answer::Garbage(
            "the roles member is not a string or a list of strings",
        ));
    }

    let skew = issuer.clock_skew.as_secs();
    if exp.is_some_and(|exp| exp.saturating_add(skew) <= now) {
        return Err(Answer::Refused(TokenProblem::Expired));
    }
    if nbf.is_some_and(|nbf| nbf > now.saturating_add(skew)) {
        return Err(Answer::Refused(TokenProblem::NotYetValid));
    }
    // The endpoint speaks for this issuer only: an answer naming another is not ours to trust.
    if members
        .get("iss")
        .and_then(Value::as_str)
        .is_some_and(|iss| iss != issuer.issuer)
    {
        return Err(Answer::Refused(TokenProblem::UnknownIssuer));
    }
    // Only a bearer access token may be used as one: a refresh token, or a sender-constrained
    // token (DPoP, mTLS: `cnf`) whose proof of possession portcullis does not check, is refused.
    let bearer = members
        .get("token_type")
        .and_then(Value::as_str)
        .is_none_or(|kind| kind.eq_ignore_ascii_case("bearer"));
    if !bearer || members.contains_key("cnf") {
        return Err(Answer::Refused(TokenProblem::WrongType));
    }
    check_audience(members.get("aud"), &issuer.audiences).map_err(Answer::Refused)?;
    let mut identity = identity_from_claims(members, issuer).map_err(Answer::Refused)?;
    identity.method = AuthMethod::Introspection;
    identity.key_id = None;
    identity.cache_policy = CachePolicy::Until(now.saturating_add(ttl.as_secs()));
    Ok(identity)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::jwt::testing::issuer;
    use super::*;

    const NOW: u64 = 1_700_000_000;
    const TTL: Duration = Duration::from_secs(60);

    fn read(body: &Value) -> Result<Identity, Answer> {
        read_answer(body.to_string().as_bytes(), &issuer(), TTL, NOW)
    }

    fn active() -> Value {
        let issuer = issuer();
        json!({
            "active": true,
            "sub": "svc-reports",
            "scope": "read:documents write:documents",
            "aud": issuer.audiences[0],
            "iss": issuer.issuer,
            "exp": NOW + 600,
            "iat": NOW - 10,
            "roles": ["user"],
            "token_type": "Bearer",
        })
    }

    fn with(changes: Value) -> Value {
        let mut body = active();
        for (name, value) in changes.as_object().into_iter().flatten() {
            if value.is_null() {
                body.as_object_mut().map(|m| m.remove(name));
            } else {
                body[name] = value.clone();
            }
        }
        body
    }

    #[test]
    fn an_active_answer_becomes_an_introspection_identity_cached_until_the_earlier_deadline() {
        let identity = read(&active()).expect("active");
        assert_eq!(identity.method, AuthMethod::Introspection);
        assert_eq!(identity.subject, "svc-reports");
        assert_eq!(identity.scopes, ["read:documents", "write:documents"]);
        assert_eq!(identity.roles, ["user"]);
        assert_eq!(identity.cache_policy, CachePolicy::Until(NOW + 60));
        assert_eq!(identity.cached_until(), Some(NOW + 60));
        let short = read(&with(json!({"exp": NOW + 5}))).expect("active");
        assert_eq!(short.cached_until(), Some(NOW + 5));
    }

    #[test]
    fn refuses_inactive_expired_foreign_and_other_audience_answers() {
        let cases = [
            (json!({"active": false}), TokenProblem::Inactive),
            (with(json!({"exp": NOW - 3600})), TokenProblem::Expired),
            (with(json!({"nbf": NOW + 3600})), TokenProblem::NotYetValid),
            (
                with(json!({"aud": "billing-api"})),
                TokenProblem::WrongAudience,
            ),
            (with(json!({"aud": null})), TokenProblem::MissingClaim),
            (with(json!({"sub": null})), TokenProblem::MissingClaim),
            (
                with(json!({"iss": "https://evil.example.com"})),
                TokenProblem::UnknownIssuer,
            ),
            (with(json!({"sub": " admin"})), TokenProblem::UnsafeClaim),
            (
                with(json!({"token_type": "refresh_token"})),
                TokenProblem::WrongType,
            ),
            (with(json!({"token_type": "DPoP"})), TokenProblem::WrongType),
            (
                with(json!({"cnf": {"jkt": "0ZcOCORZNYy"}})),
                TokenProblem::WrongType,
            ),
        ];
        for (body, problem) in cases {
            assert_eq!(
                read(&body).map(|_| ()),
                Err(Answer::Refused(problem)),
                "{body}"
            );
        }
    }

    #[test]
    fn garbage_is_never_an_identity() {
        let bodies: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"<html>oops</html>".to_vec(),
            b"[true]".to_vec(),
            b"{\"active\": \"true\"}".to_vec(),
            json!({"sub": "a"}).to_string().into_bytes(),
            with(json!({"exp": "tomorrow"})).to_string().into_bytes(),
            with(json!({"scope": ["read:documents"]}))
                .to_string()
                .into_bytes(),
            with(json!({"aud": 7})).to_string().into_bytes(),
            with(json!({"sub": 42})).to_string().into_bytes(),
            with(json!({"token_type": 1})).to_string().into_bytes(),
            with(json!({"roles": {"admin": true}}))
                .to_string()
                .into_bytes(),
            vec![0xff, 0xfe, b'{'],
        ];
        for body in bodies {
            assert!(
                matches!(
                    read_answer(&body, &issuer(), TTL, NOW),
                    Err(Answer::Garbage(_))
                ),
                "{}",
                String::from_utf8_lossy(&body)
            );
        }
    }
}
