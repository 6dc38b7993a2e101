//! The engine: route → authenticate (token cache, then, for a token it does not vouch for, the
//! failed-attempt limit and verification) → revocation (on every request, cache hits included,
//! when `revocation:` is configured) → authorize → `Decision`.
//!
//! An `Engine` is immutable and built whole from one validated `Config`; a reload builds a new
//! one and swaps it in, so every request sees exactly one configuration. It knows nothing of
//! gRPC or protobuf.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use crate::authn::api_keys::{self, ApiKeyRegistry};
use crate::authn::attempts::AttemptLimiter;
use crate::authn::credentials::{self, ApiKeySource, Extraction, Presented};
use crate::authn::{Authenticator, AuthnError, CacheCounters, KeyRegistry, Lookup};
use crate::authz::hygiene::HygieneProblem;
use crate::authz::path;
use crate::authz::routes::RouteTable;
use crate::authz::{self, Mode, OnDeny, Policy, Refusal, Requirements, Resource, Route};
use crate::config::Config;
use crate::decision::{
    Decision, Denial, DenyReason, Hidden, Identity, Permit, ResponseSettings, StepUp, TokenProblem,
};
use crate::input::CheckInput;
use crate::revocation::Revocations;

/// Prefix of the identity headers portcullis owns; clients may never send them upstream.
pub const IDENTITY_HEADER_PREFIX: &str = "x-auth-";

/// The current engine, swapped whole on reload; each request takes one snapshot.
pub type SharedEngine = Arc<arc_swap::ArcSwap<Engine>>;

/// The stores that live as long as the process, handed to every engine generation: the key
/// registry (a reload keeps the keys of the issuers it keeps), the token-cache counters (the
/// counts outlive a reload), the API keys store (a reload that keeps the keys file keeps its
/// watcher and per-key counters) and the revocation store its sources feed. Cloning it clones
/// handles; `Shared::default()` makes fresh ones (a test, or the app at start).
#[derive(Debug, Clone, Default)]
pub struct Shared {
    pub keys: Arc<KeyRegistry>,
    pub cache_counters: Arc<CacheCounters>,
    pub api_keys: Arc<ApiKeyRegistry>,
    pub revocations: Arc<Revocations>,
}

#[derive(Debug)]
pub struct Engine {
    routes: RouteTable,
    authn: Authenticator,
    response: ResponseSettings,
    anonymous: Arc<Identity>,
    /// Every header name any issuer's claim mapping may set, folded ([`fold_header_byte`]): a
    /// client-sent value for one of them is removed whenever we do not set it ourselves, like
    /// `x-auth-*`.
    claim_header_names: Vec<String>,
    /// Failed authentications per source (`limits.failed_attempts`); `None` when off. Its counts
    /// belong to this generation: a reload starts them afresh.
    attempts: Option<AttemptLimiter>,
    /// Where API keys are read from; `None` without `api_keys` (then only bearer tokens).
    api_key_source: Option<ApiKeySource>,
    /// The revocation store, consulted on every authenticated request; `None` without
    /// `revocation:`, and then no request pays for a check.
    revocations: Option<Arc<Revocations>>,
}

impl Engine {
    /// Builds the engine for `config` on the app-lifetime stores of `shared`: key stores come
    /// from its registry, and the token cache counts into its counters.
    pub fn new(config: &Config, shared: &Shared) -> Self {
        let mut authn = Authenticator::new(
            &config.issuers,
            &shared.keys,
            config.authn.clone(),
            shared.cache_counters.clone(),
        );
        let api_key_source = config.api_keys.as_ref().map(|settings| {
            let store = shared
                .api_keys
                .store_for(settings, crate::config::keys_file::load_entries);
            authn.accept_api_keys(store, settings.env);
            ApiKeySource {
                header: settings.header.clone(),
                scheme: settings.authorization_scheme.clone(),
            }
        });
        if !config.introspection.is_empty() {
            authn.accept_introspection(&config.introspection);
        }
        Self {
            routes: RouteTable::new(config.routes.clone()),
            authn,
            response: config.response.clone(),
            anonymous: Arc::new(Identity::anonymous()),
            claim_header_names: claim_header_names(config)
                .into_iter()
                .map(|name| {
                    name.bytes()
                        .map(|b| char::from(fold_header_byte(b)))
                        .collect()
                })
                .collect(),
            attempts: attempt_limiter(config),
            api_key_source,
            revocations: config
                .revocation
                .is_some()
                .then(|| shared.revocations.clone()),
        }
    }

    pub fn authenticator(&self) -> &Authenticator {
        &self.authn
    }

    /// Decides one request.
    pub async fn check(&self, input: &CheckInput) -> Decision {
        let RequestLine {
            path: target,
            query,
            host,
        } = match request_line(input) {
            Ok(line) => line,
            Err(reason) => return Decision::deny(None, reason),
        };
        let Some((route, params)) = self.routes.find(&input.method, &host, &target) else {
            return self.no_route();
        };
        let resource = Resource {
            route: &route.name,
            method: &input.method,
            host: &host,
            path: &target,
            params,
            now: crate::authn::cache::unix_now(),
            headers: &input.headers,
            query,
            source: input.source,
            principal: input.source_principal.as_deref(),
        };

        let requirements = match &route.policy {
            Policy::Anonymous => return self.permit(route, self.anonymous.clone(), input, None),
            Policy::Require(requirements) => requirements,
        };
        let deny = |reason| self.deny(route, reason);

        let credential =
            match credentials::extract_with(&input.headers, self.api_key_source.as_ref()) {
                Extraction::Found(credential) => Some(credential),
                Extraction::Missing => return deny(DenyReason::MissingCredential),
                Extraction::Malformed => None,
            };
        // A credential the cache already vouches for is served without asking the limiter: a
        // credential proven valid is never refused because its address is shared with
        // someone who keeps failing (design.md, "Safety of defaults"). One cache look-up;
        // `lookup` and `verify` dispatch on the credential's kind.
        let identity = match credential.map(|credential| self.authn.lookup(credential)) {
            Some(Lookup::Cached(identity)) => identity,
            unverified => {
                // New, unverified work: refused before any parsing or signature work when the
                // source keeps failing, so it cannot make us spend CPU on its tokens either.
                let source = self.attempt_source(input);
                if let Some(attempts) = &self.attempts
                    && let Err(limited) = attempts.check(source)
                {
                    return deny(DenyReason::TooManyAttempts {
                        retry_after: limited.retry_after,
                    });
                }
                let Some(Lookup::Unverified(pending)) = unverified else {
                    self.failed_attempt(source);
                    return deny(DenyReason::InvalidToken(TokenProblem::Malformed));
                };
                // Boxed: verification may fetch keys (an HTTP client's future, kilobytes), and
                // inline it would make every check's future that large, copied at each await
                // level of every cached check. A miss verifies a signature; one allocation is
                // nothing beside it.
                match Box::pin(pending.verify()).await {
                    Ok(identity) => identity,
                    Err(AuthnError::Invalid(problem)) => {
                        self.failed_attempt(source);
                        return naming_key(deny(DenyReason::InvalidToken(problem)), credential);
                    }
                    Err(AuthnError::Unavailable(why)) => {
                        return deny(DenyReason::Unavailable(why));
                    }
                }
            }
        };
        // After the cache on purpose: a revocation that arrives after a token was cached takes
        // effect on its next request.
        if let Some(revocations) = &self.revocations
            && revocations.is_revoked(&identity, resource.now)
        {
            return naming_key(
                deny(DenyReason::InvalidToken(TokenProblem::Revoked)),
                credential,
            );
        }
        // A high-value route also asks the provider whether the token is still active; only
        // such routes pay for it.
        if requirements.introspect
            && let Some(credential) = credential
            && let Err(error) = Box::pin(self.authn.introspect(credential, &identity)).await
        {
            return deny(match error {
                AuthnError::Invalid(problem) => DenyReason::InvalidToken(problem),
                AuthnError::Unavailable(why) => DenyReason::Unavailable(why),
            });
        }

        self.authorized(route, requirements, identity, &resource, input)
    }

    /// The routes, in the order they are tried (for `portcullis explain`).
    pub fn routes(&self) -> &RouteTable {
        &self.routes
    }

    /// The answer to a request no route matches.
    pub fn no_route(&self) -> Decision {
        let status = self.response.no_route_status;
        Decision::deny(None, DenyReason::NoRoute { status })
    }

    /// Authorizes the verified `identity` on `route` and answers: allowed, or refused. On a
    /// shadow route (`mode: shadow`) a refusal of the caller's rights lets the request through
    /// with the refusal recorded (`would_deny`); the request's shape (`content_types`,
    /// `idempotency_key`) is still enforced. An enforcing route pays nothing for shadow mode.
    pub fn authorized(
        &self,
        route: &Route,
        requirements: &Requirements,
        identity: Arc<Identity>,
        resource: &Resource<'_>,
        input: &CheckInput,
    ) -> Decision {
        let Err(refusal) = authz::authorize(requirements, &identity, resource) else {
            return self.permit(route, identity, input, None);
        };
        if route.mode == Mode::Shadow && refusal.shadowable() {
            // The whole policy: a refusal that is never shadowed may come after this one.
            let enforced = authz::evaluate(requirements, &identity, resource)
                .into_iter()
                .filter_map(|(_, result)| result.err())
                .find(|later| !later.shadowable());
            return match enforced {
                Some(enforced) => self.deny(route, refusal_reason(requirements, enforced)),
                None => {
                    let would_deny = refusal_reason(requirements, refusal);
                    self.permit(route, identity, input, Some(would_deny))
                }
            };
        }
        // On a hidden route `deny` answers like no route, so the scopes are never named.
        self.deny(route, refusal_reason(requirements, refusal))
    }

