//! Authorization: which route a request is on, and whether the verified identity may use it.
//!
//! `path` normalizes the request target and authority; `routes` finds the first matching route
//! and binds its path parameters, which the engine keeps as the [`Resource`]; [`authorize`]
//! decides whether an identity meets a route's [`Requirements`] (`scopes` checks OAuth scopes).
//! Pure functions over domain types: no I/O, no tonic, no protos.

pub mod path;
pub mod routes;
pub mod scopes;
pub mod step_up;

use std::sync::Arc;

use crate::decision::Identity;
use routes::Params;

/// What a route demands of the caller.
#[derive(Debug, Clone, PartialEq)]
pub enum Policy {
    /// `allow: anonymous`: no credential needed (client `x-auth-*` headers are still removed).
    Anonymous,
    Require(Requirements),
}

/// Empty (no scope) is `allow: authenticated`: any valid token. The configuration never
/// produces it from a `require`, which must list something.
///
/// `PartialEq` (tests compare compiled configurations) but not `Eq`: nothing hashes or orders
/// requirements, and a compiled condition (`Condition { source, program: Arc<_> }`) will
/// compare by its source, a promise `Eq` would not let us drop again without touching every
/// type that embeds it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Requirements {
    /// Every one of these scopes must be granted.
    pub scopes: Vec<String>,
    /// MFA, `acr` and authentication age (RFC 9470 step-up); the default demands nothing.
    pub step_up: step_up::StepUpRequirement,
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

/// What a request asks for, as authorization sees it: the route it matched, the parameters
/// that route's template bound, and the normalized request line. Borrowed from the route table
/// and the request, so building one allocates nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource<'a> {
    /// The matched route's name.
    pub route: &'a str,
    pub method: &'a str,
    /// In [`path::normalize_authority`] form: lower case, without port.
    pub host: &'a str,
    /// In [`path::normalize`] form, without the query string.
    pub path: &'a str,
    /// Bound by the route's template (`/documents/{doc_id}` binds `doc_id`); empty for a route
    /// without one.
    pub params: Params<'a>,
    /// When the request is decided, Unix seconds (for `require.max_auth_age`).
    pub now: u64,
}

/// Why [`authorize`] refused. The engine decides how it is answered (403, or 404 on a route
/// that hides itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal<'r> {
    /// Scopes the route requires that the caller was not granted, in the route's order.
    MissingScopes(Vec<&'r str>),
    /// The user's authentication is not strong or recent enough (RFC 9470): answered 401 with
    /// the step-up challenge these requirements describe.
    StepUp(&'r step_up::StepUpRequirement),
}

/// Whether the verified `identity` may do what `resource` describes under the route's
/// `requirements`. Pure: no I/O, no clock, and no allocation when it allows. Nothing reads the
/// resource yet; conditions on the path parameters will.
pub fn authorize<'r>(
    requirements: &'r Requirements,
    identity: &Identity,
    resource: &Resource<'_>,
) -> Result<(), Refusal<'r>> {
    let missing = scopes::missing(&requirements.scopes, &identity.scopes);
    if !missing.is_empty() {
        return Err(Refusal::MissingScopes(missing));
    }
    // After the scopes: stepping up is pointless when the caller would still be forbidden.
    if !requirements
        .step_up
        .met_by(&identity.user_authentication, resource.now)
    {
        return Err(Refusal::StepUp(&requirements.step_up));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|item| (*item).to_owned()).collect()
    }

    fn requiring(scopes: &[&str]) -> Requirements {
        Requirements {
            scopes: strings(scopes),
            ..Requirements::default()
        }
    }

    fn caller_granted(scopes: &[&str]) -> Identity {
        Identity {
            subject: "alice".to_owned(),
            scopes: strings(scopes),
            ..Identity::anonymous()
        }
    }

    fn document(doc_id: &str) -> Resource<'_> {
        Resource {
            route: "documents",
            method: "GET",
            host: "api.example.com",
            path: "/documents/42",
            params: Params(vec![("doc_id", doc_id)]),
            now: 1_700_000_000,
        }
    }

    #[test]
    fn allows_a_caller_granted_every_required_scope() {
        let requirements = requiring(&["read:documents", "write:documents"]);
        let alice = caller_granted(&["openid", "write:documents", "read:documents"]);
        assert_eq!(authorize(&requirements, &alice, &document("42")), Ok(()));
    }

    #[test]
    fn denies_naming_the_scopes_the_caller_lacks_in_the_routes_order() {
        let requirements = requiring(&["read:documents", "write:documents", "admin"]);
        let alice = caller_granted(&["write:documents"]);
        assert_eq!(
            authorize(&requirements, &alice, &document("42")),
            Err(Refusal::MissingScopes(vec!["read:documents", "admin"]))
        );
    }

    #[test]
    fn allows_any_verified_caller_when_the_route_requires_no_scope() {
        let alice = caller_granted(&[]);
        assert_eq!(
            authorize(&Requirements::default(), &alice, &document("42")),
            Ok(())
        );
    }

    #[test]
    fn a_path_parameter_never_stands_in_for_a_scope() {
        let requirements = requiring(&["admin"]);
        let alice = caller_granted(&["read:documents"]);
        assert_eq!(
            authorize(&requirements, &alice, &document("admin")),
            Err(Refusal::MissingScopes(vec!["admin"]))
        );
    }
}
