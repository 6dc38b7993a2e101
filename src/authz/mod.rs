//! Authorization: which route a request is on, and whether the verified identity may use it.
//!
//! `path` normalizes the request target and authority; `routes` finds the first matching route
//! and binds its path parameters; `scopes` checks OAuth scopes. Pure functions over domain types: no I/O, no tonic, no protos.

pub mod path;
pub mod routes;
pub mod scopes;

use std::sync::Arc;

/// What a route demands of the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Policy {
    /// `allow: anonymous`: no credential needed (client `x-auth-*` headers are still removed).
    Anonymous,
    Require(Requirements),
}

/// Empty (no scope) is `allow: authenticated`: any valid token. The configuration never
/// produces it from a `require`, which must list something.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requirements {
    /// Every one of these scopes must be granted.
    pub scopes: Vec<String>,
}

/// How a refusal on this route is answered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnDeny {
    /// 401 with a challenge, 403 naming the missing scopes, 429.
    #[default]
    Forbidden,
    /// Every refusal of the caller (missing or invalid credential included) is answered exactly
    /// like a path with no route, so that existence cannot be probed.
    NotFound,
}

/// One compiled route.
#[derive(Debug, Clone)]
pub struct Route {
    pub name: Arc<str>,
    pub matcher: routes::RouteMatch,
    pub policy: Policy,
    pub on_deny: OnDeny,
}
