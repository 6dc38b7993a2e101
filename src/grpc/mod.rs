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
        let input = CheckInput::try_from(request.into_inner())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let decision = self.service.check(&input).await;
        Ok(Response::new(response::check_response(
            decision,
            input.request_id(),
        )))
    }
}
