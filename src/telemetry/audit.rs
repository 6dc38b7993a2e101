//! Audit events: one structured event per decision at target `portcullis::audit`, with stable
//! dotted field names, grouped by what they describe as linkerd writes them ([`FIELDS`]:
//! `request.id`, `route.name`, `authz.outcome`, `authz.reason`, `authz.would_deny`,
//! `auth.subject`, `auth.issuer`, `auth.method`, `auth.key_id` (the API key's id; empty for other
//! credentials), `http.method`, `http.path`, `client.ip`, `http.status`, `duration_us`), then
//! [`TRACE_ID_FIELD`] when the check's span is sampled.
//! Denials are logged at info; allows at info when `audit_allows` is on, else at debug. A shadow
//! route's would-be denial (`authz.outcome` `shadow_deny`, `authz.would_deny` true, the refusal in
//! `authz.reason`, `http.status` 200: the request went through) is a denial for this purpose.
//!
//! An event must never carry a token, a header value or a key: it is built from the decision and
//! a fixed list of request facts, and the path is logged without its query string and without
//! the values of `;` path parameters (where credentials and personal data travel).

use std::borrow::Cow;
use std::time::Duration;

use crate::decision::{AuthMethod, Decision};
use crate::input::CheckInput;

/// Target of audit events, for routing them with a log filter (`portcullis::audit=info`).
pub const TARGET: &str = "portcullis::audit";

/// Longest path logged; longer ones are cut (at a character boundary) so one request cannot
/// produce an unbounded log line.
const MAX_LOGGED_PATH: usize = 1024;

/// The names of an audit event's fields, in the order they are written (after `message`);
/// `client.ip` only when the address is known. [`TRACE_ID_FIELD`] follows them when the
/// check's span is sampled.
pub const FIELDS: [&str; 14] = [
    "request.id",
    "route.name",
    "authz.outcome",
    "authz.reason",
    "authz.would_deny",
    "auth.subject",
    "auth.issuer",
    "auth.method",
    "auth.key_id",
    "http.method",
    "http.path",
    "client.ip",
    "http.status",
    "duration_us",
];

/// The last field of an audit event whose check span is sampled: the trace id (32 lower-case
/// hex digits), so a log line leads to its trace.
pub const TRACE_ID_FIELD: &str = "trace_id";

/// The fields of one audit event (logged under the names of [`FIELDS`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent<'a> {
    pub request_id: &'a str,
    pub route: &'a str,
    pub outcome: &'static str,
    pub reason: &'static str,
    /// A shadow route let through a request its policy refused.
    pub would_deny: bool,
    pub subject: &'a str,
    pub issuer: &'a str,
    pub auth_method: &'static str,
    /// The id of the API key that proved the identity, or of the well-formed key refused
    /// (never the key); empty otherwise.
    pub key_id: &'a str,
    pub method: &'a str,
    pub path: Cow<'a, str>,
    pub source_ip: Option<std::net::IpAddr>,
    pub status: u16,
    pub duration_us: u64,
    pub trace_id: Option<TraceIdHex>,
}

/// A trace id as the 32 lower-case hex digits W3C and OTLP tools show, formatted on the stack:
/// `TraceId`'s `Display` goes through `u128` formatting with padding, a visible share of a
/// traced check's cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceIdHex([u8; 32]);