    /// The identity of an `allow: anonymous` route.
    pub fn anonymous(&self) -> Arc<Identity> {
        self.anonymous.clone()
    }

    /// The source the failed-attempt limiter charges: the client address Envoy established,
    /// or the configured header's trusted entry; `None` when the limiter is off.
    fn attempt_source(&self, input: &CheckInput) -> Option<IpAddr> {
        let peer = input.source.map(|addr| addr.ip());
        self.attempts
            .as_ref()
            .and_then(|attempts| attempts.source(&input.headers, peer))
    }

    /// A refusal on `route`. A route that hides itself (`on_deny: not_found`) answers every
    /// refusal of the caller — no credential, a bad one, a missing scope, too many failures —
    /// exactly like a path with no route, so that no answer confirms it exists; the denial
    /// keeps the real reason for the audit log and the metrics.
    pub fn deny(&self, route: &Route, reason: DenyReason) -> Decision {
        let hidden = (route.on_deny == OnDeny::NotFound && reason.hideable()).then_some(Hidden {
            no_route_status: self.response.no_route_status,
        });
        Decision::Deny(Denial {
            route: Some(route.name.clone()),
            reason,
            hidden,
            key_id: None,
        })
    }

    /// Charges a failed authentication (401 for an invalid or malformed credential) to the
    /// request's source. Missing credentials, 403/404/400 and 503 are never charged.
    fn failed_attempt(&self, source: Option<IpAddr>) {
        if let Some(attempts) = &self.attempts {
            attempts.record_failure(source);
        }
    }

    /// Headers only portcullis may set: `x-auth-*` and configured claim headers, in any
    /// spelling that reads as one of them once `_` is taken for `-` (`x_auth_subject`,
    /// `X_AUTH_ROLES`, `x-auth_subject`): WSGI, CGI and some proxies map both spellings onto
    /// the same variable, so the application would read a client's underscore header as ours.
    /// Byte by byte, no allocation: it runs for every header of every allowed request.
    fn is_identity_header(&self, name: &str) -> bool {
        let name = name.as_bytes();
        let prefix = IDENTITY_HEADER_PREFIX.as_bytes();
        name.get(..prefix.len())
            .is_some_and(|start| folded_eq(start, prefix))
            || self
                .claim_header_names
                .iter()
                .any(|claim| folded_eq(name, claim.as_bytes()))
    }

    /// An allowed request on `route`: identity headers set, forged ones and the credential
    /// removed; `would_deny` is a shadow route's recorded refusal.
    pub fn permit(
        &self,
        route: &Route,
        identity: Arc<Identity>,
        input: &CheckInput,
        would_deny: Option<DenyReason>,
    ) -> Decision {
        let set_headers = identity_headers(&identity);
        // Envoy applies removals after sets, so a header we set must not also be removed: ours
        // overwrite the client's value, and every other client `x-auth-*` is removed.
        let mut remove_headers: Vec<String> = input
            .headers
            .iter()
            .map(|(name, _)| name)
            .filter(|name| self.is_identity_header(name))
            .filter(|name| !set_headers.iter().any(|(set, _)| set == name))
            .map(str::to_owned)
            .collect();
        if self.response.strip_credentials
            && identity.method != crate::decision::AuthMethod::Anonymous
        {
            if input.headers.get("authorization").is_some() {
                remove_headers.push("authorization".to_owned());
            }
            if let Some(source) = &self.api_key_source
                && input.headers.get(&source.header).is_some()
            {
                remove_headers.push(source.header.clone());
            }
        }
        remove_headers.sort();
        remove_headers.dedup();
        Decision::Allow(Permit {
            route: route.name.clone(),
            identity,
            set_headers,
            remove_headers,
            dynamic_metadata: self.response.dynamic_metadata,
            would_deny,
        })
    }
}

/// The request line as routes see it: the normalized path (without the query string), the raw
/// query string (for conditions, never for matching) and the normalized host; or the 400 that
/// refuses the request before any route is looked up.
pub fn request_line(input: &CheckInput) -> Result<RequestLine<'_>, DenyReason> {
    let Ok(target) = path::normalize(&input.path) else {
        return Err(DenyReason::BadPath);
    };
    if target.query.is_some_and(credentials::query_has_credential)
        || credentials::path_has_credential(&target.path)
    {
        return Err(DenyReason::CredentialInQuery);
    }
    // Before any route is matched: an authority that is not a host would miss a host-scoped
    // route and fall through to a later one, while the upstream still reads it as that host.
    let Ok(host) = path::normalize_authority(&input.host) else {
        return Err(DenyReason::BadAuthority);
    };
    Ok(RequestLine {
        path: target.path,
        query: target.query,
        host,
    })
}

/// What [`request_line`] makes of a request's target and authority.
#[derive(Debug)]
pub struct RequestLine<'a> {
    /// In [`path::normalize`] form.
    pub path: String,
    /// The raw query string, without `?`.
    pub query: Option<&'a str>,
    /// In [`path::normalize_authority`] form.
    pub host: Cow<'a, str>,
}

/// The refusal [`authz::authorize`] found, as the reason the client is answered for.
pub fn refusal_reason(requirements: &Requirements, refusal: Refusal<'_>) -> DenyReason {
    match refusal {
        // The challenge names every scope the route requires (RFC 6750 §3), not only the
        // missing ones.
        Refusal::MissingScopes(_) => DenyReason::InsufficientScope {
            required: requirements.scopes.join(" "),
        },
        // 403 without naming the role or permission: that is the operator's business.
        Refusal::MissingRole | Refusal::MissingPermissions(_) => DenyReason::Forbidden,
        Refusal::NoneOfScopes(any_scopes) => DenyReason::InsufficientScope {
            required: any_scopes.join(" "),
        },
        Refusal::Hygiene(HygieneProblem::UnsupportedMediaType) => DenyReason::UnsupportedMediaType,
        Refusal::Hygiene(HygieneProblem::MissingIdempotencyKey) => {
            DenyReason::MissingIdempotencyKey
        }
        Refusal::ConditionFailed => DenyReason::ConditionFailed,
        Refusal::ConditionError => DenyReason::ConditionError,
        Refusal::StepUp(step_up) => DenyReason::StepUpRequired(StepUp {
            acr_values: step_up.acr_values.clone(),
            max_age: step_up.max_auth_age,
        }),
    }
}

fn attempt_limiter(config: &Config) -> Option<AttemptLimiter> {
    let settings = config.authn.failed_attempts.as_ref()?;
    if config.server.http_listen.is_some() && settings.client_address.is_none() {
        // Envoy's HTTP authorization request comes from Envoy itself and names no client
        // address portcullis may trust by default: those requests have no source to charge.
        tracing::warn!(
            "limits.failed_attempts is on but has no client_address: requests on the HTTP \
             ext_authz listener carry no client address and are never limited; name the header \
             Envoy appends the client to (x-forwarded-for, trusted_hops: 1 for the shipped \
             envoy-http-mode.yaml)"
        );
    }
    Some(AttemptLimiter::new(settings))
}

/// A header-name byte as identity headers are compared: ASCII lower case, `_` read as `-`.
fn fold_header_byte(byte: u8) -> u8 {
    match byte {
        b'_' => b'-',
        other => other.to_ascii_lowercase(),
    }
}

/// True when `name` equals `folded` (already folded) once `name` is folded too.
fn folded_eq(name: &[u8], folded: &[u8]) -> bool {
    name.len() == folded.len()
        && name
            .iter()
            .zip(folded)
            .all(|(&byte, &want)| fold_header_byte(byte) == want)
}

