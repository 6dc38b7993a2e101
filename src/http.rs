//! Envoy's HTTP ext_authz mode (`http_service` in the `ext_authz` filter), served on
//! `server.http_listen` for gateways that cannot speak the gRPC variant.
//!
//! What Envoy does (envoy `ext_authz_http_impl.cc`, `ext_authz.proto`):
//! - it sends the original request's method, `:authority` and `:path` (prefixed with
//!   `http_service.path_prefix`), `Authorization`, `Content-Length: 0`, and the headers its
//!   `allowed_headers` list admits — `x-request-id` only when listed there;
//! - a `200` answer, and only `200`, allows: response headers matching
//!   `authorization_response.allowed_upstream_headers` are set (overwriting) on the upstream
//!   request, and the comma-separated names in `x-envoy-auth-headers-to-remove` are removed;
//! - any other 1xx–4xx status denies: that status, the body and the response headers (those
//!   matching `allowed_client_headers`, or all but `Host` when the list is empty) go to the
//!   client;
//! - a 5xx answer is a *failure*, not a denial: Envoy answers with its own `status_on_error`
//!   (403 by default) — or lets the request through when `failure_mode_allow` is on, which must
//!   therefore stay off. Our 503 ("cannot decide") still fails closed with the default setting.
//!
//! The request is translated into a [`CheckInput`] here, decided and recorded by the same
//! [`CheckService::check`] as the gRPC path, and the decision mapped with the transport-free
//! helpers of `decision.rs`. This module holds no policy, and never logs a header value.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::header::{HeaderName, HeaderValue};
use http::{StatusCode, request::Parts};

use crate::decision::{Decision, Denial, DenyReason, Permit, Unavailable};
use crate::input::{CheckInput, Headers};
use crate::service::CheckService;

/// Response header naming the request headers Envoy must remove before going upstream.
pub const HEADERS_TO_REMOVE: &str = "x-envoy-auth-headers-to-remove";

/// Where the downstream client's address is read from. The TCP peer of an authorization request
/// is Envoy itself, so the address can only come from a header Envoy sends; a header a client
/// can forge must not be trusted by default. Nothing is read unless the embedder chooses a
/// source: the default is [`ClientAddress::Ignore`]. The failed-attempt limiter reads a header
/// only when `limits.failed_attempts.client_address` names it with its trusted hops.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ClientAddress {
    /// `x-envoy-external-address`: set by Envoy (with `use_remote_address`) for peers it deems
    /// external; a peer inside `internal_address_config` keeps the value it sent itself.
    EnvoyExternalAddress,
    /// The last `x-forwarded-for` entry, the one the nearest Envoy appended. Only correct when
    /// that Envoy has `use_remote_address: true`; otherwise clients choose it.
    ForwardedFor,
    /// A header Envoy sets on every authorization request, e.g. `authorization_request.
    /// headers_to_add: [{key: x-portcullis-client, value: "%DOWNSTREAM_REMOTE_ADDRESS%"}]`
    /// (Envoy overwrites a client-sent header of the same name).
    Header(HeaderName),
    /// No client address (audit then shows none, and the failed-attempt limiter sees none
    /// unless its own `client_address` is configured): the default.
    #[default]
    Ignore,
}

/// Settings of the HTTP ext_authz server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpAuthzOptions {
    /// Envoy's `http_service.path_prefix`, removed from every authorization request's path. A
    /// request whose path lacks it is refused (400): Envoy and portcullis disagree.
    pub path_prefix: Option<String>,
    pub client_address: ClientAddress,
}

struct HttpAuthz {
    service: CheckService,
    options: HttpAuthzOptions,
}

/// The HTTP ext_authz application: every method and path is an authorization request.
pub fn router(service: CheckService, options: HttpAuthzOptions) -> Router {
    let state = Arc::new(HttpAuthz { service, options });
    Router::new().fallback(authorize).with_state(state)
}

/// Why an authorization request cannot be translated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidAuthzRequest {
    #[error("authorization request path does not start with the configured path prefix")]
    MissingPathPrefix,
}

async fn authorize(State(authz): State<Arc<HttpAuthz>>, request: Request) -> Response {
    // Envoy sends no body (Content-Length: 0) unless `with_request_body` is on; policy never
    // reads it, so it is dropped unread.
    let (parts, _body) = request.into_parts();
    match to_input(&parts, &authz.options) {
        Ok(input) => {
            let request_id = input.request_id();
            let answered = authz
                .service
                .check_answered(&input, |decision| answer(decision, request_id));
            answered.await.1
        }
        Err(InvalidAuthzRequest::MissingPathPrefix) => {
            let started = Instant::now();
            let input = base_input(&parts);
            let decision = Decision::deny(None, DenyReason::BadPath);
            authz.service.record(&input, &decision, started);
            to_response(&decision, input.request_id())
        }
    }
}