impl TraceIdHex {
    pub fn new(trace_id: opentelemetry::trace::TraceId) -> Self {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut hex = [0u8; 32];
        for (pair, byte) in hex.chunks_exact_mut(2).zip(trace_id.to_bytes()) {
            pair[0] = DIGITS[usize::from(byte >> 4)];
            pair[1] = DIGITS[usize::from(byte & 0x0f)];
        }
        Self(hex)
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits are ever written.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl<'a> AuditEvent<'a> {
    pub fn new(input: &'a CheckInput, decision: &'a Decision, elapsed: Duration) -> Self {
        let (subject, issuer, auth_method, key_id, status) = match decision {
            Decision::Allow(permit) => (
                permit.identity.subject.as_str(),
                permit.identity.issuer.as_str(),
                permit.identity.method.as_str(),
                match permit.identity.method {
                    AuthMethod::ApiKey => permit.identity.key_id.as_deref().unwrap_or(""),
                    _ => "",
                },
                200,
            ),
            Decision::Deny(denial) => (
                "",
                "",
                "",
                denial.key_id.as_deref().unwrap_or(""),
                denial.http_status(),
            ),
        };
        Self {
            request_id: input.request_id().unwrap_or(""),
            route: decision.route().unwrap_or(""),
            outcome: decision.outcome(),
            reason: decision.reason(),
            would_deny: matches!(
                decision,
                Decision::Allow(crate::decision::Permit {
                    would_deny: Some(_),
                    ..
                })
            ),
            subject,
            issuer,
            auth_method,
            key_id,
            method: &input.method,
            path: loggable_path(&input.path),
            source_ip: input.source.map(|s| s.ip()),
            status,
            duration_us: u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            trace_id: None,
        }
    }
}

/// The path without query string, fragment or `;` parameter values (`/a;access_token=x/b` is
/// logged as `/a;access_token=/b`, a bare `;x` as `;`), cut to [`MAX_LOGGED_PATH`].
pub fn loggable_path(target: &str) -> Cow<'_, str> {
    let path = target.split(['?', '#']).next().unwrap_or("");
    let path = if path.len() <= MAX_LOGGED_PATH {
        path
    } else {
        let mut end = MAX_LOGGED_PATH;
        while !path.is_char_boundary(end) {
            end -= 1;
        }
        &path[..end]
    };
    if !path.contains(';') {
        return Cow::Borrowed(path);
    }
    let mut logged = String::with_capacity(path.len());
    for (index, segment) in path.split('/').enumerate() {
        if index > 0 {
            logged.push('/');
        }
        let mut params = segment.split(';');
        logged.push_str(params.next().unwrap_or(""));
        for param in params {
            logged.push(';');
            if let Some((name, _value)) = param.split_once('=') {
                logged.push_str(name);
                logged.push('=');
            }
        }
    }
    Cow::Owned(logged)
}

macro_rules! audit_event {
    ($level:ident, $event:expr) => {{
        let event = $event;
        tracing::event!(
            target: $crate::telemetry::audit::TARGET,
            tracing::Level::$level,
            {
                request.id = event.request_id,
                route.name = event.route,
                authz.outcome = event.outcome,
                authz.reason = event.reason,
                authz.would_deny = event.would_deny,
                auth.subject = event.subject,
                auth.issuer = event.issuer,
                auth.method = event.auth_method,
                auth.key_id = event.key_id,
                http.method = event.method,
                http.path = &*event.path,
                client.ip = event.source_ip.map(tracing::field::display),
                http.status = event.status,
                duration_us = event.duration_us,
                trace_id = event.trace_id.as_ref().map(TraceIdHex::as_str),
            },
            "decision"
        );
    }};
}

/// Emits the audit event of one decision; `trace_id` is that of its sampled span, if any.
pub fn record(
    input: &CheckInput,
    decision: &Decision,
    elapsed: Duration,
    audit_allows: bool,
    trace_id: Option<opentelemetry::trace::TraceId>,
) {
    let mut event = AuditEvent::new(input, decision, elapsed);
    event.trace_id = trace_id.map(TraceIdHex::new);
    if !decision.is_allow() || event.would_deny || audit_allows {
        audit_event!(INFO, &event);
    } else {
        audit_event!(DEBUG, &event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::{DenyReason, Identity, Permit, TokenProblem};
    use crate::input::Headers;
    use std::sync::Arc;

    #[test]
    fn trace_id_hex_is_the_w3c_spelling_of_the_trace_id() {
        for hex in [
            "0af7651916cd43dd8448eb211c80319c",
            "00000000000000000000000000000001",
            "ffffffffffffffffffffffffffffffff",
        ] {
            let id = opentelemetry::trace::TraceId::from_hex(hex).expect("hex");
            assert_eq!(TraceIdHex::new(id).as_str(), hex);
            assert_eq!(TraceIdHex::new(id).as_str(), id.to_string());
        }
    }

    fn input(path: &str) -> CheckInput {
        CheckInput {
            method: "GET".into(),
            host: "api.example.com".into(),
            path: path.into(),
            headers: Headers::new([
                ("x-request-id".to_owned(), "req-7".to_owned()),
                (
                    "authorization".to_owned(),
                    "Bearer secret.token.value".to_owned(),
                ),
            ]),
            source: Some("10.0.0.9:4711".parse().expect("addr")),
            peer_certificate: None,
            source_principal: None,
        }
    }

    #[test]
    fn logged_path_drops_the_query_string() {
        assert_eq!(
            loggable_path("/documents/1?access_token=abc"),
            "/documents/1"
        );
        assert_eq!(loggable_path("/a#frag"), "/a");
    }

    #[test]
    fn logged_path_drops_path_parameter_values() {
        assert_eq!(
            loggable_path("/documents;access_token=eyJhbGciOi.x.y/1?q=2"),
            "/documents;access_token=/1"
        );
        assert_eq!(loggable_path("/a;eyJhbGciOi.x.y;v=2/b"), "/a;;v=/b");
        assert_eq!(loggable_path("/plain/path"), "/plain/path");
    }

    #[test]
    fn logged_path_is_bounded_at_a_character_boundary() {
        let long = format!("/{}", "é".repeat(2000));
        let logged = loggable_path(&long);
        assert!(logged.len() <= MAX_LOGGED_PATH);
        assert!(logged.starts_with("/é"));
    }

    #[test]
    fn denial_event_names_the_reason_and_status_but_no_identity() {
        let input = input("/orders?api_key=k");
        let decision = Decision::deny(
            Some(Arc::from("orders")),
            DenyReason::InvalidToken(TokenProblem::BadSignature),
        );
        let event = AuditEvent::new(&input, &decision, Duration::from_micros(42));
        assert_eq!(event.request_id, "req-7");
        assert_eq!(event.route, "orders");
        assert_eq!(event.outcome, "deny");
        assert_eq!(event.reason, "bad_signature");
        assert_eq!(event.status, 401);
        assert_eq!(event.path, "/orders");
        assert_eq!(event.source_ip, Some("10.0.0.9".parse().expect("ip")));
        assert_eq!(event.duration_us, 42);
        assert_eq!(event.subject, "");
    }

    /// An allow portcullis could not send is audited as the refusal it became.
    #[test]
    fn internal_failure_event_is_a_500_with_reason_internal() {
        let input = input("/orders");
        let decision = Decision::deny(
            Some(Arc::from("orders")),
            DenyReason::Unavailable(crate::decision::Unavailable::Internal),
        );
        let event = AuditEvent::new(&input, &decision, Duration::ZERO);
        assert_eq!(
            (event.outcome, event.reason, event.status),
            ("deny", "internal", 500)
        );
    }

    /// A hidden route answers like no route; the audit event says what was answered and why.
    #[test]
    fn hidden_denial_event_has_the_answered_status_and_the_real_reason() {
        let input = input("/secret");
        let decision = Decision::Deny(crate::decision::Denial {
            route: Some(Arc::from("secret")),
            reason: DenyReason::MissingCredential,
            hidden: Some(crate::decision::Hidden {
                no_route_status: 404,
            }),
            key_id: None,
        });
        let event = AuditEvent::new(&input, &decision, Duration::ZERO);
        assert_eq!(
            (event.route, event.reason, event.status),
            ("secret", "missing_credential", 404)
        );
    }

    /// A shadow route's would-be refusal: allowed (200), but the event says what an enforcing
    /// route would have answered, and it is logged like a denial.
    #[test]
    fn shadow_event_records_the_refusal_it_let_through() {
        let input = input("/orders");
        let decision = Decision::Allow(Permit {
            route: Arc::from("orders"),
            identity: Arc::new(Identity {
                subject: "alice".into(),
                method: crate::decision::AuthMethod::Jwt,
                ..Identity::anonymous()
            }),
            set_headers: Vec::new(),
            remove_headers: Vec::new(),
            dynamic_metadata: true,
            would_deny: Some(DenyReason::Forbidden),
        });
        let event = AuditEvent::new(&input, &decision, Duration::ZERO);
        assert_eq!(
            (event.outcome, event.reason, event.would_deny, event.status),
            ("shadow_deny", "forbidden", true, 200)
        );
        assert_eq!(event.subject, "alice");
        let plain = Decision::deny(None, DenyReason::Forbidden);
        assert!(!AuditEvent::new(&input, &plain, Duration::ZERO).would_deny);
    }

    /// An allow on route `orders` for `identity`.
    fn allowed(identity: Identity) -> Decision {
        Decision::Allow(Permit {
            route: Arc::from("orders"),
            identity: Arc::new(identity),
            set_headers: Vec::new(),
            remove_headers: Vec::new(),
            dynamic_metadata: true,
            would_deny: None,
        })
    }

    #[test]
    fn allow_event_carries_the_verified_identity() {
        let input = input("/orders");
        let identity = Identity {
            subject: "alice".into(),
            issuer: "https://idp.example.com".into(),
            method: crate::decision::AuthMethod::Jwt,
            key_id: Some("rsa-2048".into()),
            ..Identity::anonymous()
        };
        let decision = allowed(identity);
        let event = AuditEvent::new(&input, &decision, Duration::ZERO);
        assert_eq!(
            (event.subject, event.issuer, event.auth_method, event.status),
            ("alice", "https://idp.example.com", "jwt", 200)
        );
        assert_eq!(event.reason, "allowed");
        assert_eq!(event.key_id, "", "a JWT's kid is not an API key id");
    }

    #[test]
    fn allow_event_by_api_key_names_the_key_id() {
        let input = input("/orders");
        let decision = allowed(Identity {
            subject: "billing".into(),
            method: AuthMethod::ApiKey,
            key_id: Some("AbCdEf012345".into()),
            ..Identity::anonymous()
        });
        let event = AuditEvent::new(&input, &decision, Duration::ZERO);
        assert_eq!(
            (event.auth_method, event.key_id),
            ("api_key", "AbCdEf012345")
        );
    }
}
