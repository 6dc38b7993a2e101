//! `portcullis explain`: one request, decided offline by the real engine, with the reasoning a
//! person (or, as JSON, a tool) needs: the normalized path and host, every route tried and why
//! it did not match, each requirement of the matched route with pass or fail, and the answer —
//! outcome, status, reason and the headers that would be returned.
//!
//! The caller is anonymous, a set of claims mapped through the matching issuer's claim mapping,
//! or a JWT whose claims are decoded and checked (algorithm, type, `exp`, `aud`...) but whose
//! signature is NOT verified: no key set is fetched. The output says which.
//!
//! The decision comes from [`Engine`]'s own stages ([`request_line`], the route table,
//! [`Engine::authorized`]); the per-requirement list comes from [`authz::evaluate`], the same
//! checks `authorize` runs. Nothing here decides on its own.

use std::fmt::Write as _;
use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::authn::cache::unix_now;
use crate::authn::{IssuerConfig, jwt};
use crate::authz::hygiene::HygieneProblem;
use crate::authz::routes::Miss;
use crate::authz::{self, Mode, OnDeny, Policy, Refusal, Resource};
use crate::config::Config;
use crate::decision::{Decision, DenyReason, Identity, TokenProblem};
use crate::engine::{Engine, RequestLine, Shared, request_line};
use crate::input::{CheckInput, Headers};

/// The request to explain.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub method: String,
    /// The request target as sent: path and query string.
    pub path: String,
    pub host: String,
    /// Request headers, in order (names are lower-cased).
    pub headers: Vec<(String, String)>,
}

/// Who is asking.
#[derive(Debug, Clone)]
pub enum Caller {
    /// No credential at all.
    Anonymous,
    /// These claims, taken as given (nothing is verified), mapped through the claim mapping of
    /// the issuer their `iss` names (or of the only issuer).
    Claims(Map<String, Value>),
    /// A JWT: decoded and checked against its issuer's policy, signature NOT verified.
    Token(String),
}

/// A caller the explanation cannot be built for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExplainError {
    #[error(
        "the claims carry no `iss` and the configuration has {0} issuers: add `iss` to say which one maps them"
    )]
    AmbiguousIssuer(usize),
}

/// One route tried, in table order, up to the one that matched.
#[derive(Debug, Clone)]
pub struct RouteTried {
    pub name: String,
    /// The path parameters bound, or which part of the request the route did not accept.
    pub outcome: Result<Vec<(String, String)>, Miss>,
    pub mode: Mode,
    pub on_deny: OnDeny,
}

/// One requirement of the matched route.
#[derive(Debug, Clone)]
pub struct RequirementResult {
    /// The `require` key (`scopes`, `roles`, ...).
    pub name: &'static str,
    /// What the route asks for.
    pub asks: String,
    /// `None` when it passes; why not when it fails.
    pub failure: Option<String>,
}

/// The whole reasoning for one request.
#[derive(Debug, Clone)]
pub struct Explanation {
    pub request: Request,
    /// The normalized path and host; `None` when the request line was refused (400).
    pub normalized: Option<(String, String)>,
    /// Who the caller is, as the engine sees it.
    pub caller: String,
    /// What the tool did not check (the signature) or took as given.
    pub notes: Vec<String>,
    pub routes: Vec<RouteTried>,
    /// Every requirement of the matched route, or `None` with the reason they were not
    /// evaluated (no route, an anonymous route, no valid credential).
    pub requirements: Result<Vec<RequirementResult>, String>,
    pub decision: Decision,
}

