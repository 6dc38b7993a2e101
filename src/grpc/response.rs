//! `Decision` → `CheckResponse`: the one place outcomes become protocol messages.
//!
//! A denial is a successful RPC carrying a non-OK `status` and a `DeniedHttpResponse`; a gRPC
//! error would make Envoy apply its own failure mode instead of our answer.

use prost_types::{Struct, Value, value::Kind};

use crate::decision::{Decision, Denial, Permit};
use crate::proto::envoy::config::core::v3::{HeaderValue, HeaderValueOption, header_value_option};
use crate::proto::envoy::service::auth::v3::{
    CheckResponse, DeniedHttpResponse, OkHttpResponse, check_response::HttpResponse,
};
use crate::proto::envoy::r#type::v3::HttpStatus;
use crate::proto::google::rpc::Status;

/// google.rpc.Code values, as `CheckResponse.status.code` carries them.
mod code {
    use tonic::Code;

    pub const OK: i32 = Code::Ok as i32;
    pub const INVALID_ARGUMENT: i32 = Code::InvalidArgument as i32;
    pub const NOT_FOUND: i32 = Code::NotFound as i32;
    pub const PERMISSION_DENIED: i32 = Code::PermissionDenied as i32;
    pub const RESOURCE_EXHAUSTED: i32 = Code::ResourceExhausted as i32;
    pub const UNAVAILABLE: i32 = Code::Unavailable as i32;
    pub const UNAUTHENTICATED: i32 = Code::Unauthenticated as i32;
}

/// The canonical gRPC code matching an HTTP denial status (design.md).
pub fn rpc_code(http_status: u16) -> i32 {
    match http_status {
        400 => code::INVALID_ARGUMENT,
        401 => code::UNAUTHENTICATED,
        403 => code::PERMISSION_DENIED,
        404 => code::NOT_FOUND,
        // No canonical google.rpc code for 415: the request itself is unacceptable, whatever
        // the server's state, which is INVALID_ARGUMENT (as 400).
        415 => code::INVALID_ARGUMENT,
        429 => code::RESOURCE_EXHAUSTED,
        _ => code::UNAVAILABLE,
    }
}

/// Consumes the decision: the allowed answer's header names and values move into the message.
pub fn check_response(decision: Decision, request_id: Option<&str>) -> CheckResponse {
    match decision {
        Decision::Allow(permit) => allowed(permit),
        Decision::Deny(denial) => denied(&denial, request_id),
    }
}

fn header(name: impl Into<String>, value: String) -> HeaderValueOption {
    // `append` is deprecated in favour of `append_action`; we never set it.
    #[allow(deprecated)]
    HeaderValueOption {
        header: Some(HeaderValue {
            key: name.into(),
            value,
            raw_value: Vec::new(),
        }),
        append: None,
        append_action: header_value_option::HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        keep_empty_value: false,
    }
}

fn string_value(s: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.to_owned())),
    }
}

fn allowed(permit: Permit) -> CheckResponse {
    CheckResponse {
        status: Some(Status {
            code: code::OK,
            message: String::new(),
            details: Vec::new(),
        }),
        dynamic_metadata: permit.dynamic_metadata.then(|| metadata(&permit)),
        http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
            headers: permit
                .set_headers
                .into_iter()
                .map(|(name, value)| header(name, value))
                .collect(),
            headers_to_remove: permit.remove_headers,
            ..Default::default()
        })),
    }
}

/// `{"portcullis": {"subject", "method", "route"}}`, which Envoy files under the filter's
/// namespace for access logs and rate-limit keys.
fn metadata(permit: &Permit) -> Struct {
    let identity = &permit.identity;
    let fields = Struct {
        fields: [
            ("subject".to_owned(), string_value(&identity.subject)),
            ("method".to_owned(), string_value(identity.method.as_str())),
            ("route".to_owned(), string_value(&permit.route)),
        ]
        .into(),
    };
    Struct {
        fields: [(
            "portcullis".to_owned(),
            Value {
                kind: Some(Kind::StructValue(fields)),
            },
        )]
        .into(),
    }
}

