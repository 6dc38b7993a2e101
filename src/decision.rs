//! `Decision`: the one type every stage feeds. A `DenyReason` knows its HTTP status, its error
//! code, its `WWW-Authenticate` challenge and its metric label; a `Denial` says how the client
//! is answered (a hidden route answers like no route, whatever the reason). Only the two
//! transport adapters turn a decision into protocol messages: `grpc/response.rs` (a gRPC
//! `CheckResponse`) and `http.rs` (the HTTP `ext_authz` answer).
//!
//! The answer a client sees comes from [`Denial`] (`http_status`, `error_code`, `body`,
//! `headers`), never from its `reason`, which is what the audit log and the metrics say.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

// `Identity` lives in its own leaf module; re-exported here, where the decision types always
// had it.
pub use crate::identity::{AuthMethod, Identity};

/// What Envoy should do with an allowed request.
#[derive(Debug, Clone)]
pub struct Permit {
    pub route: Arc<str>,
    pub identity: Arc<Identity>,
    /// Headers to set on the upstream request (identity headers, claim mappings).
    pub set_headers: Vec<(String, String)>,
    /// Headers to remove: every client-sent `x-auth-*`, and the credential when stripping.
    pub remove_headers: Vec<String>,
    /// Whether the answer carries dynamic metadata (`response.dynamic_metadata`).
    pub dynamic_metadata: bool,
    /// Set on a shadow route (`mode: shadow`) whose policy refused the request: what an
    /// enforcing route would have answered. The request is allowed all the same; the audit
    /// event and the metrics record the refusal (`shadow_deny`).
    pub would_deny: Option<DenyReason>,
}

/// Why a request was refused. The client only ever sees the status, the generic code and
/// message, and the challenge; the variant detail goes to the audit log and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DenyReason {
    /// The path cannot be normalized (`..`, encoded slash, bad escape).
    BadPath,
    /// The `:authority` / `Host` is not a valid host with an optional valid port.
    BadAuthority,
    /// A credential was sent in the URL query string.
    CredentialInQuery,
    /// No route matches; `status` is 404 by default or 403 when configured.
    NoRoute { status: u16 },
    /// The route needs a credential and none was sent.
    MissingCredential,
    /// A credential was sent but is not acceptable.
    InvalidToken(TokenProblem),
    /// Authenticated, but a required scope is missing. `required` is the space-separated list.
    InsufficientScope { required: String },
    /// Authenticated, but a role or permission is missing.
    Forbidden,
    /// Authenticated, but the route's `when` condition is false.
    ConditionFailed,
    /// Authenticated, but the route's `when` condition could not be evaluated (a missing
    /// claim or field, a wrong type): refused, fail closed.
    ConditionError,
    /// The route needs a stronger or more recent user authentication than the credential shows
    /// (RFC 9470); the challenge tells the client what to ask its authorization server for.
    StepUpRequired(StepUp),
    /// A POST, PUT or PATCH whose `content-type` is not one of the route's `content_types`.
    UnsupportedMediaType,
    /// A POST or PATCH without the `Idempotency-Key` header the route requires.
    MissingIdempotencyKey,
    /// Too many failed attempts from one source.
    TooManyAttempts { retry_after: Duration },
    /// portcullis cannot decide (no keys for the issuer, dependency down): fail closed.
    Unavailable(Unavailable),
}

/// Detail of an invalid credential, for the audit log and the metric label only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenProblem {
    TooLarge,
    Malformed,
    ForbiddenHeader,
    UnsupportedAlgorithm,
    UnknownIssuer,
    UnknownKey,
    KeyMismatch,
    BadSignature,
    Expired,
    NotYetValid,
    IssuedInFuture,
    MissingClaim,
    WrongAudience,
    WrongType,
    LifetimeTooLong,
    /// A claim copied into a header (subject, scope, role, claim header) has control
    /// characters or leading or trailing whitespace.
    UnsafeClaim,
    Revoked,
    /// An API key whose checksum does not match (mistyped or made up).
    BadChecksum,
    /// An API key of another environment (`pk_test_` on a `live` deployment).
    WrongEnvironment,
    /// An API key whose id is not in the keys file.
    UnknownApiKey,
    /// An API key whose id is known but whose secret does not match.
    WrongSecret,
    /// The issuer's introspection endpoint answered `active: false` (revoked, expired or
    /// unknown at the provider).
    Inactive,
    /// The route requires introspection and the credential cannot be introspected (an API key,
    /// or a JWT of an issuer without an `introspection` entry).
    NotIntrospectable,
}