/// Explains `request` from `caller` under `config`, deciding it with the real engine. Offline:
/// no key set is fetched (none is needed: no signature is verified).
pub fn explain(
    config: &Config,
    request: &Request,
    caller: &Caller,
) -> Result<Explanation, ExplainError> {
    let now = unix_now();
    let mut notes = Vec::new();
    let (resolved, caller_text) = resolve(config, caller, now, &mut notes)?;
    if matches!(caller, Caller::Anonymous)
        && request
            .headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("authorization"))
    {
        notes.push(
            "the caller is anonymous: an authorization header is not read as a credential \
             (pass the token with --token, or its claims with --claims)"
                .into(),
        );
    }
    let mut headers = request.headers.clone();
    if let Caller::Token(token) = caller {
        headers.push(("authorization".to_owned(), format!("Bearer {token}")));
    }
    let input = CheckInput {
        method: request.method.clone(),
        host: request.host.clone(),
        path: request.path.clone(),
        headers: Headers::new(headers),
        ..CheckInput::default()
    };
    // Outside a tokio runtime the engine's key stores never start fetching: offline by design.
    let engine = Engine::new(config, &Shared::default());
    let mut explanation = Explanation {
        request: request.clone(),
        normalized: None,
        caller: caller_text,
        notes,
        routes: Vec::new(),
        requirements: Err(String::new()),
        decision: engine.no_route(),
    };

    let RequestLine { path, query, host } = match request_line(&input) {
        Ok(line) => line,
        Err(reason) => {
            explanation.requirements = Err("the request line is refused before routing".into());
            explanation.decision = Decision::deny(None, reason);
            return Ok(explanation);
        }
    };
    explanation.normalized = Some((path.clone(), host.to_string()));

    let mut matched = None;
    for route in engine.routes().routes() {
        let outcome = route.matcher.check(&input.method, &host, &path);
        explanation.routes.push(RouteTried {
            name: route.name.to_string(),
            outcome: outcome
                .as_ref()
                .map(|params| {
                    params
                        .0
                        .iter()
                        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                        .collect()
                })
                .map_err(|miss| *miss),
            mode: route.mode,
            on_deny: route.on_deny,
        });
        if let Ok(params) = outcome {
            matched = Some((route, params));
            break;
        }
    }
    let Some((route, params)) = matched else {
        explanation.requirements = Err("no route matches".into());
        return Ok(explanation);
    };
    let requirements = match &route.policy {
        Policy::Anonymous => {
            explanation.requirements = Err("the route allows anonymous callers".into());
            explanation.decision = engine.permit(route, engine.anonymous(), &input, None);
            return Ok(explanation);
        }
        Policy::Require(requirements) => requirements,
    };
    let identity = match resolved {
        Resolved::Anonymous => {
            explanation.requirements = Err("no credential: authentication comes first".into());
            explanation.decision = engine.deny(route, DenyReason::MissingCredential);
            return Ok(explanation);
        }
        Resolved::Invalid(problem) => {
            explanation.requirements = Err(format!(
                "the credential is refused ({}): authentication comes first",
                problem.as_str()
            ));
            explanation.decision = engine.deny(route, DenyReason::InvalidToken(problem));
            return Ok(explanation);
        }
        Resolved::Identity(identity) => identity,
    };
    let resource = Resource {
        route: &route.name,
        method: &input.method,
        host: &host,
        path: &path,
        params,
        now,
        headers: &input.headers,
        query,
        source: input.source,
        principal: input.source_principal.as_deref(),
    };
    explanation.requirements = Ok(authz::evaluate(requirements, &identity, &resource)
        .into_iter()
        .map(|(step, result)| RequirementResult {
            name: step.name,
            asks: (step.describe)(requirements),
            failure: result
                .err()
                .map(|refusal| match (&refusal, &requirements.when) {
                    // The condition's own value (or why it has none), as the issue asks.
                    (Refusal::ConditionFailed | Refusal::ConditionError, Some(condition)) => {
                        match condition.value_text(&identity, &resource) {
                            Ok(value) => format!("the condition gives {value}"),
                            Err(error) => format!("the condition cannot be evaluated: {error}"),
                        }
                    }
                    _ => failure(&refusal, &identity),
                }),
        })
        .collect());
    explanation.decision = engine.authorized(route, requirements, identity, &resource, &input);
    Ok(explanation)
}

/// The caller as the engine would see it after authentication.
enum Resolved {
    Anonymous,
    Identity(Arc<Identity>),
    /// A credential authentication refuses (401).
    Invalid(TokenProblem),
}

