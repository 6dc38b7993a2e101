//! The tonic `Authorization` service: translate the `CheckRequest`, have [`crate::service`]
//! decide and record it, map the decision back. It holds no policy of its own.

pub mod dispatch;
pub mod io;
pub mod request;
pub mod response;

use tonic::{Request, Response, Status};

use crate::input::CheckInput;
use crate::proto::envoy::service::auth::v3::authorization_server::{
    Authorization, AuthorizationServer,
};
use crate::proto::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use crate::service::CheckService;

/// Envoy's `ext_authz` gRPC service.
#[derive(Debug, Clone)]
pub struct AuthorizationService {
    service: CheckService,
}

impl AuthorizationService {
    pub fn new(service: CheckService) -> Self {
        Self { service }
    }

    pub fn into_server(self) -> AuthorizationServer<Self> {
        AuthorizationServer::new(self)
    }
}

#[tonic::async_trait]
impl Authorization for AuthorizationService {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let (metadata, _, request) = request.into_parts();
        let input =
            CheckInput::try_from(request).map_err(|e| Status::invalid_argument(e.to_string()))?;
        // Envoy puts the trace context of its `ext_authz` call span into the call's metadata.
        let carrier = MetadataCarrier(&metadata);
        let (decision, ()) = self
            .service
            .check_traced(&input, Some(&carrier), |decision| (decision, ()))
            .await;
        Ok(Response::new(response::check_response(
            decision,
            input.request_id(),
        )))
    }
}

/// gRPC metadata as a trace-context carrier (read only when tracing is on).
struct MetadataCarrier<'a>(&'a tonic::metadata::MetadataMap);

impl opentelemetry::propagation::Extractor for MetadataCarrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|key| match key {
                tonic::metadata::KeyRef::Ascii(key) => Some(key.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
}