impl TokenProblem {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TooLarge => "too_large",
            Self::Malformed => "malformed",
            Self::ForbiddenHeader => "forbidden_header",
            Self::UnsupportedAlgorithm => "unsupported_algorithm",
            Self::UnknownIssuer => "unknown_issuer",
            Self::UnknownKey => "unknown_key",
            Self::KeyMismatch => "key_mismatch",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::IssuedInFuture => "issued_in_future",
            Self::MissingClaim => "missing_claim",
            Self::WrongAudience => "wrong_audience",
            Self::WrongType => "wrong_type",
            Self::LifetimeTooLong => "lifetime_too_long",
            Self::UnsafeClaim => "unsafe_claim",
            Self::Revoked => "revoked",
            Self::BadChecksum => "bad_checksum",
            Self::WrongEnvironment => "wrong_environment",
            Self::UnknownApiKey => "unknown_api_key",
            Self::WrongSecret => "wrong_secret",
            Self::Inactive => "inactive",
            Self::NotIntrospectable => "not_introspectable",
        }
    }
}

/// What a step-up challenge asks for (RFC 9470 §3): the `acr_values` and `max_age` parameters
/// of the `insufficient_user_authentication` challenge, each sent only when set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepUp {
    /// Acceptable authentication context class references, space separated, in order of
    /// preference (`"phrh phr"`). Shared with the route's configuration, not copied per denial.
    pub acr_values: Option<Arc<str>>,
    /// Longest time, in seconds, since the user last authenticated.
    pub max_age: Option<u64>,
}