fn resolve(
    config: &Config,
    caller: &Caller,
    now: u64,
    notes: &mut Vec<String>,
) -> Result<(Resolved, String), ExplainError> {
    match caller {
        Caller::Anonymous => Ok((Resolved::Anonymous, "anonymous (no credential)".into())),
        Caller::Claims(claims) => {
            notes.push(
                "identity built from the given claims through the issuer's claim mapping; \
                 nothing was verified (no signature, exp or aud check)"
                    .into(),
            );
            let iss = claims.get("iss").and_then(Value::as_str);
            let Some(issuer) = issuer_for(config, iss)? else {
                return Ok((
                    Resolved::Invalid(TokenProblem::UnknownIssuer),
                    format!("claims of an unknown issuer {}", iss.unwrap_or("")),
                ));
            };
            Ok(identified(
                jwt::identity_from_claims(claims.clone(), issuer),
                issuer,
                "claims",
            ))
        }
        Caller::Token(token) => {
            notes.push(
                "the token's signature was NOT verified (explain works offline); its algorithm, \
                 type and registered claims (iss, aud, exp, nbf, iat) were checked"
                    .into(),
            );
            let unverified = match jwt::parse(token, config.authn.max_token_bytes) {
                Ok(unverified) => unverified,
                Err(problem) => return Ok((Resolved::Invalid(problem), "a token".into())),
            };
            let Some(iss) = unverified.issuer() else {
                let problem = TokenProblem::MissingClaim;
                return Ok((Resolved::Invalid(problem), "a token without iss".into()));
            };
            let Some(issuer) = config.issuers.iter().find(|issuer| issuer.issuer == iss) else {
                let text = format!("a token of an unknown issuer {iss}");
                return Ok((Resolved::Invalid(TokenProblem::UnknownIssuer), text));
            };
            let identity = unverified
                .check(issuer, now)
                .and_then(jwt::Checked::identity_unverified);
            Ok(identified(identity, issuer, "token"))
        }
    }
}

fn identified(
    identity: Result<Identity, TokenProblem>,
    issuer: &IssuerConfig,
    what: &str,
) -> (Resolved, String) {
    match identity {
        Ok(identity) => {
            let text = format!(
                "{what} of issuer {} ({}): subject {}, scopes [{}], roles [{}], amr [{}], acr {}",
                issuer.name,
                issuer.issuer,
                identity.subject,
                identity.scopes.join(" "),
                identity.roles.join(", "),
                identity.user_authentication.amr.join(" "),
                identity.user_authentication.acr.as_deref().unwrap_or("-"),
            );
            (Resolved::Identity(Arc::new(identity)), text)
        }
        Err(problem) => (
            Resolved::Invalid(problem),
            format!(
                "{what} of issuer {} that its claim mapping refuses: {}",
                issuer.name,
                problem.as_str()
            ),
        ),
    }
}

/// The issuer whose claim mapping applies: the one `iss` names (`None`: none does), else the
/// only one.
fn issuer_for<'c>(
    config: &'c Config,
    iss: Option<&str>,
) -> Result<Option<&'c IssuerConfig>, ExplainError> {
    match (iss, config.issuers.as_slice()) {
        (Some(iss), issuers) => Ok(issuers.iter().find(|issuer| issuer.issuer == iss)),
        (None, [only]) => Ok(Some(only)),
        (None, []) => Ok(None),
        (None, issuers) => Err(ExplainError::AmbiguousIssuer(issuers.len())),
    }
}

/// Why a requirement failed, for a person: what was missing and what the caller holds.
fn failure(refusal: &Refusal<'_>, identity: &Identity) -> String {
    match refusal {
        Refusal::MissingScopes(missing) => format!(
            "missing {}; granted [{}]",
            missing.join(" "),
            identity.scopes.join(" ")
        ),
        Refusal::NoneOfScopes(_) => format!("granted [{}]", identity.scopes.join(" ")),
        Refusal::MissingRole => format!("holds [{}]", identity.roles.join(", ")),
        Refusal::ConditionFailed => "the condition is false".to_owned(),
        Refusal::ConditionError => "the condition cannot be evaluated".to_owned(),
        Refusal::MissingPermissions(missing) => format!(
            "no held role grants {}; holds [{}]",
            missing.join(", "),
            identity.roles.join(", ")
        ),
        Refusal::StepUp(_) => {
            let user = &identity.user_authentication;
            format!(
                "amr [{}] (multi-factor: {}), acr {}, auth_time {}",
                user.amr.join(" "),
                if user.mfa { "yes" } else { "no" },
                user.acr.as_deref().unwrap_or("-"),
                user.auth_time.map_or("-".to_owned(), |t| t.to_string()),
            )
        }
        Refusal::Hygiene(HygieneProblem::UnsupportedMediaType) => {
            "the content-type is missing or not accepted".into()
        }
        Refusal::Hygiene(HygieneProblem::MissingIdempotencyKey) => {
            "no Idempotency-Key header".into()
        }
    }
}