/// Every header name a claim mapping of any issuer may set, sorted, without repeats. The
/// Envoy filter (`envoy_filter`) lists the same names, so both sides agree on them.
pub fn claim_header_names(config: &Config) -> Vec<String> {
    let mut names: Vec<String> = config
        .issuers
        .iter()
        .flat_map(|issuer| {
            issuer
                .claim_headers
                .iter()
                .map(|(_, header)| header.clone())
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The `x-auth-*` headers for an identity (design.md "Response contract").
fn identity_headers(identity: &Identity) -> Vec<(String, String)> {
    let mut headers = vec![(
        "x-auth-method".to_owned(),
        identity.method.as_str().to_owned(),
    )];
    if identity.method == crate::decision::AuthMethod::Anonymous {
        return headers;
    }
    headers.push(("x-auth-subject".to_owned(), identity.subject.clone()));
    headers.push(("x-auth-issuer".to_owned(), identity.issuer.clone()));
    headers.push(("x-auth-scopes".to_owned(), identity.scopes.join(" ")));
    headers.push(("x-auth-roles".to_owned(), identity.roles.join(",")));
    headers.extend(identity.claim_headers.iter().cloned());
    headers
}

/// Names the refused API key in a refusal, for the audit event: its id, read from a
/// well-formed key (shape and checksum), never the secret. Any other decision or credential is
/// returned as it is.
fn naming_key(decision: Decision, credential: Option<Presented<'_>>) -> Decision {
    match (decision, credential) {
        (Decision::Deny(mut denial), Some(Presented::ApiKey(key))) => {
            denial.key_id = api_keys::parse(key).ok().map(|parts| Arc::from(parts.id));
            Decision::Deny(denial)
        }
        (decision, _) => decision,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    use super::*;
    use crate::decision::{AuthMethod, Unavailable};
    use crate::input::Headers;

    const ISSUER: &str = "https://idp.test";
    const RSA_PEM: &str = include_str!("../tests/fixtures/jwks/rsa-2048.pem");
    const RSA_JWK: &str = include_str!("../tests/fixtures/jwks/rsa-2048.jwk.json");

    /// An engine whose one issuer reads its keys from a JWKS file in `dir`.
    async fn engine_with(dir: &Path, extra_yaml: &str) -> Engine {
        let jwk: serde_json::Value = serde_json::from_str(RSA_JWK).expect("fixture jwk");
        std::fs::write(dir.join("jwks.json"), json!({"keys": [jwk]}).to_string())
            .expect("write jwks");
        let yaml = format!(
            r#"
issuers:
  - name: test
    issuer: {ISSUER}
    audiences: [orders-api]
    jwks_file: jwks.json
    algorithms: [RS256]
    claim_headers: {{email: x-user-email}}
routes:
  - {{name: health, match: {{path: /healthz}}, allow: anonymous}}
  - name: documents
    match: {{methods: [GET], path: "/documents/{{id}}"}}
    require: {{scopes: ["read:documents"]}}
{extra_yaml}"#
        );
        let config = crate::config::load_str(&yaml, &dir.join("portcullis.yaml"))
            .unwrap_or_else(|e| panic!("test config must load: {e}"));
        let shared = Shared::default();
        let engine = Engine::new(&config, &shared);
        shared.keys.wait_initial(Duration::from_secs(5)).await;
        engine
    }

    /// An engine as [`engine_with`] makes it, with the failed-attempt limit at `per_source`
    /// failures a minute.
    async fn engine_limited(dir: &Path, per_source: u32) -> Engine {
        let limits = format!("limits: {{failed_attempts: {{per_source: {per_source}, per: 1m}}}}");
        engine_with(dir, &limits).await
    }

    fn token(scope: &str) -> String {
        token_with(json!({ "scope": scope }))
    }

    /// A valid token for alice with `read:documents`, but for `claims`, which replace or add.
    fn token_with(claims: serde_json::Value) -> String {
        let now = crate::authn::cache::unix_now();
        let mut all = json!({
            "iss": ISSUER, "aud": "orders-api", "sub": "alice", "scope": "read:documents",
            "email": "alice@example.com", "iat": now, "exp": now + 300,
        });
        if let (Some(all), Some(changes)) = (all.as_object_mut(), claims.as_object()) {
            all.extend(changes.clone());
        }
        let mut header = Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some("rsa-2048".into());
        let key = EncodingKey::from_rsa_pem(RSA_PEM.as_bytes()).expect("fixture key");
        jsonwebtoken::encode(&header, &all, &key).expect("sign")
    }

    /// A bearer credential whose signature never verifies.
    fn forged_bearer() -> String {
        bearer(&format!("{}x", token("read:documents")))
    }

    fn request(method: &str, path: &str, headers: &[(&str, &str)]) -> CheckInput {
        CheckInput {
            method: method.into(),
            host: "api.test".into(),
            path: path.into(),
            headers: Headers::new(
                headers
                    .iter()
                    .map(|(n, v)| ((*n).to_owned(), (*v).to_owned())),
            ),
            ..CheckInput::default()
        }
    }

    fn bearer(token: &str) -> String {
        format!("Bearer {token}")
    }

    fn permit(decision: Decision) -> Permit {
        match decision {
            Decision::Allow(permit) => permit,
            Decision::Deny(denial) => panic!("expected allow, got {:?}", denial.reason),
        }
    }

    fn denial(decision: Decision) -> Denial {
        match decision {
            Decision::Deny(denial) => denial,
            Decision::Allow(permit) => panic!("expected deny, got allow on {}", permit.route),
        }
    }

    fn reason(decision: Decision) -> DenyReason {
        denial(decision).reason
    }

    fn set<'a>(permit: &'a Permit, name: &str) -> Option<&'a str> {
        permit
            .set_headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[tokio::test]
    async fn allows_token_with_scope_and_sets_identity_headers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = engine_with(dir.path(), "").await;
        let auth = bearer(&token("read:documents openid"));
        let permit = permit(
            engine
                .check(&request("GET", "/documents/7", &[("authorization", &auth)]))
                .await,
        );
        assert_eq!(&*permit.route, "documents");
        assert_eq!(permit.identity.method, AuthMethod::Jwt);
        assert_eq!(set(&permit, "x-auth-subject"), Some("alice"));
        assert_eq!(set(&permit, "x-auth-issuer"), Some(ISSUER));
        assert_eq!(set(&permit, "x-auth-method"), Some("jwt"));
        assert_eq!(set(&permit, "x-auth-scopes"), Some("read:documents openid"));
        assert_eq!(set(&permit, "x-user-email"), Some("alice@example.com"));
        assert_eq!(permit.remove_headers, vec!["authorization".to_owned()]);
    }

    #[tokio::test]
    async fn a_revocation_refuses_a_cached_token_on_its_next_request() {
        use crate::revocation::{RevocationList, Source, parse_list};
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("revoked.yaml"), "").expect("write");
        let engine = engine_with(dir.path(), "revocation: {file: revoked.yaml}").await;
        let revocations = engine.revocations.clone().expect("revocation configured");
        let auth = bearer(&token_with(json!({ "jti": "t-1" })));
        let input = request("GET", "/documents/7", &[("authorization", &auth)]);
        let check = || engine.check(&input);
        permit(check().await);
        permit(check().await);
        let list = |text: &str| parse_list(text).unwrap_or_else(|e| panic!("{e:?}"));
        let far = "2999-01-01T00:00:00Z";
        for revoked in [
            format!("jtis: [{{jti: t-1, expires: {far}}}]"),
            format!("subjects: [{{sub: alice, issuer: '{ISSUER}', revoked_before: {far}}}]"),
            format!("keys: [{{issuer: '{ISSUER}', kid: rsa-2048}}]"),
        ] {
            revocations.replace(Source::File, list(&revoked));
            let before = engine.authenticator().cache_stats();
            assert_eq!(
                reason(check().await),
                DenyReason::InvalidToken(TokenProblem::Revoked),
                "{revoked}"
            );
            // Refused from the cache: the check runs on hits too.
            assert_eq!(engine.authenticator().cache_stats().hits, before.hits + 1);
            revocations.replace(Source::File, RevocationList::default());
            permit(check().await);
        }
        // Another subject's token, and tokens issued after a subject's revocation, still pass.
        let past = "2000-01-01T00:00:00Z";
        revocations.replace(
            Source::File,
            list(&format!(
                "subjects: [{{sub: bob, issuer: '{ISSUER}', revoked_before: {far}}}, \
                 {{sub: alice, issuer: '{ISSUER}', revoked_before: {past}}}]"
            )),
        );
        permit(check().await);
    }

    #[tokio::test]
    async fn without_revocation_configured_no_check_is_made() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = engine_with(dir.path(), "").await;
        assert!(engine.revocations.is_none());
    }

    #[tokio::test]
    async fn forged_identity_headers_are_overwritten_or_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = engine_with(dir.path(), "").await;
        let auth = bearer(&token("read:documents"));
        let permit = permit(
            engine
                .check(&request(
                    "GET",
                    "/documents/7",
                    &[
                        ("authorization", &auth),
                        ("x-auth-subject", "mallory"),
                        ("x-auth-admin", "true"),
                    ],
                ))
                .await,
        );
        // Ours overwrite the forged value; the rest are removed; never both (Envoy removes last).
        assert_eq!(set(&permit, "x-auth-subject"), Some("alice"));
        assert!(permit.remove_headers.contains(&"x-auth-admin".to_owned()));
        assert!(!permit.remove_headers.contains(&"x-auth-subject".to_owned()));
    }

    #[tokio::test]
    async fn anonymous_route_removes_forged_identity_and_keeps_credential() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = engine_with(dir.path(), "").await;
        let permit = permit(
            engine
                .check(&request(
                    "GET",
                    "/healthz",
                    &[
                        ("authorization", "Bearer whatever"),
                        ("x-auth-subject", "mallory"),
                        ("x-user-email", "boss@example.com"),
                    ],
                ))
                .await,
        );
        assert_eq!(set(&permit, "x-auth-method"), Some("anonymous"));
        assert_eq!(set(&permit, "x-auth-subject"), None);
        assert_eq!(
            permit.remove_headers,
            vec!["x-auth-subject".to_owned(), "x-user-email".to_owned()]
        );
    }

    #[tokio::test]
    async fn underscore_spellings_of_identity_headers_are_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = engine_with(dir.path(), "").await;
        let forged = [
            ("x_auth_subject", "mallory"),
            ("X_AUTH_ROLES", "admin"),
            ("x-auth_subject", "mallory"),
            ("x_auth-method", "jwt"),
            ("x_user_email", "boss@example.com"),
            ("X-User_Email", "boss@example.com"),
        ];
        let folded = |name: &str| name.to_ascii_lowercase();
        let auth = bearer(&token("read:documents"));
        let mut authenticated = vec![("authorization", auth.as_str())];
        authenticated.extend(forged);
        for (path, headers) in [
            ("/documents/7", &authenticated[..]),
            ("/healthz", &forged[..]),
        ] {
            let permit = permit(engine.check(&request("GET", path, headers)).await);
            for (name, _) in forged {
                assert!(
                    permit.remove_headers.contains(&folded(name)),
                    "{path}: {name} not removed: {:?}",
                    permit.remove_headers
                );
            }
            // What portcullis sets is never also removed (Envoy removes after it sets).
            for (name, _) in &permit.set_headers {
                assert!(!permit.remove_headers.contains(name), "{path}: {name}");
            }
        }
        // Lookalikes that are not identity headers stay.
        let permit = permit(
            engine
                .check(&request(
                    "GET",
                    "/healthz",
                    &[
                        ("x_auth", "1"),
                        ("x-user-emails", "1"),
                        ("x.auth-subject", "1"),
                    ],
                ))
                .await,
        );
        assert!(
            permit.remove_headers.is_empty(),
            "{:?}",
            permit.remove_headers
        );
    }

    #[tokio::test]
    async fn strip_credentials_off_keeps_authorization() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = engine_with(dir.path(), "response: {strip_credentials: false}").await;
        let auth = bearer(&token("read:documents"));
        let permit = permit(
            engine
                .check(&request("GET", "/documents/7", &[("authorization", &auth)]))
                .await,
        );
        assert!(permit.remove_headers.is_empty());
    }

    /// A shadow route on `/shadow/{id}` requiring `admin` (and JSON bodies), beside the
    /// enforcing routes of [`engine_with`].
    const SHADOW_ROUTE: &str = "  - name: shadow\n    match: {path: \"/shadow/{id}\"}\n    require: {scopes: [admin], content_types: [application/json]}\n    mode: shadow\n";

    #[tokio::test]
    async fn a_shadow_route_allows_what_its_policy_refuses_and_records_why() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = engine_with(dir.path(), SHADOW_ROUTE).await;
        let auth = bearer(&token("read:documents"));
        let decision = engine
            .check(&request("GET", "/shadow/7", &[("authorization", &auth)]))
            .await;
        assert_eq!(decision.outcome(), "shadow_deny");
        assert_eq!(decision.reason(), "insufficient_scope");
        let allowed = permit(decision);
        assert_eq!(
            allowed.would_deny,
            Some(DenyReason::InsufficientScope {
                required: "admin".into()
            })
        );
        // Allowed like any other request: identity headers set, the credential stripped.
        assert_eq!(set(&allowed, "x-auth-subject"), Some("alice"));
        assert_eq!(allowed.remove_headers, vec!["authorization".to_owned()]);

        // A caller the policy accepts is a plain allow.
        let admin = bearer(&token("admin"));
        let decision = engine
            .check(&request("GET", "/shadow/7", &[("authorization", &admin)]))
            .await;
        assert_eq!(
            (decision.outcome(), decision.reason()),
            ("allow", "allowed")
        );
        assert_eq!(permit(decision).would_deny, None);
    }

    #[tokio::test]
    async fn a_shadow_route_still_enforces_authentication_and_the_request_shape() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = engine_with(dir.path(), SHADOW_ROUTE).await;
        assert_eq!(
            reason(engine.check(&request("GET", "/shadow/7", &[])).await),
            DenyReason::MissingCredential
        );
        assert!(matches!(
            reason(
                engine
                    .check(&request(
                        "GET",
                        "/shadow/7",
                        &[("authorization", &forged_bearer())]
                    ))
                    .await
            ),
            DenyReason::InvalidToken(_)
        ));
        let expired = bearer(&token_with(
            json!({"exp": 1_000_000_000, "iat": 999_999_000}),
        ));
        assert_eq!(
            reason(
                engine
                    .check(&request("GET", "/shadow/7", &[("authorization", &expired)]))
                    .await
            ),
            DenyReason::InvalidToken(TokenProblem::Expired)
        );
        // The scope refusal would be shadowed, but the body's type is checked on every route.
        let auth = bearer(&token("read:documents"));
        assert_eq!(
            reason(
                engine
                    .check(&request(
                        "POST",
                        "/shadow/7",
                        &[("authorization", &auth), ("content-type", "text/plain")]
                    ))
                    .await
            ),
            DenyReason::UnsupportedMediaType
        );
        assert_eq!(
            reason(engine.check(&request("GET", "/shadow/../x", &[])).await),
            DenyReason::BadPath
        );
    }

    #[tokio::test]
    async fn the_top_level_mode_shadows_every_route_that_sets_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = engine_with(
            dir.path(),
            "  - {name: strict, match: {path: /strict}, require: {scopes: [admin]}, mode: enforce}\nmode: shadow\n",
        )
        .await;
        let auth = bearer(&token("openid"));
        let shadowed = engine
            .check(&request("GET", "/documents/7", &[("authorization", &auth)]))
            .await;
        assert_eq!(
            (shadowed.outcome(), shadowed.reason()),
            ("shadow_deny", "insufficient_scope")
        );
        assert_eq!(
            reason(
                engine
                    .check(&request("GET", "/strict", &[("authorization", &auth)]))
                    .await
            ),
            DenyReason::InsufficientScope {
                required: "admin".into()
            }
        );
    }

    #[tokio::test]
    async fn denies_missing_credential_and_malformed_header() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = engine_with(dir.path(), "").await;
        assert_eq!(
            reason(engine.check(&request("GET", "/documents/7", &[])).await),
            DenyReason::MissingCredential
        );
        assert_eq!(
            reason(
                engine
                    .check(&request(
                        "GET",
                        "/documents/7",
                        &[("authorization", "Basic dXNlcjpwYXNz")]
                    ))
                    .await
            ),
            DenyReason::InvalidToken(TokenProblem::Malformed)
        );
    }

    #[tokio::test]
    async fn denies_missing_scope_naming_the_required_scopes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = engine_with(dir.path(), "").await;
        let auth = bearer(&token("write:documents"));
        assert_eq!(
            reason(
                engine
                    .check(&request("GET", "/documents/7", &[("authorization", &auth)]))
                    .await
            ),
            DenyReason::InsufficientScope {
                required: "read:documents".into()
            }
        );
    }

    #[tokio::test]
    async fn unmatched_request_is_404_or_the_configured_status() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = engine_with(dir.path(), "").await;
        assert_eq!(
            reason(engine.check(&request("DELETE", "/documents/7", &[])).await),
            DenyReason::NoRoute { status: 404 }
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = engine_with(dir.path(), "response: {no_route_status: 403}").await;
        assert_eq!(
            reason(engine.check(&request("GET", "/other", &[])).await),
            DenyReason::NoRoute { status: 403 }
        );
    }

    #[tokio::test]
    async fn unnormalizable_path_and_query_credential_are_400() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = engine_with(dir.path(), "").await;
        for path in ["/documents/../admin", "/documents%2f7", "/documents//7"] {
            assert_eq!(
                reason(engine.check(&request("GET", path, &[])).await),
                DenyReason::BadPath,
                "{path}"
            );
        }
        assert_eq!(
            reason(
                engine
                    .check(&request("GET", "/documents/7?access_token=abc", &[]))
                    .await
            ),
            DenyReason::CredentialInQuery
        );
    }

    #[tokio::test]
    async fn dot_segments_behind_path_parameters_and_credentials_in_them_are_400() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = engine_with(dir.path(), "").await;
        for path in ["/healthz/%2e%2e;/documents/7", "/documents/..;/healthz"] {
            assert_eq!(
                reason(engine.check(&request("GET", path, &[])).await),
                DenyReason::BadPath,
                "{path}"
            );
        }
        for path in [
            "/healthz;access_token=abc",
            "/healthz?access%5Ftoken=abc",
            "/healthz?access_token[]=abc",
        ] {
            assert_eq!(
                reason(engine.check(&request("GET", path, &[])).await),
                DenyReason::CredentialInQuery,
                "{path}"
            );
        }
    }

    #[tokio::test]
    async fn malformed_authority_is_400_before_any_route_is_matched() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = engine_with(
            dir.path(),
            "  - {name: internal, match: {host: internal.example}, require: {scopes: [admin]}}\n  - {name: open, match: {path_prefix: /}, allow: anonymous}",
        )
        .await;
        let on_host = |host: &str| {
            let mut input = request("GET", "/anything", &[]);
            input.host = host.to_owned();
            input
        };
        for host in [
            "internal.example:abc",
            "internal.example:80:80",
            "internal.example:80x",
            "internal.example:+80",
            "",
        ] {
            assert_eq!(
                reason(engine.check(&on_host(host)).await),
                DenyReason::BadAuthority,
                "{host:?}"
            );
        }
        // Every valid spelling of the protected host reaches its route, not the open one.
        for host in [
            "internal.example",
            "INTERNAL.example.:8443",
            "internal.example:80",
        ] {
            assert_eq!(
                reason(engine.check(&on_host(host)).await),
                DenyReason::MissingCredential,
                "{host:?}"
            );
        }
        assert!(engine.check(&on_host("public.example")).await.is_allow());
    }

    fn from(source: &str, mut input: CheckInput) -> CheckInput {
        input.source = Some(source.parse().expect("test socket address"));
        input
    }

    #[tokio::test]
    async fn a_source_that_keeps_failing_gets_429_before_any_verification() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = engine_limited(dir.path(), 3).await;
        let attacker = "198.51.100.7:40000";
        let forged = forged_bearer();
        for _ in 0..2 {
            assert!(matches!(
                reason(
                    engine
                        .check(&from(
                            attacker,
                            request("GET", "/documents/7", &[("authorization", &forged)])
                        ))
                        .await
                ),
                DenyReason::InvalidToken(_)
            ));
        }
        // A malformed credential counts too.
        assert_eq!(
            reason(
                engine
                    .check(&from(
                        attacker,
                        request("GET", "/documents/7", &[("authorization", "Basic eDp5")])
                    ))
                    .await
            ),
            DenyReason::InvalidToken(TokenProblem::Malformed)
        );

        let stats = |engine: &Engine| engine.authenticator().cache_stats();
        let before = stats(&engine);
        // Valid, but never seen before: it would need verifying, which the limit refuses.
        let valid = bearer(&token("read:documents"));
        let DenyReason::TooManyAttempts { retry_after } = reason(
            engine
                .check(&from(
                    attacker,
                    request("GET", "/documents/7", &[("authorization", &valid)]),
                ))
                .await,
        ) else {
            panic!("a valid token from a source over quota must get 429");
        };
        // 3 a minute: one failure is forgiven every 20 s.
        assert!(
            (Duration::from_secs(1)..=Duration::from_secs(20)).contains(&retry_after),
            "{retry_after:?}"
        );
        // One cache look-up (a miss), and no verification: had the token been verified it
        // would be cached now, and the next check of it would be a hit.
        let after = stats(&engine);
        assert_eq!((after.hits, after.misses), (before.hits, before.misses + 1));

        // Another source with a valid token is allowed; a missing credential stays 401.
        permit(
            engine
                .check(&from(
                    "198.51.100.8:40000",
                    request("GET", "/documents/7", &[("authorization", &valid)]),
                ))
                .await,
        );
        assert_eq!(
            stats(&engine).hits,
            before.hits,
            "the 429 verified the token"
        );
        assert_eq!(
            reason(
                engine
                    .check(&from(attacker, request("GET", "/documents/7", &[])))
                    .await
            ),
            DenyReason::MissingCredential
        );
    }

    /// Sends `authorization` from `peer` with `headers` and returns the decision.
    async fn attempt(
        engine: &Engine,
        peer: &str,
        authorization: &str,
        headers: &[(&str, &str)],
    ) -> Decision {
        let mut all = vec![("authorization", authorization)];
        all.extend_from_slice(headers);
        engine
            .check(&from(peer, request("GET", "/documents/7", &all)))
            .await
    }

    fn is_429(decision: Decision) -> bool {
        matches!(
            decision,
            Decision::Deny(ref denial) if matches!(denial.reason, DenyReason::TooManyAttempts { .. })
        )
    }

    #[tokio::test]
    async fn the_limiter_is_off_by_default() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = engine_with(dir.path(), "").await;
        let forged = forged_bearer();
        let attacker = "198.51.100.7:40000";
        for _ in 0..50 {
            assert!(matches!(
                reason(attempt(&engine, attacker, &forged, &[]).await),
                DenyReason::InvalidToken(_)
            ));
        }
        permit(attempt(&engine, attacker, &bearer(&token("read:documents")), &[]).await);
    }

    #[tokio::test]
    async fn a_token_the_cache_vouches_for_is_never_refused_by_the_limiter() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = engine_limited(dir.path(), 2).await;
        // A valid client and an attacker behind one address (a gateway, a NAT).
        let shared = "198.51.100.7:40000";
        let valid = bearer(&token("read:documents"));
        permit(attempt(&engine, shared, &valid, &[]).await);

        let forged = forged_bearer();
        let mut limited = 0;
        for _ in 0..10 {
            limited += usize::from(is_429(attempt(&engine, shared, &forged, &[]).await));
            // The client's verified token keeps working, at one cache look-up a request.
            let before = engine.authenticator().cache_stats();
            let permit = permit(attempt(&engine, shared, &valid, &[]).await);
            assert_eq!(permit.identity.subject, "alice");
            let after = engine.authenticator().cache_stats();
            assert_eq!((after.hits, after.misses), (before.hits + 1, before.misses));
        }
        assert_eq!(limited, 8, "the attacker is limited after its 2 failures");
        // New, unverified work from the limited address is still refused, valid or not.
        let unseen = bearer(&token("read:documents openid"));
        assert!(is_429(attempt(&engine, shared, &unseen, &[]).await));
        assert!(is_429(attempt(&engine, shared, "Basic eDp5", &[]).await));
    }

    #[tokio::test]
    async fn forged_forwarding_headers_do_not_move_a_request_to_another_bucket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = engine_limited(dir.path(), 2).await;
        let forged = forged_bearer();
        let attacker = "198.51.100.7:40000";
        let victim = "198.51.100.8";
        for n in 0..10 {
            // Rotating forwarding headers, some naming the victim's address.
            let rotated = format!("203.0.113.{n}");
            let spoofed = if n % 2 == 0 { victim } else { rotated.as_str() };
            let decision = attempt(
                &engine,
                attacker,
                &forged,
                &[
                    ("x-forwarded-for", spoofed),
                    ("x-envoy-external-address", spoofed),
                    ("x-real-ip", spoofed),
                ],
            )
            .await;
            assert_eq!(is_429(decision), n >= 2, "attempt {n}");
        }
        // The victim's own bucket was never charged: its new token is verified and allowed.
        permit(
            attempt(
                &engine,
                &format!("{victim}:40000"),
                &bearer(&token("read:documents")),
                &[],
            )
            .await,
        );
    }

    #[tokio::test]
    async fn a_configured_header_is_read_at_its_trusted_hop_and_falls_back_to_the_peer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = engine_with(
            dir.path(),
            "limits:\n  failed_attempts:\n    per_source: 2\n    client_address: {header: x-forwarded-for, trusted_hops: 2}",
        )
        .await;
        let forged = forged_bearer();
        // Behind a gateway: every request arrives from the gateway's address, which appended
        // the real client's address; the sidecar Envoy appended the gateway's.
        let gateway = "10.0.0.5:40000";
        for n in 0..4u8 {
            let chain = format!("203.0.113.{n}, 198.51.100.7, 10.0.0.5");
            let decision = attempt(&engine, gateway, &forged, &[("x-forwarded-for", &chain)]).await;
            assert_eq!(is_429(decision), n >= 2, "attempt {n}");
        }
        // Another client behind the same gateway is unaffected.
        let other = "198.51.100.8, 10.0.0.5";
        permit(
            attempt(
                &engine,
                gateway,
                &bearer(&token("read:documents")),
                &[("x-forwarded-for", other)],
            )
            .await,
        );
        // A request that skipped the gateway (a short header) is charged to its peer.
        let direct = "198.51.100.7:40000";
        let unseen = bearer(&token("read:documents openid"));
        assert!(is_429(
            attempt(
                &engine,
                direct,
                &unseen,
                &[("x-forwarded-for", "198.51.100.7")]
            )
            .await
        ));
    }

    #[tokio::test]
    async fn only_invalid_credentials_are_charged_to_a_source() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = engine_limited(dir.path(), 1).await;
        let client = "198.51.100.9:40000";
        let lacks_scope = bearer(&token("write:documents"));
        for input in [
            request("GET", "/documents/7", &[]),
            request("GET", "/documents/7", &[("authorization", &lacks_scope)]),
            request("GET", "/other", &[("authorization", &lacks_scope)]),
            request("GET", "/documents/../7", &[("authorization", &lacks_scope)]),
        ] {
            for _ in 0..3 {
                assert_ne!(
                    reason(engine.check(&from(client, input.clone())).await).http_status(),
                    429
                );
            }
        }
        let valid = bearer(&token("read:documents"));
        permit(
            engine
                .check(&from(
                    client,
                    request("GET", "/documents/7", &[("authorization", &valid)]),
                ))
                .await,
        );
    }

    #[tokio::test]
    async fn failed_attempts_off_never_limits_and_unknown_sources_are_never_limited() {
        let dir = tempfile::tempdir().expect("tempdir");
        let off = engine_with(dir.path(), "limits: {failed_attempts: off}").await;
        let dir = tempfile::tempdir().expect("tempdir");
        let on = engine_limited(dir.path(), 1).await;
        let forged = forged_bearer();
        let valid = bearer(&token("read:documents"));
        let attacker = "198.51.100.7:40000";
        for _ in 0..5 {
            off.check(&from(
                attacker,
                request("GET", "/documents/7", &[("authorization", &forged)]),
            ))
            .await;
            // No source address (no one to charge): never limited.
            on.check(&request(
                "GET",
                "/documents/7",
                &[("authorization", &forged)],
            ))
            .await;
        }
        permit(
            off.check(&from(
                attacker,
                request("GET", "/documents/7", &[("authorization", &valid)]),
            ))
            .await,
        );
        permit(
            on.check(&request(
                "GET",
                "/documents/7",
                &[("authorization", &valid)],
            ))
            .await,
        );
    }

    /// issue 8, item 9: a hidden route answered 401 to a caller without a credential while an
    /// unknown path answered 404. Every refusal of the caller on a hidden route is now answered
    /// exactly like no route (status, body, headers), and keeps its real reason.
    #[tokio::test]
    async fn a_hidden_route_answers_every_refusal_like_no_route_and_keeps_the_reason() {
        for no_route_status in ["", "response: {no_route_status: 403}"] {
            let dir = tempfile::tempdir().expect("tempdir");
            let hidden_route = "  - name: secret\n    match: {path: /secret}\n    \
                                require: {scopes: [admin]}\n    on_deny: not_found\n";
            let engine = engine_with(dir.path(), &format!("{hidden_route}{no_route_status}")).await;
            let absent = denial(engine.check(&request("GET", "/nothing-here", &[])).await);
            let now = crate::authn::cache::unix_now();
            let expired = bearer(&token_with(
                json!({"scope": "admin", "iat": now - 900, "exp": now - 600}),
            ));
            let lacks_scope = bearer(&token("read:documents"));
            let cases: [(&[(&str, &str)], &str); 4] = [
                (&[], "missing_credential"),
                (&[("authorization", "Basic dXNlcjpwYXNz")], "malformed"),
                (&[("authorization", &expired)], "expired"),
                (&[("authorization", &lacks_scope)], "insufficient_scope"),
            ];
            for (headers, label) in cases {
                let hidden = denial(engine.check(&request("GET", "/secret", headers)).await);
                assert_eq!(hidden.reason.label(), label, "{no_route_status}");
                assert_eq!(hidden.route.as_deref(), Some("secret"));
                assert_eq!(
                    (hidden.http_status(), hidden.error_code()),
                    (absent.http_status(), absent.error_code()),
                    "{label} {no_route_status}"
                );
                assert_eq!(
                    hidden.body(Some("rid")),
                    absent.body(Some("rid")),
                    "{label}"
                );
                assert_eq!(hidden.headers(), absent.headers(), "{label}");
            }
            permit(
                engine
                    .check(&request(
                        "GET",
                        "/secret",
                        &[("authorization", &bearer(&token("admin")))],
                    ))
                    .await,
            );
        }
    }

    /// A token whose subject would be trimmed by the application is refused 401 every time:
    /// the refusal happens at verification, so nothing is cached to serve it later.
    #[tokio::test]
    async fn a_subject_with_surrounding_whitespace_is_refused_and_never_cached() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = engine_with(dir.path(), "").await;
        for claims in [
            json!({"sub": " admin "}),
            json!({"email": "alice@example.com\r\nx-auth-subject: admin"}),
        ] {
            let auth = bearer(&token_with(claims));
            for _ in 0..2 {
                let refused = denial(
                    engine
                        .check(&request("GET", "/documents/7", &[("authorization", &auth)]))
                        .await,
                );
                assert_eq!(
                    refused.reason,
                    DenyReason::InvalidToken(TokenProblem::UnsafeClaim)
                );
                assert_eq!(refused.http_status(), 401);
            }
        }
        let stats = engine.authenticator().cache_stats();
        assert_eq!((stats.hits, stats.misses), (0, 4), "{stats:?}");
    }

    #[tokio::test]
    async fn fails_closed_when_the_issuer_has_no_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        // The issuer's key file holds no keys: it never has any to verify with.
        std::fs::write(dir.path().join("jwks.json"), r#"{"keys": []}"#).expect("write");
        let config = crate::config::load_str(
            &format!(
                "issuers:\n  - {{name: t, issuer: {ISSUER}, audiences: [orders-api], jwks_file: jwks.json, algorithms: [RS256]}}\nroutes:\n  - {{name: all, match: {{}}, allow: authenticated}}\n"
            ),
            &dir.path().join("portcullis.yaml"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let shared = Shared::default();
        let empty = Engine::new(&config, &shared);
        shared.keys.wait_initial(Duration::from_secs(5)).await;
        let auth = bearer(&token("read:documents"));
        assert_eq!(
            reason(
                empty
                    .check(&request("GET", "/documents/7", &[("authorization", &auth)]))
                    .await
            ),
            DenyReason::Unavailable(Unavailable::NoKeys)
        );
    }

    /// The classic three roles, written in both forms: admin includes user, user includes
    /// viewer.
    const CLASSIC_ROLES: &str = "\
roles:
  admin: {permissions: [delete, admin], includes: [user]}
  user: {permissions: [write], includes: [viewer]}
  viewer: [read]
";

    /// An engine with the classic roles over a document API: on `/documents` and
    /// `/documents/{id}`, GET needs `read`, POST, PUT and PATCH need `write`, DELETE needs
    /// `delete`; `/admin` needs the `admin` role and permission. Roles are read from
    /// `roles_claim` (the issuer's `claims.roles`).
    async fn rbac_engine(dir: &Path, roles_claim: &str) -> Engine {
        let mut routes = String::new();
        for (path, name) in [("/documents", "documents"), ("/documents/{id}", "document")] {
            for (methods, permission) in [
                ("[GET]", "read"),
                ("[POST, PUT, PATCH]", "write"),
                ("[DELETE]", "delete"),
            ] {
                routes.push_str(&format!(
                    "  - name: {name}-{permission}\n    match: {{methods: {methods}, path: \
                     \"{path}\"}}\n    require: {{permissions: [{permission}]}}\n"
                ));
            }
        }
        routes.push_str(
            "  - name: admin\n    match: {path_prefix: /admin}\n    \
             require: {roles: [admin], permissions: [admin]}\n    on_deny: not_found\n",
        );
        let jwk: serde_json::Value = serde_json::from_str(RSA_JWK).expect("fixture jwk");
        std::fs::write(dir.join("jwks.json"), json!({"keys": [jwk]}).to_string())
            .expect("write jwks");
        let yaml = format!(
            "issuers:\n  - name: test\n    issuer: {ISSUER}\n    audiences: [orders-api]\n    \
             jwks_file: jwks.json\n    algorithms: [RS256]\n    claims: {{roles: {roles_claim}}}\n\
             {CLASSIC_ROLES}routes:\n{routes}"
        );
        let config = crate::config::load_str(&yaml, &dir.join("portcullis.yaml"))
            .unwrap_or_else(|e| panic!("test config must load: {e}\n{yaml}"));
        let shared = Shared::default();
        let engine = Engine::new(&config, &shared);
        shared.keys.wait_initial(Duration::from_secs(5)).await;
        engine
    }

    #[tokio::test]
    async fn classic_roles_allow_exactly_what_their_permissions_grant_on_every_method_and_route() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = rbac_engine(dir.path(), "roles").await;
        // (method, path, the roles allowed): anyone else is refused.
        let table: &[(&str, &str, &[&str])] = &[
            ("GET", "/documents", &["admin", "user", "viewer"]),
            ("POST", "/documents", &["admin", "user"]),
            ("PUT", "/documents", &["admin", "user"]),
            ("PATCH", "/documents", &["admin", "user"]),
            ("DELETE", "/documents", &["admin"]),
            ("GET", "/documents/7", &["admin", "user", "viewer"]),
            ("POST", "/documents/7", &["admin", "user"]),
            ("PUT", "/documents/7", &["admin", "user"]),
            ("PATCH", "/documents/7", &["admin", "user"]),
            ("DELETE", "/documents/7", &["admin"]),
            ("GET", "/admin", &["admin"]),
            ("POST", "/admin/users", &["admin"]),
            ("PUT", "/admin/users/7", &["admin"]),
            ("PATCH", "/admin", &["admin"]),
            ("DELETE", "/admin/users/7", &["admin"]),
        ];
        // A caller with no role, and one whose role the configuration does not define.
        let callers: [(&str, serde_json::Value); 5] = [
            ("admin", json!(["admin"])),
            ("user", json!(["user"])),
            ("viewer", json!("viewer")),
            ("nobody", json!([])),
            ("stranger", json!(["root"])),
        ];
        for (method, path, allowed) in table {
            for (caller, roles) in &callers {
                let auth = bearer(&token_with(json!({ "roles": roles })));
                let decision = engine
                    .check(&request(method, path, &[("authorization", &auth)]))
                    .await;
                let case = format!("{caller} {method} {path}");
                if allowed.contains(caller) {
                    let permit = permit(decision);
                    assert_eq!(set(&permit, "x-auth-roles"), Some(*caller), "{case}");
                } else {
                    let denial = denial(decision);
                    assert_eq!(denial.reason, DenyReason::Forbidden, "{case}");
                    // `/admin` hides itself: refused like a path with no route.
                    let status = if path.starts_with("/admin") { 404 } else { 403 };
                    assert_eq!(denial.http_status(), status, "{case}");
                }
            }
        }
    }

    #[tokio::test]
    async fn roles_are_read_from_the_issuers_claim_path_and_a_claim_of_the_wrong_type_grants_none()
    {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = rbac_engine(dir.path(), "resource_access.orders-api.roles").await;
        let check = |claims: serde_json::Value| {
            let auth = bearer(&token_with(claims));
            let engine = &engine;
            async move {
                engine
                    .check(&request(
                        "DELETE",
                        "/documents/7",
                        &[("authorization", &auth)],
                    ))
                    .await
            }
        };
        permit(check(json!({"resource_access": {"orders-api": {"roles": ["admin"]}}})).await);
        // The top-level `roles` claim is not where this issuer keeps them.
        assert_eq!(
            reason(check(json!({"roles": ["admin"]})).await),
            DenyReason::Forbidden
        );
        for wrong in [
            json!(42),
            json!({"admin": true}),
            json!([7, null]),
            json!(true),
        ] {
            let claims = json!({"resource_access": {"orders-api": {"roles": wrong}}});
            assert_eq!(
                reason(check(claims).await),
                DenyReason::Forbidden,
                "{wrong}"
            );
        }
        assert_eq!(
            reason(check(json!({"resource_access": {"orders-api": 3}})).await),
            DenyReason::Forbidden
        );
    }

    /// issue 10, item 4: a route that demands MFA, an `acr` and a recent authentication
    /// answers 401 with the RFC 9470 challenge until the token shows all three.
    #[tokio::test]
    async fn a_step_up_route_challenges_until_the_token_shows_mfa_acr_and_a_recent_login() {
        let dir = tempfile::tempdir().expect("tempdir");
        let route = "  - name: transfer\n    match: {path: /transfer}\n    require: {scopes: \
                     [\"read:documents\"], mfa: true, acr: [phrh, phr], max_auth_age: 5m}\n";
        let engine = engine_with(dir.path(), route).await;
        let now = crate::authn::cache::unix_now();
        let strong = json!({"amr": ["pwd", "hwk"], "acr": "phr", "auth_time": now - 60});
        let with = |changes: serde_json::Value| {
            let mut claims = strong.clone();
            if let (Some(all), Some(changes)) = (claims.as_object_mut(), changes.as_object()) {
                all.extend(changes.clone());
            }
            bearer(&token_with(claims))
        };
        permit(
            engine
                .check(&request(
                    "GET",
                    "/transfer",
                    &[("authorization", &with(json!({})))],
                ))
                .await,
        );
        for (changes, why) in [
            (json!({"amr": ["pwd"]}), "no second factor"),
            (json!({"amr": "hwk"}), "amr as a string"),
            (json!({"acr": "urn:low"}), "acr not listed"),
            (json!({"auth_time": now - 3600}), "login too old"),
            (json!({"auth_time": null}), "no auth_time"),
        ] {
            let refused = denial(
                engine
                    .check(&request(
                        "GET",
                        "/transfer",
                        &[("authorization", &with(changes))],
                    ))
                    .await,
            );
            assert_eq!(refused.reason.label(), "step_up_required", "{why}");
            assert_eq!(refused.http_status(), 401, "{why}");
            let challenge = refused
                .headers()
                .into_iter()
                .find(|(name, _)| name.eq_ignore_ascii_case("www-authenticate"))
                .map(|(_, value)| value.to_string());
            assert_eq!(
                challenge.as_deref(),
                Some(
                    r#"Bearer realm="portcullis", error="insufficient_user_authentication", acr_values="phrh phr", max_age="300""#
                ),
                "{why}"
            );
        }
        // A missing scope stays a 403: stepping up would not help.
        let lacks_scope = with(json!({"scope": "other"}));
        let refused = denial(
            engine
                .check(&request(
                    "GET",
                    "/transfer",
                    &[("authorization", &lacks_scope)],
                ))
                .await,
        );
        assert_eq!(refused.reason.label(), "insufficient_scope");
    }

    /// issue 10, item 6: a route's request rules answer 415 for a body in a media type it does
    /// not accept and 400 for a POST without `Idempotency-Key`, with the standard body.
    #[tokio::test]
    async fn request_hygiene_answers_415_and_400_with_the_standard_body() {
        let dir = tempfile::tempdir().expect("tempdir");
        let route = "  - name: create\n    match: {path: /documents}\n    require: {scopes: \
                     [\"read:documents\"], content_types: [application/json], \
                     idempotency_key: true}\n";
        let engine = engine_with(dir.path(), route).await;
        let auth = bearer(&token("read:documents"));
        let post = |headers: &[(&str, &str)]| {
            let mut all = vec![("authorization", auth.as_str())];
            all.extend_from_slice(headers);
            request("POST", "/documents", &all)
        };
        let refused = denial(engine.check(&post(&[("content-type", "text/xml")])).await);
        assert_eq!(refused.reason.label(), "unsupported_media_type");
        assert_eq!(
            (refused.http_status(), refused.error_code()),
            (415, "unsupported_media_type")
        );
        let body: serde_json::Value =
            serde_json::from_str(&refused.body(Some("rid"))).expect("json body");
        assert_eq!(body["request_id"], "rid");
        let json = ("content-type", "application/json; charset=utf-8");
        let refused = denial(engine.check(&post(&[json])).await);
        assert_eq!(refused.reason.label(), "missing_idempotency_key");
        assert_eq!(refused.http_status(), 400);
        permit(
            engine
                .check(&post(&[json, ("idempotency-key", "k-1")]))
                .await,
        );
        // A GET carries no body: neither rule applies.
        permit(
            engine
                .check(&request("GET", "/documents", &[("authorization", &auth)]))
                .await,
        );
    }

    /// An engine as [`engine_with`] makes it that also accepts live API keys from a keys file
    /// holding one key for `billing` (read:documents); returns the key.
    async fn engine_with_api_key(dir: &Path, extra_yaml: &str) -> (Engine, String) {
        let generated =
            crate::authn::api_keys::generate(crate::authn::api_keys::KeyEnv::Live).expect("random");
        std::fs::write(
            dir.join("keys.yaml"),
            format!(
                "keys:\n  - {{id: {}, hash: {}, subject: billing, scopes: [read:documents], \
                 env: live}}\n",
                generated.id, generated.hash
            ),
        )
        .expect("write keys");
        let yaml = format!("{extra_yaml}\napi_keys: {{file: keys.yaml, env: live}}\n");
        (engine_with(dir, &yaml).await, generated.key)
    }

    #[tokio::test]
    async fn allows_an_api_key_with_the_entrys_identity_and_strips_its_header() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (engine, key) = engine_with_api_key(dir.path(), "").await;
        let allowed = permit(
            engine
                .check(&request("GET", "/documents/7", &[("x-api-key", &key)]))
                .await,
        );
        assert_eq!(allowed.identity.method, AuthMethod::ApiKey);
        assert_eq!(set(&allowed, "x-auth-method"), Some("api_key"));
        assert_eq!(set(&allowed, "x-auth-subject"), Some("billing"));
        assert_eq!(set(&allowed, "x-auth-issuer"), Some("api_keys"));
        assert_eq!(set(&allowed, "x-auth-scopes"), Some("read:documents"));
        assert_eq!(allowed.remove_headers, vec!["x-api-key".to_owned()]);
        // JWTs keep working beside API keys.
        let auth = bearer(&token("read:documents"));
        permit(
            engine
                .check(&request("GET", "/documents/7", &[("authorization", &auth)]))
                .await,
        );
        // A bad key is a 401 like a bad token.
        let mut typo = key.clone();
        typo.replace_range(10..11, if &key[10..11] == "x" { "y" } else { "x" });
        assert_eq!(
            reason(
                engine
                    .check(&request("GET", "/documents/7", &[("x-api-key", &typo)]))
                    .await
            ),
            DenyReason::InvalidToken(TokenProblem::BadChecksum)
        );
    }

    /// The audit event of a refused API key names the key (its id, never the secret): which
    /// key is failing is the first thing an operator asks. A key whose shape or checksum is
    /// wrong has no id worth naming.
    #[tokio::test]
    async fn a_refused_api_key_is_named_by_its_id_in_the_refusal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (engine, key) = engine_with_api_key(dir.path(), "").await;
        let id = crate::authn::api_keys::parse(&key)
            .expect("a generated key")
            .id
            .to_owned();
        // The same id with another secret, its checksum recomputed: a well-formed key.
        let body = &key[..key.len() - 6];
        let last = if body.ends_with('a') { "b" } else { "a" };
        let wrong = format!("{}{last}", &body[..body.len() - 1]);
        let sum = crate::authn::api_keys::checksum(&wrong);
        let wrong = format!("{wrong}{}", std::str::from_utf8(&sum).expect("base62"));
        let refused = engine
            .check(&request("GET", "/documents/7", &[("x-api-key", &wrong)]))
            .await;
        let Decision::Deny(denial) = &refused else {
            panic!("allowed a wrong secret: {refused:?}");
        };
        assert_eq!(
            denial.reason,
            DenyReason::InvalidToken(TokenProblem::WrongSecret)
        );
        assert_eq!(denial.key_id.as_deref(), Some(id.as_str()));
        let input = request("GET", "/documents/7", &[]);
        let event =
            crate::telemetry::audit::AuditEvent::new(&input, &refused, std::time::Duration::ZERO);
        assert_eq!(event.key_id, id);
        assert!(!format!("{refused:?}").contains(&wrong[wrong.len() - 38..]));

        // A broken checksum: refused without naming anything.
        let mut typo = key.clone();
        typo.replace_range(10..11, if &key[10..11] == "x" { "y" } else { "x" });
        let Decision::Deny(denial) = engine
            .check(&request("GET", "/documents/7", &[("x-api-key", &typo)]))
            .await
        else {
            panic!("allowed a broken key");
        };
        assert_eq!(denial.key_id, None);
        // A JWT's refusal names no key either.
        let Decision::Deny(denial) = engine
            .check(&request(
                "GET",
                "/documents/7",
                &[("authorization", "Bearer not.a.jwt")],
            ))
            .await
        else {
            panic!("allowed a bad token");
        };
        assert_eq!(denial.key_id, None);
    }

    #[tokio::test]
    async fn a_revoked_api_key_is_refused_by_its_id() {
        use crate::revocation::{Source, parse_list};
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("revoked.yaml"), "").expect("write");
        let (engine, key) =
            engine_with_api_key(dir.path(), "revocation: {file: revoked.yaml}").await;
        let input = request("GET", "/documents/7", &[("x-api-key", &key)]);
        permit(engine.check(&input).await);
        let id = crate::authn::api_keys::parse(&key)
            .expect("a generated key")
            .id;
        let list = parse_list(&format!("api_keys: [{{id: {id}}}]")).expect("revocation list");
        let revocations = engine.revocations.clone().expect("revocation configured");
        revocations.replace(Source::File, list);
        let refused = engine.check(&input).await;
        let Decision::Deny(denial) = &refused else {
            panic!("allowed a revoked key: {refused:?}");
        };
        assert_eq!(denial.key_id.as_deref(), Some(id));
        assert_eq!(
            reason(refused),
            DenyReason::InvalidToken(TokenProblem::Revoked)
        );
    }

    #[tokio::test]
    async fn an_api_key_never_satisfies_a_step_up_route() {
        let dir = tempfile::tempdir().expect("tempdir");
        let route = "  - name: transfer\n    match: {path: /transfer}\n    \
                     require: {scopes: [read:documents], mfa: true}";
        let (engine, key) = engine_with_api_key(dir.path(), route).await;
        assert!(matches!(
            reason(
                engine
                    .check(&request("GET", "/transfer", &[("x-api-key", &key)]))
                    .await
            ),
            DenyReason::StepUpRequired(_)
        ));
    }

    #[tokio::test]
    async fn a_known_api_key_is_never_refused_by_the_failed_attempt_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let limits = "limits: {failed_attempts: {per_source: 1, per: 1m}}";
        let (engine, key) = engine_with_api_key(dir.path(), limits).await;
        let client = "198.51.100.9:40000";
        let mut wrong = key.clone();
        wrong.replace_range(20..21, if &key[20..21] == "x" { "y" } else { "x" });
        for _ in 0..3 {
            engine
                .check(&from(
                    client,
                    request("GET", "/documents/7", &[("x-api-key", &wrong)]),
                ))
                .await;
        }
        assert_eq!(
            reason(
                engine
                    .check(&from(
                        client,
                        request("GET", "/documents/7", &[("x-api-key", &wrong)]),
                    ))
                    .await
            )
            .http_status(),
            429,
            "bad keys are charged to their source"
        );
        permit(
            engine
                .check(&from(
                    client,
                    request("GET", "/documents/7", &[("x-api-key", &key)]),
                ))
                .await,
        );
    }

    /// issue 10, item 2: the worked ABAC example, `deploy/examples/documents.yaml`, decides
    /// every case of its own policy tests (`documents.test.yaml`) as they say: status, audit
    /// reason and the headers set upstream. The engine gets the example as shipped, but for
    /// its key source (a local JWKS file in place of discovery).
    #[tokio::test]
    async fn the_documents_example_decides_every_case_of_its_policy_tests() {
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples");
        let read = |name: &str| {
            std::fs::read_to_string(examples.join(name))
                .unwrap_or_else(|e| panic!("read deploy/examples/{name}: {e}"))
        };
        let tests: serde_json::Value =
            serde_yaml_ng::from_str(&read("documents.test.yaml")).expect("policy tests parse");
        assert_eq!(tests["config"], "documents.yaml");
        let yaml = read("documents.yaml");
        assert!(yaml.contains("discovery: true"));
        let yaml = yaml.replace("discovery: true", "jwks_file: jwks.json");

        let dir = tempfile::tempdir().expect("tempdir");
        let jwk: serde_json::Value = serde_json::from_str(RSA_JWK).expect("fixture jwk");
        std::fs::write(
            dir.path().join("jwks.json"),
            json!({"keys": [jwk]}).to_string(),
        )
        .expect("write jwks");
        let config = crate::config::load_str(&yaml, &dir.path().join("documents.yaml"))
            .unwrap_or_else(|e| panic!("the example must load: {e}"));
        let shared = Shared::default();
        let engine = Engine::new(&config, &shared);
        shared.keys.wait_initial(Duration::from_secs(5)).await;

        let cases = tests["cases"].as_array().expect("cases");
        assert!(cases.len() >= 10, "{}", cases.len());
        for case in cases {
            let name = case["name"].as_str().expect("a name");
            let req = &case["request"];
            let mut headers: Vec<(String, String)> = req["headers"]
                .as_object()
                .map(|headers| {
                    headers
                        .iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                        .collect()
                })
                .unwrap_or_default();
            if case["identity"] != "anonymous" {
                let mut claims = case["identity"]["claims"].clone();
                claims["aud"] = json!("https://documents.example.com");
                headers.push(("authorization".to_owned(), bearer(&token_with(claims))));
            }
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let method = req["method"].as_str().expect("a method");
            let path = req["path"].as_str().expect("a path");
            let decision = engine.check(&request(method, path, &headers)).await;
            let expect = &case["expect"];
            let (status, reason) = match &decision {
                Decision::Allow(_) => (200, "allowed"),
                Decision::Deny(denial) => (denial.http_status(), denial.reason.label()),
            };
            assert_eq!(json!(status), expect["status"], "{name}: {reason}");
            if let Some(expected) = expect["reason"].as_str() {
                assert_eq!(reason, expected, "{name}");
            }
            if let (Decision::Allow(permit), Some(expected)) =
                (&decision, expect["headers"].as_object())
            {
                for (header, value) in expected {
                    assert_eq!(set(permit, header), value.as_str(), "{name}: {header}");
                }
            }
        }
    }

    /// A condition reads the request too (method, headers, query, source), and a claim a
    /// condition needs but the token lacks denies with `condition_error`, never an allow.
    #[tokio::test]
    async fn a_condition_reads_the_request_and_fails_closed_on_an_evaluation_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let route = "  - name: tenant\n    match: {path: \"/tenants/{tenant}\"}\n    require:\n      \
                     when: \"request.headers['x-tenant'] == resource.tenant && \
                     request.query.view == 'full' && subject.tenant == resource.tenant\"\n";
        let engine = engine_with(dir.path(), route).await;
        let auth = bearer(&token_with(json!({"tenant": "acme"})));
        let check = |path: &'static str, tenant: &'static str, auth: String| {
            let engine = &engine;
            async move {
                engine
                    .check(&request(
                        "GET",
                        path,
                        &[("authorization", &auth), ("x-tenant", tenant)],
                    ))
                    .await
            }
        };
        permit(check("/tenants/acme?view=full", "acme", auth.clone()).await);
        let refused = denial(check("/tenants/acme?view=full", "other", auth.clone()).await);
        assert_eq!(refused.reason, DenyReason::ConditionFailed);
        assert_eq!(
            (refused.http_status(), refused.reason.label()),
            (403, "condition_failed")
        );
        assert_eq!(refused.reason.www_authenticate(), None);
        // No `view` parameter, or a token without the `tenant` claim: cannot be evaluated.
        let refused = denial(check("/tenants/acme", "acme", auth.clone()).await);
        assert_eq!(
            (refused.http_status(), refused.reason.label()),
            (403, "condition_error")
        );
        let no_claim = bearer(&token_with(json!({"scope": "read:documents"})));
        assert_eq!(
            reason(check("/tenants/acme?view=full", "acme", no_claim).await),
            DenyReason::ConditionError
        );
    }

    /// The decision for `GET path` with `authorization`.
    async fn get_with(engine: &Engine, path: &str, authorization: &str) -> Decision {
        engine
            .check(&request("GET", path, &[("authorization", authorization)]))
            .await
    }

    /// A stand-in introspection endpoint on loopback (`POST /introspect`): answers for alice
    /// while `active` holds (`active: false` after), counts its calls, and answers 401 unless
    /// the client authenticates as `portcullis` / `s3cret` with HTTP Basic.
    async fn introspection_endpoint(
        active: Arc<std::sync::atomic::AtomicBool>,
        calls: Arc<std::sync::atomic::AtomicU64>,
    ) -> std::net::SocketAddr {
        use base64::Engine as _;
        use std::sync::atomic::Ordering;
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("portcullis:s3cret")
        );
        let handler = move |headers: axum::http::HeaderMap, body: String| {
            let (active, calls, expected) = (active.clone(), calls.clone(), expected.clone());
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                let authorized = headers
                    .get("authorization")
                    .is_some_and(|value| value.as_bytes() == expected.as_bytes());
                if !authorized || !body.starts_with("token=ey") {
                    return (axum::http::StatusCode::UNAUTHORIZED, "{}".to_owned());
                }
                let now = crate::authn::cache::unix_now();
                let answer = if active.load(Ordering::SeqCst) {
                    json!({"active": true, "sub": "alice", "iss": ISSUER, "aud": "orders-api",
                           "scope": "read:documents", "exp": now + 300})
                } else {
                    json!({"active": false})
                };
                (axum::http::StatusCode::OK, answer.to_string())
            }
        };
        let app = axum::Router::new().route("/introspect", axum::routing::post(handler));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        addr
    }

    /// An engine as [`engine_with`] makes it with a `payments` route that requires
    /// introspection at `endpoint`, answers cached for a second.
    async fn engine_introspecting(dir: &Path, endpoint: &str) -> Engine {
        std::fs::write(dir.join("secret.txt"), "s3cret\n").expect("write secret");
        let extra = format!(
            "  - name: payments\n    match: {{path: /payments}}\n    \
             require: {{scopes: [\"read:documents\"], introspect: true}}\n\
             introspection:\n  - {{issuer: test, endpoint: \"{endpoint}\", client_id: portcullis, \
             client_secret_file: secret.txt, cache_ttl: 1s, negative_cache_ttl: 1s}}\n"
        );
        engine_with(dir, &extra).await
    }

    #[tokio::test]
    async fn a_require_introspect_route_refuses_a_jwt_revoked_at_the_provider_once_its_answer_expires()
     {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let (active, calls) = (Arc::new(AtomicBool::new(true)), Arc::new(AtomicU64::new(0)));
        let addr = introspection_endpoint(active.clone(), calls.clone()).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = engine_introspecting(dir.path(), &format!("http://{addr}/introspect")).await;
        let auth = bearer(&token("read:documents"));
        let payments = request("GET", "/payments", &[("authorization", &auth)]);
        for _ in 0..3 {
            let allowed = permit(engine.check(&payments).await);
            // Verified as a JWT, and confirmed active at the provider.
            assert_eq!(allowed.identity.method, AuthMethod::Jwt);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1, "answers are cached");
        // A route without `introspect` never asks.
        permit(get_with(&engine, "/documents/7", &auth).await);
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        // Revoked at the provider: refused once the cached answer (1 s) has expired.
        active.store(false, Ordering::SeqCst);
        let deadline = std::time::Instant::now() + Duration::from_secs(4);
        loop {
            match engine.check(&payments).await {
                Decision::Allow(_) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                decision => {
                    assert_eq!(
                        reason(decision),
                        DenyReason::InvalidToken(TokenProblem::Inactive)
                    );
                    break;
                }
            }
        }
        // The JWT itself is still valid where introspection is not required.
        permit(get_with(&engine, "/documents/7", &auth).await);
    }

    #[tokio::test]
    async fn a_require_introspect_route_fails_closed_when_the_endpoint_is_down() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Port 1 on loopback: nothing listens, the connection is refused.
        let engine = engine_introspecting(dir.path(), "http://127.0.0.1:1/introspect").await;
        let auth = bearer(&token("read:documents"));
        let decision = get_with(&engine, "/payments", &auth).await;
        assert_eq!(
            reason(decision),
            DenyReason::Unavailable(Unavailable::IntrospectionUnreachable)
        );
        // Without an opaque-token endpoint up, JWT routes keep working.
        permit(get_with(&engine, "/documents/7", &auth).await);
        // An opaque token goes to the endpoint too: 503, never an allow.
        let opaque = "Bearer 70FIvVJL7yeF0kfs4p2UtYxfS3AScnVGh8XVT7Nkeg6";
        let decision = get_with(&engine, "/documents/7", opaque).await;
        assert_eq!(
            reason(decision),
            DenyReason::Unavailable(Unavailable::IntrospectionUnreachable)
        );
    }

    #[tokio::test]
    async fn an_api_key_never_passes_a_require_introspect_route() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("secret.txt"), "s3cret\n").expect("write secret");
        let extra = "  - name: payments\n    match: {path: /payments}\n    \
             require: {scopes: [\"read:documents\"], introspect: true}\n\
             introspection:\n  - {issuer: test, endpoint: \"http://127.0.0.1:1/introspect\", \
             client_id: portcullis, client_secret_file: secret.txt}\n";
        let (engine, key) = engine_with_api_key(dir.path(), extra).await;
        let decision = engine
            .check(&request("GET", "/payments", &[("x-api-key", &key)]))
            .await;
        assert_eq!(
            reason(decision),
            DenyReason::InvalidToken(TokenProblem::NotIntrospectable)
        );
    }
}