impl StepUp {
    /// `Bearer realm="portcullis", error="insufficient_user_authentication"` and the parameters
    /// that are set.
    fn challenge(&self) -> String {
        let mut challenge =
            r#"Bearer realm="portcullis", error="insufficient_user_authentication""#.to_owned();
        if let Some(acr_values) = &self.acr_values {
            challenge.push_str(r#", acr_values=""#);
            push_quoted(&mut challenge, acr_values);
            challenge.push('"');
        }
        if let Some(max_age) = self.max_age {
            // Quoted, as RFC 9470 §3 writes it (`max_age="5"`); writing into a String cannot
            // fail.
            let _ = write!(challenge, r#", max_age="{max_age}""#);
        }
        challenge
    }
}

/// The inside of a quoted-string (RFC 9110 §5.6.4): `"` and `\` become quoted pairs.
fn push_quoted(out: &mut String, value: &str) {
    for c in value.chars() {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// The issuer has no usable keys (never fetched, or nothing usable in the set).
    NoKeys,
    /// portcullis decided but cannot send its answer (an identity header value that is not a
    /// valid HTTP header value): its own fault, answered 500.
    Internal,
    /// The introspection endpoint could not be asked in time (down, slow, refused the client,
    /// answered an HTTP error, or its discovery failed).
    IntrospectionUnreachable,
    /// The introspection endpoint answered something that is not an RFC 7662 response (not
    /// JSON, no boolean `active`, a member of the wrong type, too large).
    IntrospectionBadResponse,
}

impl DenyReason {
    pub fn http_status(&self) -> u16 {
        match self {
            Self::BadPath | Self::BadAuthority | Self::CredentialInQuery => 400,
            Self::NoRoute { status } => *status,
            Self::MissingCredential | Self::InvalidToken(_) | Self::StepUpRequired(_) => 401,
            Self::InsufficientScope { .. } => 403,
            Self::Forbidden | Self::ConditionFailed | Self::ConditionError => 403,
            Self::UnsupportedMediaType => 415,
            Self::MissingIdempotencyKey => 400,
            Self::TooManyAttempts { .. } => 429,
            Self::Unavailable(
                Unavailable::NoKeys
                | Unavailable::IntrospectionUnreachable
                | Unavailable::IntrospectionBadResponse,
            ) => 503,
            Self::Unavailable(Unavailable::Internal) => 500,
        }
    }

    /// The `error` field of the JSON body: generic, never which check failed.
    pub fn error_code(&self) -> &'static str {
        match self.http_status() {
            400 => "bad_request",
            401 => "unauthorized",
            403 => "forbidden",
            404 => "not_found",
            415 => "unsupported_media_type",
            429 => "too_many_requests",
            _ => "unavailable",
        }
    }

    /// The `message` field of the JSON body.
    pub fn message(&self) -> &'static str {
        match self.http_status() {
            400 => "The request cannot be processed.",
            401 => "Authentication is required.",
            403 => "Access to this resource is denied.",
            404 => "Not found.",
            415 => "The request's content type is not accepted.",
            429 => "Too many requests.",
            _ => "The service cannot authorize requests right now.",
        }
    }

    /// `WWW-Authenticate` per RFC 6750 (and RFC 9470 for step-up).
    pub fn www_authenticate(&self) -> Option<String> {
        match self {
            Self::MissingCredential => Some(r#"Bearer realm="portcullis""#.to_owned()),
            Self::InvalidToken(_) => {
                Some(r#"Bearer realm="portcullis", error="invalid_token""#.to_owned())
            }
            Self::InsufficientScope { required } => Some(format!(
                r#"Bearer realm="portcullis", error="insufficient_scope", scope="{required}""#
            )),
            Self::StepUpRequired(step_up) => Some(step_up.challenge()),
            _ => None,
        }
    }

    /// Bounded label for metrics and the audit `authz.reason` field.
    pub fn label(&self) -> &'static str {
        match self {
            Self::BadPath => "bad_path",
            Self::BadAuthority => "bad_authority",
            Self::CredentialInQuery => "credential_in_query",
            Self::NoRoute { .. } => "no_route",
            Self::MissingCredential => "missing_credential",
            Self::InvalidToken(problem) => problem.as_str(),
            Self::InsufficientScope { .. } => "insufficient_scope",
            Self::Forbidden => "forbidden",
            Self::ConditionFailed => "condition_failed",
            Self::ConditionError => "condition_error",
            Self::StepUpRequired(_) => "step_up_required",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::MissingIdempotencyKey => "missing_idempotency_key",
            Self::TooManyAttempts { .. } => "too_many_attempts",
            Self::Unavailable(Unavailable::NoKeys) => "no_keys",
            Self::Unavailable(Unavailable::Internal) => "internal",
            Self::Unavailable(Unavailable::IntrospectionUnreachable) => "introspection_unreachable",
            Self::Unavailable(Unavailable::IntrospectionBadResponse) => {
                "introspection_bad_response"
            }
        }
    }
}

impl DenyReason {
    /// Whether a route that hides itself answers this refusal like a path with no route: every
    /// refusal of the caller (no credential, a bad one, a missing scope or permission, too many
    /// failures), so that no answer tells the route exists. `Unavailable` is portcullis's own
    /// failure, not the caller's, and stays a visible 503 (Envoy's failure handling and the
    /// operator's alerts depend on it); 400s are decided before any route is looked up.
    pub fn hideable(&self) -> bool {
        match self {
            Self::MissingCredential
            | Self::InvalidToken(_)
            | Self::InsufficientScope { .. }
            | Self::Forbidden
            | Self::ConditionFailed
            | Self::ConditionError
            | Self::StepUpRequired(_)
            | Self::UnsupportedMediaType
            | Self::MissingIdempotencyKey
            | Self::TooManyAttempts { .. } => true,
            Self::BadPath
            | Self::BadAuthority
            | Self::CredentialInQuery
            | Self::NoRoute { .. }
            | Self::Unavailable(_) => false,
        }
    }
}

/// A refusal, with what the response needs besides the reason.
#[derive(Debug, Clone)]
pub struct Denial {
    pub route: Option<Arc<str>>,
    /// Why, always the real reason: the audit `authz.reason` and the metric label.
    pub reason: DenyReason,
    /// Set when the route hides itself (`on_deny: not_found`): the client gets exactly what a
    /// path with no route gets — status, body and headers — whatever `reason` is.
    pub hidden: Option<Hidden>,
    /// The id of the API key that was refused (the public part of a well-formed key, never
    /// the secret), for the audit event: which key is failing. `None` for anything else.
    pub key_id: Option<Arc<str>>,
}

/// How a hidden route's refusals are answered: like no route, with the configured status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hidden {
    /// `response.no_route_status`.
    pub no_route_status: u16,
}

#[derive(Debug, Clone)]
pub enum Decision {
    Allow(Permit),
    Deny(Denial),
}

impl Decision {
    pub fn deny(route: Option<Arc<str>>, reason: DenyReason) -> Self {
        Self::Deny(Denial {
            route,
            reason,
            hidden: None,
            key_id: None,
        })
    }