fn miss_text(miss: Miss) -> &'static str {
    match miss {
        Miss::Method => "method not listed",
        Miss::Host => "host differs",
        Miss::Path => "path does not match",
    }
}

fn mode_text(mode: Mode) -> &'static str {
    match mode {
        Mode::Enforce => "enforce",
        Mode::Shadow => "shadow",
    }
}

impl Explanation {
    /// The HTTP status the client would get (200 when allowed).
    pub fn status(&self) -> u16 {
        match &self.decision {
            Decision::Allow(_) => 200,
            Decision::Deny(denial) => denial.http_status(),
        }
    }

    /// The headers that would be returned: set on the upstream request when allowed, on the
    /// client's answer when denied.
    pub fn headers(&self) -> Vec<(String, String)> {
        match &self.decision {
            Decision::Allow(permit) => permit.set_headers.clone(),
            Decision::Deny(denial) => denial
                .headers()
                .into_iter()
                .map(|(name, value)| (name.to_owned(), value))
                .collect(),
        }
    }

    /// The matched route, if any.
    pub fn route(&self) -> Option<&RouteTried> {
        self.routes.last().filter(|route| route.outcome.is_ok())
    }

    /// For tools: every part of the explanation as one JSON object.
    pub fn to_json(&self) -> Value {
        let routes: Vec<Value> = self
            .routes
            .iter()
            .map(|route| match &route.outcome {
                Ok(params) => json!({
                    "name": route.name,
                    "matched": true,
                    "params": params
                        .iter()
                        .map(|(name, value)| (name.clone(), Value::String(value.clone())))
                        .collect::<Map<String, Value>>(),
                    "mode": mode_text(route.mode),
                    "on_deny": on_deny_text(route.on_deny),
                }),
                Err(miss) => json!({
                    "name": route.name,
                    "matched": false,
                    "miss": match miss { Miss::Method => "method", Miss::Host => "host", Miss::Path => "path" },
                }),
            })
            .collect();
        let requirements = match &self.requirements {
            Ok(results) => Value::Array(
                results
                    .iter()
                    .map(|result| {
                        json!({
                            "name": result.name,
                            "asks": result.asks,
                            "passed": result.failure.is_none(),
                            "detail": result.failure,
                        })
                    })
                    .collect(),
            ),
            Err(_) => Value::Null,
        };
        let mut decision = json!({
            "outcome": self.decision.outcome(),
            "status": self.status(),
            "reason": self.decision.reason(),
            "would_deny": self.decision.outcome() == "shadow_deny",
            "headers": self.headers().into_iter()
                .map(|(name, value)| (name, Value::String(value)))
                .collect::<Map<String, Value>>(),
        });
        match &self.decision {
            Decision::Allow(permit) => {
                decision["remove_headers"] = json!(permit.remove_headers);
            }
            Decision::Deny(denial) => {
                let body = denial.body(None);
                decision["body"] = serde_json::from_str(&body).unwrap_or(Value::String(body));
            }
        }
        json!({
            "request": {
                "method": self.request.method,
                "path": self.request.path,
                "host": self.request.host,
            },
            "normalized": self.normalized.as_ref().map(|(path, host)| json!({"path": path, "host": host})),
            "caller": self.caller,
            "notes": self.notes,
            "routes": routes,
            "route": self.route().map(|route| route.name.clone()),
            "requirements": requirements,
            "requirements_skipped": self.requirements.as_ref().err(),
            "decision": decision,
        })
    }