/// The authorization request as the engine sees it.
pub fn to_input(
    parts: &Parts,
    options: &HttpAuthzOptions,
) -> Result<CheckInput, InvalidAuthzRequest> {
    let mut input = base_input(parts);
    if let Some(prefix) = options.path_prefix.as_deref().filter(|p| !p.is_empty()) {
        let path = input
            .path
            .strip_prefix(prefix)
            .filter(|rest| rest.starts_with('/'))
            .ok_or(InvalidAuthzRequest::MissingPathPrefix)?;
        input.path = path.to_owned();
    }
    // HTTP/1.1 carries the original authority in `Host`; over HTTP/2 it is `:authority`, which
    // hyper exposes as the URI's authority.
    input.host = input
        .headers
        .get("host")
        .map(str::to_owned)
        .or_else(|| parts.uri.authority().map(|a| a.as_str().to_owned()))
        .unwrap_or_default();
    input.source = client_address(&parts.headers, &options.client_address);
    Ok(input)
}

/// What every answer, even a refusal of the request itself, knows: method, full target and
/// headers.
fn base_input(parts: &Parts) -> CheckInput {
    CheckInput {
        method: parts.method.as_str().to_ascii_uppercase(),
        path: parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned(),
        headers: request_headers(parts),
        ..CheckInput::default()
    }
}

fn request_headers(parts: &Parts) -> Headers {
    Headers::new(parts.headers.iter().map(|(name, value)| {
        (
            name.as_str().to_owned(),
            String::from_utf8_lossy(value.as_bytes()).into_owned(),
        )
    }))
}

fn client_address(headers: &http::HeaderMap, from: &ClientAddress) -> Option<SocketAddr> {
    let value = match from {
        ClientAddress::Ignore => return None,
        ClientAddress::EnvoyExternalAddress => headers.get("x-envoy-external-address")?,
        ClientAddress::Header(name) => headers.get(name)?,
        ClientAddress::ForwardedFor => {
            // Several `x-forwarded-for` lines are one comma-separated list (RFC 7230 §3.2.2).
            let last = headers.get_all("x-forwarded-for").iter().next_back()?;
            let entry = last.to_str().ok()?.rsplit(',').next()?.trim();
            return parse_address(entry);
        }
    };
    parse_address(value.to_str().ok()?.trim())
}

/// `10.0.0.1`, `10.0.0.1:443`, `::1` or `[::1]:443`; a bare IP gets port 0.
fn parse_address(value: &str) -> Option<SocketAddr> {
    value.parse::<SocketAddr>().ok().or_else(|| {
        value
            .parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, 0))
    })
}

/// The HTTP answer Envoy expects for `decision`.
pub fn to_response(decision: &Decision, request_id: Option<&str>) -> Response {
    match decision {
        Decision::Allow(permit) => {
            allowed(permit).unwrap_or_else(|refusal| denied(&refusal, request_id))
        }
        Decision::Deny(denial) => denied(denial, request_id),
    }
}

/// The answer to `decision`, and the decision answered (what the audit event and the metrics
/// record): an allow that cannot be sent is refused as [`Unavailable::Internal`].
fn answer(decision: Decision, request_id: Option<&str>) -> (Decision, Response) {
    let denial = match decision {
        Decision::Allow(permit) => match allowed(&permit) {
            Ok(response) => return (Decision::Allow(permit), response),
            Err(refusal) => refusal,
        },
        Decision::Deny(denial) => denial,
    };
    let response = denied(&denial, request_id);
    (Decision::Deny(denial), response)
}

/// The `200` allowing `permit`, or the refusal to send when it cannot be expressed: a 500
/// ([`Unavailable::Internal`]), which Envoy treats as an authorization failure, never an allow.
fn allowed(permit: &Permit) -> Result<Response, Denial> {
    let internal = || Denial {
        route: Some(Arc::clone(&permit.route)),
        reason: DenyReason::Unavailable(Unavailable::Internal),
        hidden: None,
        key_id: None,
    };
    let mut response = StatusCode::OK.into_response();
    let headers = response.headers_mut();
    for (name, value) in &permit.set_headers {
        let (Ok(name), Ok(value)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) else {
            // An identity header we cannot send would leave the client's own value of it
            // upstream (it is not in the remove list because we set it): fail closed.
            tracing::warn!(
                route = %permit.route,
                header = %name,
                "identity header is not a valid HTTP header; refusing the request"
            );
            return Err(internal());
        };
        headers.insert(name, value);
    }
    if !permit.remove_headers.is_empty() {
        let names = permit.remove_headers.join(", ");
        match HeaderValue::try_from(names) {
            Ok(value) => {
                headers.insert(HEADERS_TO_REMOVE, value);
            }
            Err(_) => return Err(internal()),
        }
    }
    Ok(response)
}

