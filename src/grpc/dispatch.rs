//! The gRPC listener's two services, picked by the service name in the request path.
//!
//! tonic's own router (what `Server::add_service` builds) is an axum `Router`: a matchit lookup
//! and a boxed, cloned service per request. With two services one string comparison does the
//! same job; `make bench-grpc` measured the router at ~0.6 µs of an ~8.5 µs check (7 %).
//! Everything else (TLS, HTTP/2 settings, keepalive, graceful shutdown) stays tonic's `Server`.

use std::convert::Infallible;
use std::task::{Context, Poll};

use http::{Request, Response};
use tonic::body::Body;
use tonic::codegen::BoxFuture;
use tonic::codegen::Service;
use tonic::server::NamedService;
use tonic_health::pb::health_server::{Health, HealthServer};

use crate::grpc::AuthorizationService;
use crate::proto::envoy::service::auth::v3::authorization_server::AuthorizationServer;

/// `grpc.health.v1.Health` and Envoy's `Authorization`; any other path is answered by the
/// `Authorization` server's own fallback, gRPC status UNIMPLEMENTED (as tonic's router does).
pub struct Dispatch<H> {
    health: HealthServer<H>,
    check: AuthorizationServer<AuthorizationService>,
}

impl<H: Health> Dispatch<H> {
    pub fn new(health: HealthServer<H>, check: AuthorizationServer<AuthorizationService>) -> Self {
        Self { health, check }
    }
}

// Derived `Clone` would require `H: Clone`; the servers share their service behind an `Arc`.
impl<H: Health> Clone for Dispatch<H> {
    fn clone(&self) -> Self {
        Self {
            health: self.health.clone(),
            check: self.check.clone(),
        }
    }
}

/// The service name of a gRPC path, `/package.Service/Method`.
fn service_name(path: &str) -> Option<&str> {
    path.strip_prefix('/')?
        .split_once('/')
        .map(|(service, _)| service)
}

impl<H: Health> Service<Request<Body>> for Dispatch<H> {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Response<Body>, Infallible>;

    /// Both servers are always ready (tonic's generated servers never apply backpressure).
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        if service_name(request.uri().path()) == Some(<HealthServer<H> as NamedService>::NAME) {
            self.health.call(request)
        } else {
            self.check.call(request)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::Telemetry;
    use crate::testing::{check_service, config_with_routes};
    use std::sync::Arc;
    use tower::ServiceExt;

    #[test]
    fn service_name_is_the_first_path_segment() {
        assert_eq!(
            service_name("/grpc.health.v1.Health/Check"),
            Some("grpc.health.v1.Health")
        );
        assert_eq!(
            service_name("/envoy.service.auth.v3.Authorization/Check"),
            Some("envoy.service.auth.v3.Authorization")
        );
        assert_eq!(service_name("/no-method"), None);
        assert_eq!(service_name("no-slash/Check"), None);
    }

    #[tokio::test]
    async fn unknown_services_get_grpc_unimplemented() {
        let config = config_with_routes(Vec::new());
        let check = AuthorizationService::new(check_service(&config, Arc::new(Telemetry::new())))
            .into_server();
        let (_, health) = tonic_health::server::health_reporter();
        let dispatch = Dispatch::new(health, check);

        for path in [
            "/grpc.reflection.v1.ServerReflection/Info",
            "/x.Health/Check",
        ] {
            let request = Request::post(path)
                .header("content-type", "application/grpc")
                .body(Body::empty())
                .expect("request");
            let response = dispatch.clone().oneshot(request).await.expect("infallible");
            let status = response.headers().get("grpc-status");
            assert_eq!(status.map(|s| s.as_bytes()), Some(&b"12"[..]), "{path}");
        }
    }
}