    /// For a person: one fact a line.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = self.write(&mut out);
        out
    }

    fn write(&self, out: &mut String) -> std::fmt::Result {
        let request = &self.request;
        writeln!(
            out,
            "request      {} {} (host {})",
            request.method, request.path, request.host
        )?;
        match &self.normalized {
            Some((path, host)) => {
                writeln!(out, "normalized   path {path}, host {host}")?;
            }
            None => writeln!(out, "normalized   refused: {}", self.decision.reason())?,
        }
        writeln!(out, "caller       {}", self.caller)?;
        for note in &self.notes {
            writeln!(out, "note         {note}")?;
        }
        if self.normalized.is_some() {
            writeln!(out, "routes")?;
            if self.routes.is_empty() {
                writeln!(out, "  (none configured)")?;
            }
            for (index, route) in self.routes.iter().enumerate() {
                match &route.outcome {
                    Err(miss) => writeln!(
                        out,
                        "  {:>2}. {:<24} no match: {}",
                        index + 1,
                        route.name,
                        miss_text(*miss)
                    )?,
                    Ok(params) => {
                        let params: Vec<String> = params
                            .iter()
                            .map(|(name, value)| format!("{name}={value}"))
                            .collect();
                        writeln!(
                            out,
                            "  {:>2}. {:<24} MATCH{} (mode {}, on_deny {})",
                            index + 1,
                            route.name,
                            if params.is_empty() {
                                String::new()
                            } else {
                                format!(" [{}]", params.join(", "))
                            },
                            mode_text(route.mode),
                            on_deny_text(route.on_deny),
                        )?;
                    }
                }
            }
        }
        match &self.requirements {
            Ok(results) if results.is_empty() => {
                writeln!(out, "requirements none (any valid credential)")?;
            }
            Ok(results) => {
                writeln!(out, "requirements")?;
                for result in results {
                    match &result.failure {
                        None => writeln!(out, "  pass  {:<16} {}", result.name, result.asks)?,
                        Some(why) => {
                            writeln!(out, "  FAIL  {:<16} {}: {why}", result.name, result.asks)?
                        }
                    }
                }
            }
            Err(why) if why.is_empty() => {}
            Err(why) => writeln!(out, "requirements not evaluated: {why}")?,
        }
        let outcome = self.decision.outcome();
        writeln!(
            out,
            "decision     {outcome}, status {}, reason {}",
            self.status(),
            self.decision.reason()
        )?;
        if let Decision::Deny(denial) = &self.decision
            && denial.hidden.is_some()
        {
            writeln!(
                out,
                "             (on_deny: not_found: answered exactly like a path with no route)"
            )?;
        }
        if outcome == "shadow_deny" {
            writeln!(
                out,
                "             (shadow mode: allowed; an enforcing route would refuse with {})",
                self.decision.reason()
            )?;
        }
        writeln!(out, "headers")?;
        for (name, value) in self.headers() {
            writeln!(out, "  {name}: {value}")?;
        }
        match &self.decision {
            Decision::Allow(permit) => {
                if !permit.remove_headers.is_empty() {
                    writeln!(out, "removed      {}", permit.remove_headers.join(", "))?;
                }
            }
            Decision::Deny(denial) => writeln!(out, "body         {}", denial.body(None))?,
        }
        Ok(())
    }
}