fn denied(denial: &Denial, request_id: Option<&str>) -> Response {
    let status =
        StatusCode::from_u16(denial.http_status()).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let mut response = (status, denial.body(request_id)).into_response();
    let headers = response.headers_mut();
    for (name, value) in denial.headers() {
        if let Ok(value) = HeaderValue::try_from(value) {
            headers.insert(name, value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authz::{Policy, Requirements};
    use crate::telemetry::Telemetry;
    use crate::testing::{check_service, config_with_routes, route};
    use http::Method;
    use tower::ServiceExt;

    fn app(options: HttpAuthzOptions) -> Router {
        let config = config_with_routes(vec![
            route("public", "/public", Policy::Anonymous),
            route(
                "orders",
                "/orders",
                Policy::Require(Requirements {
                    scopes: vec!["read:orders".into()],
                    ..Requirements::default()
                }),
            ),
        ]);
        router(check_service(&config, Arc::new(Telemetry::new())), options)
    }

    /// A request as Envoy sends it: with a `Host` (a request without one is refused with 400).
    fn request(method: Method, path: &str, headers: &[(&str, &str)]) -> Request {
        let mut builder = http::Request::builder().method(method).uri(path);
        if !headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("host"))
        {
            builder = builder.header("host", "api.test");
        }
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(axum::body::Body::empty()).expect("request")
    }

    async fn call(app: Router, request: Request) -> (StatusCode, http::HeaderMap, String) {
        let response = app.oneshot(request).await.expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), 64 * 1024)
            .await
            .expect("body");
        (
            status,
            headers,
            String::from_utf8(body.to_vec()).expect("utf-8"),
        )
    }

    #[tokio::test]
    async fn allow_is_200_with_identity_headers_and_removals() {
        let (status, headers, body) = call(
            app(HttpAuthzOptions::default()),
            request(
                Method::GET,
                "/public",
                &[("host", "api.example.com"), ("x-auth-subject", "forged")],
            ),
        )
        .await;
        // Only 200 allows (Envoy treats any other 2xx as a denial).
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            headers.get("x-auth-method").map(|v| v.as_bytes()),
            Some(&b"anonymous"[..])
        );
        assert_eq!(
            headers.get(HEADERS_TO_REMOVE).map(|v| v.as_bytes()),
            Some(&b"x-auth-subject"[..])
        );
        assert!(body.is_empty());
    }

    /// In the HTTP mode the authorization request's own `traceparent` (Envoy's span for the
    /// call) is the parent of the check span.
    #[tokio::test]
    async fn check_span_joins_the_authorization_requests_traceparent() {
        let (tracing, spans) = crate::telemetry::otel::tests::collecting_tracing();
        let telemetry = Arc::new(Telemetry::new().with_tracing(tracing));
        let config = config_with_routes(vec![route("public", "/public", Policy::Anonymous)]);
        let app = router(
            check_service(&config, telemetry.clone()),
            HttpAuthzOptions::default(),
        );
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let (status, _, _) = call(
            app,
            request(Method::GET, "/public", &[("traceparent", parent)]),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        crate::telemetry::otel::tests::flushed(telemetry.tracing().expect("on"));
        let spans = spans.lock().expect("lock");
        assert_eq!(spans.len(), 1);
        assert_eq!(
            spans[0].span_context.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(spans[0].parent_span_id.to_string(), "00f067aa0ba902b7");
    }

    #[tokio::test]
    async fn missing_credential_is_401_with_challenge_and_json_body() {
        let (status, headers, body) = call(
            app(HttpAuthzOptions::default()),
            request(Method::GET, "/orders", &[("x-request-id", "rid-1")]),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            headers.get("www-authenticate").map(|v| v.as_bytes()),
            Some(&br#"Bearer realm="portcullis""#[..])
        );
        assert_eq!(
            headers.get("cache-control").map(|v| v.as_bytes()),
            Some(&b"no-store"[..])
        );
        assert_eq!(
            headers.get("content-type").map(|v| v.as_bytes()),
            Some(&b"application/json"[..])
        );
        let body: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(body["error"], "unauthorized");
        assert_eq!(body["request_id"], "rid-1");
        assert!(headers.get(HEADERS_TO_REMOVE).is_none());
    }

    #[tokio::test]
    async fn unknown_path_is_404_not_found() {
        let (status, _, body) = call(
            app(HttpAuthzOptions::default()),
            request(Method::POST, "/nowhere", &[]),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body.contains("not_found"));
    }

    #[tokio::test]
    async fn credential_in_query_is_400() {
        let (status, _, _) = call(
            app(HttpAuthzOptions::default()),
            request(Method::GET, "/public?access_token=abc", &[]),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn configured_path_prefix_is_stripped_before_routing() {
        let options = HttpAuthzOptions {
            path_prefix: Some("/authz".into()),
            ..HttpAuthzOptions::default()
        };
        let (status, _, _) = call(
            app(options.clone()),
            request(Method::GET, "/authz/public", &[]),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        // Without the prefix, Envoy and portcullis disagree: refuse rather than guess.
        let (status, _, _) = call(app(options), request(Method::GET, "/public", &[])).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn translates_method_host_path_and_headers() {
        let (parts, _) = request(
            Method::DELETE,
            "/orders/7?x=1",
            &[("host", "shop.example.com"), ("X-Request-Id", "abc")],
        )
        .into_parts();
        let input = to_input(&parts, &HttpAuthzOptions::default()).expect("translates");
        assert_eq!(input.method, "DELETE");
        assert_eq!(input.host, "shop.example.com");
        assert_eq!(input.path, "/orders/7?x=1");
        assert_eq!(input.request_id(), Some("abc"));
    }

    #[test]
    fn client_address_comes_only_from_the_configured_source() {
        let headers = [
            ("x-envoy-external-address", "203.0.113.7"),
            ("x-forwarded-for", "198.51.100.1, 192.0.2.44"),
            ("x-portcullis-client", "[2001:db8::1]:5555"),
        ];
        let source = |from: ClientAddress| {
            let (parts, _) = request(Method::GET, "/", &headers).into_parts();
            to_input(
                &parts,
                &HttpAuthzOptions {
                    client_address: from,
                    ..HttpAuthzOptions::default()
                },
            )
            .expect("translates")
            .source
        };
        // A client-sendable header is never trusted by default.
        assert_eq!(source(ClientAddress::default()), None);
        assert_eq!(
            source(ClientAddress::EnvoyExternalAddress),
            Some("203.0.113.7:0".parse().expect("addr"))
        );
        assert_eq!(
            source(ClientAddress::ForwardedFor),
            Some("192.0.2.44:0".parse().expect("addr"))
        );
        assert_eq!(
            source(ClientAddress::Header(HeaderName::from_static(
                "x-portcullis-client"
            ))),
            Some("[2001:db8::1]:5555".parse().expect("addr"))
        );
        assert_eq!(source(ClientAddress::Ignore), None);
    }

    #[test]
    fn unsendable_identity_header_fails_closed_with_5xx() {
        let decision = Decision::Allow(Permit {
            route: Arc::from("r"),
            identity: Arc::new(crate::decision::Identity::anonymous()),
            set_headers: vec![("x-auth-subject".into(), "line\nbreak".into())],
            remove_headers: Vec::new(),
            dynamic_metadata: true,
            would_deny: None,
        });
        let response = to_response(&decision, None);
        assert!(response.status().is_server_error());
        assert!(response.headers().get("x-auth-subject").is_none());
    }

    /// An allow that cannot be sent is answered 500 and recorded as what was answered: a
    /// refusal with reason `internal` on its route, not an allow and not `no_keys`.
    #[tokio::test]
    async fn unsendable_allow_is_recorded_as_an_internal_refusal() {
        let telemetry = Arc::new(Telemetry::new());
        let config = config_with_routes(vec![route("public", "/public", Policy::Anonymous)]);
        let service = check_service(&config, Arc::clone(&telemetry));
        let input = CheckInput {
            method: "GET".into(),
            host: "api.test".into(),
            path: "/public".into(),
            ..CheckInput::default()
        };
        let (decision, response) = service
            .check_answered(&input, |decision| {
                let Decision::Allow(mut permit) = decision else {
                    panic!("the public route allows: {decision:?}");
                };
                permit
                    .set_headers
                    .push(("x-auth-subject".into(), "line\nbreak".into()));
                answer(Decision::Allow(permit), Some("rid-5"))
            })
            .await;
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(response.headers().get("x-auth-subject").is_none());
        assert_eq!(
            (decision.route(), decision.reason()),
            (Some("public"), "internal")
        );
        let metrics = telemetry.metrics().encode().expect("encodes");
        assert!(
            metrics.contains(
                r#"portcullis_decisions_total{outcome="deny",reason="internal",route="public"} 1"#
            ),
            "{metrics}"
        );
        assert!(!metrics.contains(r#"outcome="allow""#), "{metrics}");
    }

    #[test]
    fn unavailable_decision_is_a_5xx_that_envoy_fails_closed_on() {
        let decision = Decision::deny(
            Some(Arc::from("orders")),
            DenyReason::Unavailable(crate::decision::Unavailable::NoKeys),
        );
        assert_eq!(
            to_response(&decision, None).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
