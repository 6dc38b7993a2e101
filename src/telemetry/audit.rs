//! Audit events: one structured event per decision at target `portcullis::audit`, with stable
//! dotted field names, grouped by what they describe as linkerd writes them ([`FIELDS`]:
//! `request.id`, `route.name`, `authz.outcome`, `authz.reason`, `auth.subject`, `auth.issuer`,
//! `auth.method`, `http.method`, `http.path`, `client.ip`, `http.status`, `duration_us`).
//! Denials are logged at info; allows at info when `audit_allows` is on, else at debug.
//!
//! An event must never carry a token, a header value or a key: it is built from the decision and
//! a fixed list of request facts, and the path is logged without its query string and without
//! the values of `;` path parameters (where credentials and personal data travel).

use std::borrow::Cow;
use std::time::Duration;

use crate::decision::Decision;
use crate::input::CheckInput;

/// Target of audit events, for routing them with a log filter (`portcullis::audit=info`).
pub const TARGET: &str = "portcullis::audit";

/// Longest path logged; longer ones are cut (at a character boundary) so one request cannot
/// produce an unbounded log line.
const MAX_LOGGED_PATH: usize = 1024;

/// The names of an audit event's fields, in the order they are written (after `message`);
/// `client.ip` only when the address is known. `trace_id` is left for the trace context.
pub const FIELDS: [&str; 12] = [
    "request.id",
    "route.name",
    "authz.outcome",
    "authz.reason",
    "auth.subject",
    "auth.issuer",
    "auth.method",
    "http.method",
    "http.path",
    "client.ip",
    "http.status",
    "duration_us",
];

/// The fields of one audit event (logged under the names of [`FIELDS`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent<'a> {
    pub request_id: &'a str,
    pub route: &'a str,
    pub outcome: &'static str,
    pub reason: &'static str,
    pub subject: &'a str,
    pub issuer: &'a str,
    pub auth_method: &'static str,
    pub method: &'a str,
    pub path: Cow<'a, str>,
    pub source_ip: Option<std::net::IpAddr>,
    pub status: u16,
    pub duration_us: u64,
}

impl<'a> AuditEvent<'a> {
    pub fn new(input: &'a CheckInput, decision: &'a Decision, elapsed: Duration) -> Self {
        let (subject, issuer, auth_method, status) = match decision {
            Decision::Allow(permit) => (
                permit.identity.subject.as_str(),
                permit.identity.issuer.as_str(),
                permit.identity.method.as_str(),
                200,
            ),
            Decision::Deny(denial) => ("", "", "", denial.http_status()),
        };
        Self {
            request_id: input.request_id().unwrap_or(""),
            route: decision.route().unwrap_or(""),
            outcome: decision.outcome(),
            reason: decision.reason(),
            subject,
            issuer,
            auth_method,
            method: &input.method,
            path: loggable_path(&input.path),
            source_ip: input.source.map(|s| s.ip()),
            status,
            duration_us: u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
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
                auth.subject = event.subject,
                auth.issuer = event.issuer,
                auth.method = event.auth_method,
                http.method = event.method,
                http.path = &*event.path,
                client.ip = event.source_ip.map(tracing::field::display),
                http.status = event.status,
                duration_us = event.duration_us,
            },
            "decision"
        );
    }};
}

/// Emits the audit event of one decision.
pub fn record(input: &CheckInput, decision: &Decision, elapsed: Duration, audit_allows: bool) {
    let event = AuditEvent::new(input, decision, elapsed);
    if !decision.is_allow() || audit_allows {
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
        });
        let event = AuditEvent::new(&input, &decision, Duration::ZERO);
        assert_eq!(
            (event.route, event.reason, event.status),
            ("secret", "missing_credential", 404)
        );
    }

    #[test]
    fn allow_event_carries_the_verified_identity() {
        let input = input("/orders");
        let identity = Identity {
            subject: "alice".into(),
            issuer: "https://idp.example.com".into(),
            method: crate::decision::AuthMethod::Jwt,
            ..Identity::anonymous()
        };
        let decision = Decision::Allow(Permit {
            route: Arc::from("orders"),
            identity: Arc::new(identity),
            set_headers: Vec::new(),
            remove_headers: Vec::new(),
            dynamic_metadata: true,
        });
        let event = AuditEvent::new(&input, &decision, Duration::ZERO);
        assert_eq!(
            (event.subject, event.issuer, event.auth_method, event.status),
            ("alice", "https://idp.example.com", "jwt", 200)
        );
        assert_eq!(event.reason, "allowed");
    }
}
