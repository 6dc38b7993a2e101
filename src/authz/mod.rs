//! Authorization: which route a request is on, and whether the verified identity may use it.
//!
//! `routes` normalizes the path and finds the first matching route; `scopes` checks OAuth
//! scopes. Pure functions over domain types: no I/O, no tonic, no protos.

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

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requirements {
    /// Every one of these scopes must be granted.
    pub scopes: Vec<String>,
}

/// How a denial of an authenticated caller is answered on this route.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnDeny {
    #[default]
    Forbidden,
    /// Answer 404 instead of 403, so that existence cannot be probed.
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