fn denied(denial: &Denial, request_id: Option<&str>) -> CheckResponse {
    let status = denial.http_status();
    CheckResponse {
        status: Some(Status {
            code: rpc_code(status),
            message: denial.error_code().to_owned(),
            details: Vec::new(),
        }),
        dynamic_metadata: None,
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: i32::from(status),
            }),
            headers: denial
                .headers()
                .into_iter()
                .map(|(name, value)| header(name, value))
                .collect(),
            body: denial.body(request_id),
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::{DenyReason, TokenProblem};

    fn denied_parts(reason: DenyReason) -> (i32, DeniedHttpResponse) {
        let response = check_response(Decision::deny(None, reason), Some("req-1"));
        let code = response.status.map(|s| s.code).unwrap_or(-1);
        match response.http_response {
            Some(HttpResponse::DeniedResponse(denied)) => (code, denied),
            other => panic!("expected a denied response, got {other:?}"),
        }
    }

    fn header_value<'a>(denied: &'a DeniedHttpResponse, name: &str) -> Option<&'a str> {
        denied
            .headers
            .iter()
            .filter_map(|h| h.header.as_ref())
            .find(|h| h.key == name)
            .map(|h| h.value.as_str())
    }

    #[test]
    fn invalid_token_is_unauthenticated_with_rfc6750_challenge() {
        let (code, denied) = denied_parts(DenyReason::InvalidToken(TokenProblem::Expired));
        assert_eq!(code, code::UNAUTHENTICATED);
        assert_eq!(denied.status.map(|s| s.code), Some(401));
        assert_eq!(
            header_value(&denied, "www-authenticate"),
            Some(r#"Bearer realm="portcullis", error="invalid_token""#)
        );
        assert_eq!(header_value(&denied, "cache-control"), Some("no-store"));
        assert_eq!(
            header_value(&denied, "content-type"),
            Some("application/json")
        );
        let body: serde_json::Value = serde_json::from_str(&denied.body).expect("json body");
        assert_eq!(body["error"], "unauthorized");
        assert_eq!(body["request_id"], "req-1");
        assert!(!denied.body.contains("expired"), "body leaks the reason");
    }

    #[test]
    fn each_status_maps_to_its_canonical_code() {
        let cases = [
            (DenyReason::BadPath, code::INVALID_ARGUMENT),
            (DenyReason::BadAuthority, code::INVALID_ARGUMENT),
            (DenyReason::UnsupportedMediaType, code::INVALID_ARGUMENT),
            (DenyReason::MissingIdempotencyKey, code::INVALID_ARGUMENT),
            (DenyReason::NoRoute { status: 404 }, code::NOT_FOUND),
            (DenyReason::NoRoute { status: 403 }, code::PERMISSION_DENIED),
            (DenyReason::Forbidden, code::PERMISSION_DENIED),
            (
                DenyReason::TooManyAttempts {
                    retry_after: std::time::Duration::from_secs(7),
                },
                code::RESOURCE_EXHAUSTED,
            ),
            (
                DenyReason::Unavailable(crate::decision::Unavailable::NoKeys),
                code::UNAVAILABLE,
            ),
            (
                DenyReason::Unavailable(crate::decision::Unavailable::Internal),
                code::UNAVAILABLE,
            ),
        ];
        for (reason, expected) in cases {
            assert_eq!(denied_parts(reason.clone()).0, expected, "{reason:?}");
        }
    }

    fn permit(dynamic_metadata: bool) -> Permit {
        let mut identity = crate::decision::Identity::anonymous();
        identity.subject = "alice".into();
        Permit {
            route: "documents".into(),
            identity: std::sync::Arc::new(identity),
            set_headers: vec![("x-auth-subject".into(), "alice".into())],
            remove_headers: vec!["authorization".into()],
            dynamic_metadata,
            would_deny: None,
        }
    }

    #[test]
    fn allowed_answer_carries_portcullis_metadata_unless_turned_off() {
        let response = check_response(Decision::Allow(permit(true)), None);
        assert_eq!(response.status.map(|s| s.code), Some(code::OK));
        let metadata = response.dynamic_metadata.expect("metadata on by default");
        let Some(Kind::StructValue(fields)) = metadata.fields["portcullis"].kind.clone() else {
            panic!("`portcullis` must be a struct: {metadata:?}");
        };
        assert_eq!(
            fields.fields["subject"].kind,
            Some(Kind::StringValue("alice".into()))
        );
        assert_eq!(
            fields.fields["route"].kind,
            Some(Kind::StringValue("documents".into()))
        );

        let response = check_response(Decision::Allow(permit(false)), None);
        assert_eq!(response.dynamic_metadata, None);
        let Some(HttpResponse::OkResponse(ok)) = response.http_response else {
            panic!("expected an OK response");
        };
        assert_eq!(ok.headers_to_remove, ["authorization"]);
    }

    #[test]
    fn step_up_is_unauthenticated_with_the_rfc9470_challenge() {
        let (code, denied) = denied_parts(DenyReason::StepUpRequired(crate::decision::StepUp {
            acr_values: Some("phrh".into()),
            max_age: Some(60),
        }));
        assert_eq!(code, code::UNAUTHENTICATED);
        assert_eq!(denied.status.map(|s| s.code), Some(401));
        assert_eq!(
            header_value(&denied, "www-authenticate"),
            Some(
                r#"Bearer realm="portcullis", error="insufficient_user_authentication", acr_values="phrh", max_age="60""#
            )
        );
    }

    #[test]
    fn too_many_attempts_carries_retry_after() {
        let (_, denied) = denied_parts(DenyReason::TooManyAttempts {
            retry_after: std::time::Duration::from_secs(7),
        });
        assert_eq!(header_value(&denied, "retry-after"), Some("7"));
    }
}