fn on_deny_text(on_deny: OnDeny) -> &'static str {
    match on_deny {
        OnDeny::Forbidden => "forbidden",
        OnDeny::NotFound => "not_found",
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::json;

    use super::*;

    const ISSUER: &str = "https://idp.example";

    fn config(extra: &str) -> Config {
        let yaml = format!(
            r#"
issuers:
  - name: corp
    issuer: {ISSUER}
    audiences: [api]
    discovery: true
    algorithms: [RS256]
    claims: {{roles: realm_access.roles}}
roles:
  admin: {{permissions: [delete], includes: [user]}}
  user: {{permissions: [write], includes: [viewer]}}
  viewer: [read]
routes:
  - name: health
    match: {{path: /healthz}}
    allow: anonymous
  - name: delete-document
    match: {{methods: [DELETE], path: "/documents/{{id}}"}}
    require: {{scopes: [documents], roles: [admin, user], permissions: [delete], mfa: true}}
{extra}"#
        );
        crate::config::load_str(&yaml, Path::new("portcullis.yaml"))
            .unwrap_or_else(|e| panic!("test config must load: {e}"))
    }

    fn request(method: &str, path: &str) -> Request {
        Request {
            method: method.into(),
            path: path.into(),
            host: "api.example".into(),
            headers: Vec::new(),
        }
    }

    fn claims(value: Value) -> Caller {
        match value {
            Value::Object(claims) => Caller::Claims(claims),
            other => panic!("claims must be an object: {other}"),
        }
    }

    fn failed(explanation: &Explanation) -> Vec<&'static str> {
        match &explanation.requirements {
            Ok(results) => results
                .iter()
                .filter(|result| result.failure.is_some())
                .map(|result| result.name)
                .collect(),
            Err(why) => panic!("requirements not evaluated: {why}"),
        }
    }

    #[test]
    fn every_requirement_is_evaluated_not_only_the_first_refusal() {
        let config = config("");
        let viewer = claims(json!({
            "iss": ISSUER, "sub": "alice", "scope": "openid",
            "realm_access": {"roles": ["viewer"]}, "amr": ["pwd"],
        }));
        let explanation =
            explain(&config, &request("DELETE", "/documents/7"), &viewer).expect("explains");
        assert_eq!(
            failed(&explanation),
            ["scopes", "roles", "permissions", "step_up"]
        );
        // The answer is the engine's: the first refusal in authorize's order.
        assert_eq!(explanation.status(), 403);
        assert_eq!(explanation.decision.reason(), "insufficient_scope");
        let tried: Vec<&str> = explanation.routes.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(tried, ["health", "delete-document"]);
        assert_eq!(explanation.routes[0].outcome, Err(Miss::Path));
    }

    #[test]
    fn claims_go_through_the_issuers_claim_mapping() {
        let config = config("");
        // Roles from realm_access.roles, multi-factor from amr: every requirement passes.
        let admin = claims(json!({
            "iss": ISSUER, "sub": "erin", "scope": "documents",
            "realm_access": {"roles": ["admin"]}, "amr": ["pwd", "otp"],
        }));
        let explanation =
            explain(&config, &request("DELETE", "/documents/7"), &admin).expect("explains");
        assert!(failed(&explanation).is_empty());
        assert_eq!(explanation.status(), 200);
        assert!(
            explanation
                .headers()
                .contains(&("x-auth-roles".into(), "admin".into()))
        );
        // Without amr's second factor the step-up challenge is what the client would get.
        let single = claims(json!({
            "iss": ISSUER, "sub": "erin", "scope": "documents",
            "realm_access": {"roles": ["admin"]}, "amr": "otp",
        }));
        let explanation =
            explain(&config, &request("DELETE", "/documents/7"), &single).expect("explains");
        assert_eq!(failed(&explanation), ["step_up"]);
        assert_eq!(explanation.status(), 401);
        assert!(
            explanation
                .headers()
                .iter()
                .any(|(name, value)| name == "www-authenticate"
                    && value.contains("insufficient_user_authentication"))
        );
    }

    #[test]
    fn a_shadow_route_is_explained_as_allowed_with_the_refusal_it_records() {
        let config = config(
            "  - {name: reports, match: {path: /reports}, require: {scopes: [reports]}, mode: shadow}",
        );
        let reader = claims(json!({"iss": ISSUER, "sub": "alice", "scope": "openid"}));
        let explanation = explain(&config, &request("GET", "/reports"), &reader).expect("explains");
        assert_eq!(explanation.status(), 200);
        assert_eq!(explanation.decision.outcome(), "shadow_deny");
        assert_eq!(explanation.decision.reason(), "insufficient_scope");
        assert!(explanation.render().contains("shadow mode: allowed"));
        assert_eq!(explanation.to_json()["decision"]["would_deny"], true);
    }

    #[test]
    fn claims_that_name_no_issuer_need_a_single_issuer() {
        let mut config = config("  - {name: other, match: {path: /other}, allow: authenticated}");

        let anonymous_iss = claims(json!({"sub": "alice"}));
        assert!(explain(&config, &request("GET", "/healthz"), &anonymous_iss).is_ok());
        let mut second = config.issuers[0].clone();
        second.issuer = "https://other.example".into();
        config.issuers.push(second);
        assert_eq!(
            explain(&config, &request("GET", "/healthz"), &anonymous_iss).err(),
            Some(ExplainError::AmbiguousIssuer(2))
        );
        let stranger = claims(json!({"iss": "https://evil.example", "sub": "mallory"}));
        let explanation = explain(&config, &request("GET", "/other"), &stranger).expect("explains");
        assert_eq!(explanation.decision.reason(), "unknown_issuer");
        assert_eq!(explanation.status(), 401);
    }
}