    pub fn is_allow(&self) -> bool {
        matches!(self, Self::Allow(_))
    }

    /// `allow`, `deny`, or `shadow_deny` (allowed by a shadow route that would have denied),
    /// for metrics and audit.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::Allow(Permit {
                would_deny: Some(_),
                ..
            }) => "shadow_deny",
            Self::Allow(_) => "allow",
            Self::Deny(_) => "deny",
        }
    }

    pub fn route(&self) -> Option<&str> {
        self.route_name().map(|route| &**route)
    }

    /// [`route`](Self::route), shared: a clone is a reference count, not a copy.
    pub fn route_name(&self) -> Option<&Arc<str>> {
        match self {
            Self::Allow(permit) => Some(&permit.route),
            Self::Deny(denial) => denial.route.as_ref(),
        }
    }

    /// Label for metrics: `allowed` or the deny reason (a shadow route's would-be one).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Allow(Permit {
                would_deny: Some(reason),
                ..
            }) => reason.label(),
            Self::Allow(_) => "allowed",
            Self::Deny(denial) => denial.reason.label(),
        }
    }
}

impl Denial {
    /// The reason the client is answered for: the real one, or no route when hidden.
    fn answered(&self) -> Cow<'_, DenyReason> {
        match self.hidden {
            Some(Hidden { no_route_status }) => Cow::Owned(DenyReason::NoRoute {
                status: no_route_status,
            }),
            None => Cow::Borrowed(&self.reason),
        }
    }

    /// The HTTP status the client gets.
    pub fn http_status(&self) -> u16 {
        self.answered().http_status()
    }

    /// The generic error code the client gets (also the gRPC status message).
    pub fn error_code(&self) -> &'static str {
        self.answered().error_code()
    }

    /// The JSON body of the denial: generic code and message, and the request id to quote to
    /// support. It never says which check failed (the audit log does).
    pub fn body(&self, request_id: Option<&str>) -> String {
        let answered = self.answered();
        serde_json::json!({
            "error": answered.error_code(),
            "message": answered.message(),
            "request_id": request_id.unwrap_or(""),
        })
        .to_string()
    }

    /// Response headers of the denial, for every transport.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let answered = self.answered();
        let mut headers = vec![
            ("content-type", "application/json".to_owned()),
            ("cache-control", "no-store".to_owned()),
        ];
        if let Some(challenge) = answered.www_authenticate() {
            headers.push(("www-authenticate", challenge));
        }
        if let DenyReason::TooManyAttempts { retry_after } = answered.as_ref() {
            headers.push(("retry-after", retry_after.as_secs().max(1).to_string()));
        }
        headers
    }
}

/// Response options (design.md "Response contract"): the engine's own type, which the
/// configuration compiles into (`config::ResponseSettings` re-exports it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseSettings {
    /// Remove the credential header before the request goes upstream (default on).
    pub strip_credentials: bool,
    /// Return dynamic metadata `portcullis: {subject, method, route}` with allowed checks
    /// (default on). Building and merging it costs Envoy and portcullis a few µs per check.
    pub dynamic_metadata: bool,
    /// 404 (default) or 403 when no route matches.
    pub no_route_status: u16,
}

