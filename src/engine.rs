//! The engine: route → authenticate → (revocation) → authorize → `Decision`.
//!
//! An `Engine` is immutable and built whole from one validated `Config`; a reload builds a new
//! one and swaps it in, so every request sees exactly one configuration. It knows nothing of
//! gRPC or protobuf.

use std::sync::Arc;

use crate::authn::credentials::{self, Extraction, Presented};
use crate::authn::{Authenticator, AuthnError, KeyRegistry};
use crate::authz::routes::{self, RouteTable};
use crate::authz::{Policy, Route, scopes};
use crate::config::{Config, ResponseSettings};
use crate::decision::{Decision, DenyReason, Identity, Permit, TokenProblem};
use crate::input::CheckInput;

/// Prefix of the identity headers portcullis owns; clients may never send them upstream.
pub const IDENTITY_HEADER_PREFIX: &str = "x-auth-";

/// The current engine, swapped whole on reload; each request takes one snapshot.
pub type SharedEngine = Arc<arc_swap::ArcSwap<Engine>>;

#[derive(Debug)]
pub struct Engine {
    routes: RouteTable,
    authn: Authenticator,
    response: ResponseSettings,
    anonymous: Arc<Identity>,
    /// Every header name any issuer's claim mapping may set: a client-sent value for one of
    /// them is removed whenever we do not set it ourselves, like `x-auth-*`.
    claim_header_names: Vec<String>,
}

impl Engine {
    /// Builds the engine for `config`. Key stores come from the app-lifetime `registry`, so a
    /// reload keeps the keys of issuers it keeps.
    pub fn new(config: &Config, registry: &KeyRegistry) -> Self {
        Self {
            routes: RouteTable::new(config.routes.clone()),
            authn: Authenticator::new(&config.issuers, registry, config.authn.clone()),
            response: config.response.clone(),
            anonymous: Arc::new(Identity::anonymous()),
            claim_header_names: claim_header_names(config),
        }
    }

    pub fn authenticator(&self) -> &Authenticator {
        &self.authn
    }

    pub fn routes(&self) -> &RouteTable {
        &self.routes
    }

    /// Decides one request.
    pub async fn check(&self, input: &CheckInput) -> Decision {
        let Ok(target) = routes::normalize(&input.path) else {
            return Decision::deny(None, DenyReason::BadPath);
        };
        if target
            .query
            .as_deref()
            .is_some_and(credentials::query_has_credential)
        {
            return Decision::deny(None, DenyReason::CredentialInQuery);
        }
        let Some((route, _params)) = self.routes.find(&input.method, &input.host, &target.path)
        else {
            let status = self.response.no_route_status;
            return Decision::deny(None, DenyReason::NoRoute { status });
        };

        let requirements = match &route.policy {
            Policy::Anonymous => return self.permit(route, self.anonymous.clone(), input),
            Policy::Require(requirements) => requirements,
        };
        let deny = |reason| Decision::deny(Some(route.name.clone()), reason);

        let token = match credentials::extract(&input.headers) {
            Extraction::Found(Presented::Bearer(token)) => token,
            Extraction::Missing => return deny(DenyReason::MissingCredential),
            Extraction::Malformed => {
                return deny(DenyReason::InvalidToken(TokenProblem::Malformed));
            }
        };
        let identity = match self.authn.authenticate(token).await {
            Ok(identity) => identity,
            Err(AuthnError::Invalid(problem)) => return deny(DenyReason::InvalidToken(problem)),
            Err(AuthnError::Unavailable(why)) => return deny(DenyReason::Unavailable(why)),
        };

        if !scopes::missing(&requirements.scopes, &identity.scopes).is_empty() {
            return deny(DenyReason::InsufficientScope {
                required: requirements.scopes.join(" "),
            });
        }
        self.permit(route, identity, input)
    }

    /// Headers only portcullis may set: `x-auth-*` and configured claim headers.
    fn is_identity_header(&self, name: &str) -> bool {
        name.starts_with(IDENTITY_HEADER_PREFIX)
            || self.claim_header_names.iter().any(|h| h == name)
    }

    fn permit(&self, route: &Route, identity: Arc<Identity>, input: &CheckInput) -> Decision {
        let set_headers = identity_headers(&identity);
        // Envoy applies removals after sets, so a header we set must not also be removed: ours
        // overwrite the client's value, and every other client `x-auth-*` is removed.
        let mut remove_headers: Vec<String> = input
            .headers
            .iter()
            .map(|(name, _)| name)
            .filter(|name| self.is_identity_header(name))
            .filter(|name| !set_headers.iter().any(|(set, _)| set == name))
            .map(str::to_owned)
            .collect();
        if self.response.strip_credentials
            && identity.method != crate::decision::AuthMethod::Anonymous
            && input.headers.get("authorization").is_some()
        {
            remove_headers.push("authorization".to_owned());
        }
        remove_headers.sort();
        remove_headers.dedup();
        Decision::Allow(Permit {
            route: route.name.clone(),
            identity,
            set_headers,
            remove_headers,
        })
    }
}

fn claim_header_names(config: &Config) -> Vec<String> {
    let mut names: Vec<String> = config
        .issuers
        .iter()
        .flat_map(|issuer| {
            issuer
                .claim_headers
                .iter()
                .map(|(_, header)| header.clone())
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The `x-auth-*` headers for an identity (design.md "Response contract").
fn identity_headers(identity: &Identity) -> Vec<(String, String)> {
    let mut headers = vec![(
        "x-auth-method".to_owned(),
        identity.method.as_str().to_owned(),
    )];
    if identity.method == crate::decision::AuthMethod::Anonymous {
        return headers;
    }
    headers.push(("x-auth-subject".to_owned(), identity.subject.clone()));
    headers.push(("x-auth-issuer".to_owned(), identity.issuer.clone()));
    headers.push(("x-auth-scopes".to_owned(), identity.scopes.join(" ")));
    headers.push(("x-auth-roles".to_owned(), identity.roles.join(",")));
    headers.extend(identity.claim_headers.iter().cloned());
    headers
}
