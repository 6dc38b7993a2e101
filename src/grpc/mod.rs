//! The tonic `Authorization` service: translate the `CheckRequest`, ask the engine, map the
//! decision back, record telemetry. It holds no policy of its own.

pub mod io;
pub mod request;
pub mod response;
pub mod routes;

use std::sync::Arc;
use std::time::Instant;

use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::engine::SharedEngine;
use crate::input::CheckInput;
use crate::proto::envoy::service::auth::v3::authorization_server::{
    Authorization, AuthorizationServer,
};
use crate::proto::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use crate::telemetry::Telemetry;

/// Envoy's `ext_authz` gRPC service.
#[derive(Debug, Clone)]
pub struct CheckService {
    engine: SharedEngine,
    telemetry: Arc<Telemetry>,
}

impl CheckService {
    pub fn new(engine: SharedEngine, telemetry: Arc<Telemetry>) -> Self {
        Self { engine, telemetry }
    }

    pub fn into_server(self) -> AuthorizationServer<Self> {
        AuthorizationServer::new(self)
    }

    /// Decides one already-translated request; shared with the HTTP ext_authz server.
    pub async fn decide(&self, input: &CheckInput) -> crate::decision::Decision {
        let started = Instant::now();
        // One snapshot per request: a reload mid-request cannot mix two configurations.
        let engine = self.engine.load_full();
        let decision = engine.check(input).await;
        self.telemetry.decision(input, &decision, started.elapsed());
        decision
    }
}

#[tonic::async_trait]
impl Authorization for CheckService {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let input = CheckInput::try_from(request.into_inner())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let span = tracing::debug_span!(
            "check",
            http.method = %input.method,
            request.id = input.request_id().unwrap_or(""),
        );
        let decision = self.decide(&input).instrument(span).await;
        Ok(Response::new(response::check_response(
            decision,
            input.request_id(),
        )))
    }
}
