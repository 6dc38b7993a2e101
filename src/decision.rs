//! `Decision`: the one type every stage feeds. A `DenyReason` knows its HTTP status, its error
//! code, its `WWW-Authenticate` challenge and its metric label; `grpc/response.rs` is the only
//! place that turns a decision into protocol messages.

use std::sync::Arc;
use std::time::Duration;

/// How the caller proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    Jwt,
    ApiKey,
    Introspection,
    Anonymous,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Jwt => "jwt",
            Self::ApiKey => "api_key",
            Self::Introspection => "introspection",
            Self::Anonymous => "anonymous",
        }
    }
}

/// A verified caller. Built once per verified credential and shared (token cache) as `Arc`.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub method: AuthMethod,
    pub subject: String,
    pub issuer: String,
    /// Granted scopes, from `scope` (space separated), `scp` (array) or the configured claim.
    pub scopes: Vec<String>,
    pub roles: Vec<String>,
    /// `jti`, `iat`, `exp` and the key id, kept for revocation checks.
    pub token_id: Option<String>,
    pub issued_at: Option<u64>,
    /// Unix seconds; the token cache never keeps an identity past this.
    pub expires_at: Option<u64>,
    pub key_id: Option<String>,
    /// Headers from the issuer's claim-to-header mappings, resolved at verification time.
    pub claim_headers: Vec<(String, String)>,
    /// The verified claims, for conditions and later stages.
    pub claims: Arc<serde_json::Map<String, serde_json::Value>>,
}

impl Identity {
    pub fn anonymous() -> Self {
        Self {
            method: AuthMethod::Anonymous,
            subject: String::new(),
            issuer: String::new(),
            scopes: Vec::new(),
            roles: Vec::new(),
            token_id: None,
            issued_at: None,
            expires_at: None,
            key_id: None,
            claim_headers: Vec::new(),
            claims: Arc::default(),
        }
    }
}

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
    /// Authenticated, but a role, permission or condition fails; 404 when the route hides it.
    Forbidden { not_found: bool },
    /// The route needs MFA the credential does not show (RFC 9470).
    StepUpRequired,
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
    Revoked,
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
            Self::Revoked => "revoked",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// The issuer has no usable keys (never fetched, or nothing usable in the set).
    NoKeys,
}

impl DenyReason {
    pub fn http_status(&self) -> u16 {
        match self {
            Self::BadPath | Self::BadAuthority | Self::CredentialInQuery => 400,
            Self::NoRoute { status } => *status,
            Self::MissingCredential | Self::InvalidToken(_) | Self::StepUpRequired => 401,
            Self::InsufficientScope { .. } => 403,
            Self::Forbidden { not_found: false } => 403,
            Self::Forbidden { not_found: true } => 404,
            Self::TooManyAttempts { .. } => 429,
            Self::Unavailable(_) => 503,
        }
    }

    /// The `error` field of the JSON body: generic, never which check failed.
    pub fn error_code(&self) -> &'static str {
        match self.http_status() {
            400 => "bad_request",
            401 => "unauthorized",
            403 => "forbidden",
            404 => "not_found",
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
            Self::StepUpRequired => Some(
                r#"Bearer realm="portcullis", error="insufficient_user_authentication""#.to_owned(),
            ),
            _ => None,
        }
    }

    /// Bounded label for metrics and the audit `reason` field.
    pub fn label(&self) -> &'static str {
        match self {
            Self::BadPath => "bad_path",
            Self::BadAuthority => "bad_authority",
            Self::CredentialInQuery => "credential_in_query",
            Self::NoRoute { .. } => "no_route",
            Self::MissingCredential => "missing_credential",
            Self::InvalidToken(problem) => problem.as_str(),
            Self::InsufficientScope { .. } => "insufficient_scope",
            Self::Forbidden { .. } => "forbidden",
            Self::StepUpRequired => "step_up_required",
            Self::TooManyAttempts { .. } => "too_many_attempts",
            Self::Unavailable(Unavailable::NoKeys) => "no_keys",
        }
    }
}

/// A refusal, with what the response needs besides the reason.
#[derive(Debug, Clone)]
pub struct Denial {
    pub route: Option<Arc<str>>,
    pub reason: DenyReason,
}

#[derive(Debug, Clone)]
pub enum Decision {
    Allow(Permit),
    Deny(Denial),
}

impl Decision {
    pub fn deny(route: Option<Arc<str>>, reason: DenyReason) -> Self {
        Self::Deny(Denial { route, reason })
    }

    pub fn is_allow(&self) -> bool {
        matches!(self, Self::Allow(_))
    }

    /// `allow` or `deny`, for metrics and audit.
    pub fn outcome(&self) -> &'static str {
        if self.is_allow() { "allow" } else { "deny" }
    }

    pub fn route(&self) -> Option<&str> {
        match self {
            Self::Allow(permit) => Some(&permit.route),
            Self::Deny(denial) => denial.route.as_deref(),
        }
    }

    /// Label for metrics: `allowed` or the deny reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Allow(_) => "allowed",
            Self::Deny(denial) => denial.reason.label(),
        }
    }
}

impl Denial {
    /// The JSON body of the denial: generic code and message, and the request id to quote to
    /// support. It never says which check failed (the audit log does).
    pub fn body(&self, request_id: Option<&str>) -> String {
        serde_json::json!({
            "error": self.reason.error_code(),
            "message": self.reason.message(),
            "request_id": request_id.unwrap_or(""),
        })
        .to_string()
    }

    /// Response headers of the denial, for every transport.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = vec![
            ("content-type", "application/json".to_owned()),
            ("cache-control", "no-store".to_owned()),
        ];
        if let Some(challenge) = self.reason.www_authenticate() {
            headers.push(("www-authenticate", challenge));
        }
        if let DenyReason::TooManyAttempts { retry_after } = &self.reason {
            headers.push(("retry-after", retry_after.as_secs().max(1).to_string()));
        }
        headers
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

    #[test]
    fn hidden_forbidden_is_404_without_challenge() {
        let reason = DenyReason::Forbidden { not_found: true };
        assert_eq!(reason.http_status(), 404);
        assert_eq!(reason.www_authenticate(), None);
    }

    #[test]
    fn body_message_never_names_the_failed_check() {
        let expired = DenyReason::InvalidToken(TokenProblem::Expired);
        let bad_sig = DenyReason::InvalidToken(TokenProblem::BadSignature);
        assert_eq!(expired.message(), bad_sig.message());
        assert_eq!(expired.error_code(), bad_sig.error_code());
    }
}
