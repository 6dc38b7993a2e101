//! Builders of in-memory configurations and services for unit tests across the crate
//! (compiled for tests only; `deploy/ci/layers.sh` exempts files named `testing.rs` from the
//! layer order, as a test may build the whole agent).

use std::sync::Arc;

use crate::authz::routes::{PathMatch, RouteMatch};
use crate::authz::{OnDeny, Policy, Route};
use crate::config::{Config, ReadinessConfig, ResponseSettings, ServerConfig};

/// Request headers from `(name, value)` pairs, as an adapter would build them.
pub(crate) fn headers(pairs: &[(&str, &str)]) -> crate::input::Headers {
    crate::input::Headers::new(
        pairs
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned())),
    )
}

pub(crate) fn route(name: &str, path: &str, policy: Policy) -> Route {
    Route {
        name: Arc::from(name),
        matcher: RouteMatch {
            methods: None,
            host: None,
            path: PathMatch::Exact(path.to_owned()),
        },
        policy,
        on_deny: OnDeny::default(),
        mode: crate::authz::Mode::default(),
    }
}

/// Loopback, port 0 everywhere, no issuers.
pub(crate) fn config_with_routes(routes: Vec<Route>) -> Config {
    let any = "127.0.0.1:0".parse().expect("loopback");
    Config {
        server: ServerConfig {
            grpc_listen: any,
            http_listen: None,
            admin_listen: any,
            tls: None,
            connections: Default::default(),
        },
        issuers: Vec::new(),
        authn: Default::default(),
        routes,
        response: ResponseSettings::default(),
        readiness: ReadinessConfig::default(),
        api_keys: None,
        introspection: Vec::new(),
        telemetry: Default::default(),
        revocation: None,
    }
}

pub(crate) fn minimal_config() -> Config {
    config_with_routes(vec![route("health", "/healthz", Policy::Anonymous)])
}

/// The check service over an engine built from `config` (no issuers, so no key
/// fetches), recording into `telemetry`.
pub(crate) fn check_service(
    config: &Config,
    telemetry: Arc<crate::telemetry::Telemetry>,
) -> crate::service::CheckService {
    let engine = crate::engine::Engine::new(config, &crate::engine::Shared::default());
    crate::service::CheckService::new(Arc::new(arc_swap::ArcSwap::from_pointee(engine)), telemetry)
}