impl Default for ResponseSettings {
    fn default() -> Self {
        Self {
            strip_credentials: true,
            dynamic_metadata: true,
            no_route_status: 404,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_credential_challenge_has_no_error_attribute() {
        let challenge = DenyReason::MissingCredential.www_authenticate();
        assert_eq!(challenge.as_deref(), Some(r#"Bearer realm="portcullis""#));
    }

    #[test]
    fn insufficient_scope_names_the_needed_scopes() {
        let reason = DenyReason::InsufficientScope {
            required: "read:documents write:documents".into(),
        };
        assert_eq!(reason.http_status(), 403);
        assert_eq!(
            reason.www_authenticate().as_deref(),
            Some(
                r#"Bearer realm="portcullis", error="insufficient_scope", scope="read:documents write:documents""#
            )
        );
    }

    /// RFC 9470 §3: a step-up refusal is a 401 whose challenge carries the parameters the route
    /// asks for, and only those.
    #[test]
    fn step_up_challenge_carries_only_the_parameters_set() {
        let challenge = |acr_values: Option<&str>, max_age| {
            let reason = DenyReason::StepUpRequired(StepUp {
                acr_values: acr_values.map(Arc::from),
                max_age,
            });
            assert_eq!(reason.http_status(), 401);
            assert_eq!(reason.label(), "step_up_required");
            reason.www_authenticate().unwrap_or_default()
        };
        let base = r#"Bearer realm="portcullis", error="insufficient_user_authentication""#;
        assert_eq!(challenge(None, None), base);
        assert_eq!(
            challenge(Some("phrh phr"), Some(300)),
            format!(r#"{base}, acr_values="phrh phr", max_age="300""#)
        );
        assert_eq!(
            challenge(Some("urn:mace:incommon:iap:silver"), None),
            format!(r#"{base}, acr_values="urn:mace:incommon:iap:silver""#)
        );
        assert_eq!(challenge(None, Some(0)), format!(r#"{base}, max_age="0""#));
        // A value cannot end the quoted-string early.
        assert_eq!(
            challenge(Some(r#"a" b\"#), None),
            format!(r#"{base}, acr_values="a\" b\\""#)
        );
    }

    /// A hidden route's refusal is answered exactly like no route (status, code, body,
    /// headers), while the reason the audit log and the metrics see stays the real one.
    #[test]
    fn a_hidden_denial_is_answered_like_no_route_and_keeps_its_reason() {
        for status in [404, 403] {
            let no_route = Denial {
                route: None,
                reason: DenyReason::NoRoute { status },
                hidden: None,
                key_id: None,
            };
            for reason in [
                DenyReason::MissingCredential,
                DenyReason::InvalidToken(TokenProblem::Expired),
                DenyReason::InsufficientScope {
                    required: "admin".into(),
                },
                DenyReason::Forbidden,
                DenyReason::StepUpRequired(StepUp {
                    acr_values: Some("phrh".into()),
                    max_age: Some(300),
                }),
                DenyReason::TooManyAttempts {
                    retry_after: Duration::from_secs(7),
                },
            ] {
                assert!(reason.hideable(), "{reason:?}");
                let hidden = Denial {
                    route: Some("secret".into()),
                    reason: reason.clone(),
                    hidden: Some(Hidden {
                        no_route_status: status,
                    }),
                    key_id: None,
                };
                assert_eq!(hidden.http_status(), status, "{reason:?}");
                assert_eq!(hidden.error_code(), no_route.error_code(), "{reason:?}");
                assert_eq!(
                    hidden.body(Some("r")),
                    no_route.body(Some("r")),
                    "{reason:?}"
                );
                assert_eq!(hidden.headers(), no_route.headers(), "{reason:?}");
                let decision = Decision::Deny(hidden);
                assert_eq!(decision.reason(), reason.label());
            }
        }
        assert!(!DenyReason::Unavailable(Unavailable::NoKeys).hideable());
        assert!(!DenyReason::Unavailable(Unavailable::Internal).hideable());
    }

    #[test]
    fn body_message_never_names_the_failed_check() {
        let expired = DenyReason::InvalidToken(TokenProblem::Expired);
        let bad_sig = DenyReason::InvalidToken(TokenProblem::BadSignature);
        assert_eq!(expired.message(), bad_sig.message());
        assert_eq!(expired.error_code(), bad_sig.error_code());
    }
}
