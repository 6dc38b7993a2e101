//! Authorization: which route a request is on, and whether the verified identity may use it.
//!
//! `path` normalizes the request target and authority; `routes` finds the first matching route
//! and binds its path parameters, which the engine keeps as the [`Resource`]; [`authorize`]
//! decides whether an identity meets a route's [`Requirements`] (`scopes` checks OAuth scopes,
//! `roles` roles and permissions, `condition` the route's CEL `when`).
//! Pure functions over domain types: no I/O, no tonic, no protos.

pub mod condition;
pub mod hygiene;
pub mod path;
pub mod roles;
pub mod routes;
pub mod scopes;
pub mod step_up;

use std::net::SocketAddr;
use std::sync::Arc;

use crate::decision::Identity;
use crate::input::Headers;
use routes::Params;

/// What a route demands of the caller.
#[derive(Debug, Clone, PartialEq)]
#[allow(
    clippy::large_enum_variant,
    reason = "one per route, built at load and only borrowed per request: its size costs nothing"
)]
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
    /// RBAC: the caller holds at least one of these roles (empty: no role asked for).
    pub roles: Vec<String>,
    /// RBAC: the caller's roles grant every one of these permissions (empty: none asked for).
    pub permissions: Vec<String>,
    /// RBAC: the configuration's `roles:` map, resolved at load; shared by every route.
    pub grants: Arc<roles::RoleGrants>,
    /// MFA, `acr` and authentication age (RFC 9470 step-up); the default demands nothing.
    pub step_up: step_up::StepUpRequirement,
    /// At least one of these scopes must be granted (none: no such requirement).
    pub any_scopes: Vec<String>,
    /// `content_types` and `idempotency_key`: checked on the request, last.
    pub hygiene: hygiene::Hygiene,
    /// `when`: a CEL condition on the identity and the request (none: no condition).
    pub when: Option<condition::Condition>,
    /// `introspect`: the credential must also be confirmed active at its issuer's
    /// introspection endpoint (the engine asks, after authentication; not a step of
    /// [`authorize`]).
    pub introspect: bool,
}

/// Whether a route's authorization refusals are answered (`mode: enforce`, the default) or
/// only recorded (`mode: shadow`: the request is allowed and the audit event and the metrics
/// say it would have been denied). Authentication is enforced in either mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    #[default]
    Enforce,
    Shadow,
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
    pub mode: Mode,
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
    /// The request's headers (lower-case names), borrowed from the request.
    pub headers: &'a Headers,
    /// The query string, without the `?` (for conditions).
    pub query: Option<&'a str>,
    /// The downstream client address as Envoy saw it (for conditions).
    pub source: Option<SocketAddr>,
    /// The client certificate's identity (SPIFFE id or URI SAN) when Envoy sends one.
    pub principal: Option<&'a str>,
}

/// Why [`authorize`] refused. The engine decides how it is answered (403, or 404 on a route
/// that hides itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal<'r> {
    /// Scopes the route requires that the caller was not granted, in the route's order.
    MissingScopes(Vec<&'r str>),
    /// The caller holds none of the roles the route accepts.
    MissingRole,
    /// Permissions the route requires that none of the caller's roles grants, in the route's
    /// order.
    MissingPermissions(Vec<&'r str>),
    /// None of the route's `any_scopes` is granted.
    NoneOfScopes(&'r [String]),
    /// The user's authentication is not strong or recent enough (RFC 9470): answered 401 with
    /// the step-up challenge these requirements describe.
    StepUp(&'r step_up::StepUpRequirement),
    /// The request breaks the route's `content_types` or `idempotency_key` rule.
    Hygiene(hygiene::HygieneProblem),
    /// The route's `when` condition is false.
    ConditionFailed,
    /// The route's `when` condition could not be evaluated (a missing claim or field, a wrong
    /// type, a result that is not a bool): refused, like a false one, with its own reason.
    ConditionError,
}

/// Whether the verified `identity` may do what `resource` describes under the route's
/// `requirements`: every [`STEPS`] check in order, stopping at the first refusal. Pure: no I/O,
/// no clock, and no allocation when it allows (a route's `when` condition aside, which pays for
/// the values it reads).
pub fn authorize<'r>(
    requirements: &'r Requirements,
    identity: &Identity,
    resource: &Resource<'_>,
) -> Result<(), Refusal<'r>> {
    for step in STEPS {
        (step.check)(requirements, identity, resource)?;
    }
    Ok(())
}

/// Every requirement the route asks for, each with its own result, in [`authorize`]'s order:
/// what `portcullis explain` reports and what a shadow route records. The same checks as
/// [`authorize`], without stopping at the first refusal; never on the enforcing hot path.
pub fn evaluate<'r>(
    requirements: &'r Requirements,
    identity: &Identity,
    resource: &Resource<'_>,
) -> Vec<(&'static Step, Result<(), Refusal<'r>>)> {
    STEPS
        .iter()
        .filter(|step| (step.asked)(requirements))
        .map(|step| (step, (step.check)(requirements, identity, resource)))
        .collect()
}

/// One requirement of a route: how [`authorize`] checks it and how `portcullis explain` names
/// it. A new requirement is one more entry in [`STEPS`].
pub struct Step {
    /// The `require` key it comes from.
    pub name: &'static str,
    /// Whether the route asks for it at all (a step not asked for always passes).
    pub asked: fn(&Requirements) -> bool,
    /// What the route asks for, for a person reading an explanation.
    pub describe: fn(&Requirements) -> String,
    pub check: for<'r> fn(&'r Requirements, &Identity, &Resource<'_>) -> Result<(), Refusal<'r>>,
}

impl std::fmt::Debug for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Step").field("name", &self.name).finish()
    }
}

/// The requirements, in the order they are checked: scopes, then roles and permissions, then the
/// `when` condition, then step-up (stepping up is pointless when the caller would still be
/// forbidden), and the request hygiene last (a caller who may not use the route learns nothing
/// of its request rules).
pub const STEPS: &[Step] = &[
    Step {
        name: "scopes",
        asked: |r| !r.scopes.is_empty(),
        describe: |r| format!("all of {}", r.scopes.join(" ")),
        check: |r, identity, _| {
            let missing = scopes::missing(&r.scopes, &identity.scopes, identity.scope_wildcards);
            met(missing.is_empty(), Refusal::MissingScopes(missing))
        },
    },
    Step {
        name: "any_scopes",
        asked: |r| !r.any_scopes.is_empty(),
        describe: |r| format!("one of {}", r.any_scopes.join(" ")),
        check: |r, identity, _| {
            met(
                r.any_scopes.is_empty()
                    || scopes::any_granted(
                        &r.any_scopes,
                        &identity.scopes,
                        identity.scope_wildcards,
                    ),
                Refusal::NoneOfScopes(&r.any_scopes),
            )
        },
    },
    Step {
        name: "roles",
        asked: |r| !r.roles.is_empty(),
        describe: |r| format!("one of {}", r.roles.join(", ")),
        check: |r, identity, _| {
            met(
                roles::holds_any(&r.roles, &identity.roles),
                Refusal::MissingRole,
            )
        },
    },
    Step {
        name: "permissions",
        asked: |r| !r.permissions.is_empty(),
        describe: |r| format!("all of {}", r.permissions.join(", ")),
        check: |r, identity, _| {
            let missing = r.grants.missing(&r.permissions, &identity.roles);
            met(missing.is_empty(), Refusal::MissingPermissions(missing))
        },
    },
    Step {
        name: "when",
        asked: |r| r.when.is_some(),
        describe: |r| {
            r.when
                .as_ref()
                .map_or_else(String::new, |c| c.source().to_owned())
        },
        check: |r, identity, resource| match &r.when {
            None => Ok(()),
            Some(condition) => match condition.evaluate(identity, resource) {
                Ok(true) => Ok(()),
                Ok(false) => Err(Refusal::ConditionFailed),
                Err(_) => Err(Refusal::ConditionError),
            },
        },
    },
    Step {
        name: "step_up",
        asked: |r| !r.step_up.is_empty(),
        describe: |r| r.step_up.describe(),
        check: |r, identity, resource| {
            met(
                r.step_up
                    .met_by(&identity.user_authentication, resource.now),
                Refusal::StepUp(&r.step_up),
            )
        },
    },
    Step {
        name: "content_types",
        asked: |r| !r.hygiene.content_types.is_empty(),
        describe: |r| format!("one of {}", r.hygiene.content_types.join(", ")),
        check: |r, _, resource| {
            r.hygiene
                .check_content_type(resource.method, resource.headers)
                .map_err(Refusal::Hygiene)
        },
    },
    Step {
        name: "idempotency_key",
        asked: |r| r.hygiene.idempotency_key,
        describe: |_| "an Idempotency-Key header on POST and PATCH".to_owned(),
        check: |r, _, resource| {
            r.hygiene
                .check_idempotency_key(resource.method, resource.headers)
                .map_err(Refusal::Hygiene)
        },
    },
];

/// `Ok` when `passed`, else `refusal` (cheap to build: it borrows from the requirements, and
/// an empty list allocates nothing).
fn met(passed: bool, refusal: Refusal<'_>) -> Result<(), Refusal<'_>> {
    if passed { Ok(()) } else { Err(refusal) }
}

impl Refusal<'_> {
    /// Whether a shadow route may let the request through despite this refusal: every refusal
    /// of the caller's rights, never one of the request's shape (`content_types`,
    /// `idempotency_key`), which the upstream would have to cope with.
    pub fn shadowable(&self) -> bool {
        !matches!(self, Self::Hygiene(_))
    }
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

    static NO_HEADERS: std::sync::LazyLock<Headers> = std::sync::LazyLock::new(Headers::default);

    fn document(doc_id: &str) -> Resource<'_> {
        Resource {
            route: "documents",
            method: "GET",
            host: "api.example.com",
            path: "/documents/42",
            params: Params(vec![("doc_id", doc_id)]),
            now: 1_700_000_000,
            headers: &NO_HEADERS,
            query: None,
            source: None,
            principal: None,
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

    /// admin: read, write, delete, admin (through `user`); user: read, write (through
    /// `viewer`); viewer: read.
    fn classic_roles() -> Arc<roles::RoleGrants> {
        let role = |name: &str, permissions: &[&str], includes: &[&str]| roles::RoleDefinition {
            name: name.to_owned(),
            permissions: strings(permissions),
            includes: strings(includes),
        };
        Arc::new(
            roles::RoleGrants::resolve(&[
                role("admin", &["delete", "admin"], &["user"]),
                role("user", &["write"], &["viewer"]),
                role("viewer", &["read"], &[]),
            ])
            .expect("classic roles resolve"),
        )
    }

    fn requiring_rbac(roles: &[&str], permissions: &[&str]) -> Requirements {
        Requirements {
            roles: strings(roles),
            permissions: strings(permissions),
            grants: classic_roles(),
            ..Requirements::default()
        }
    }

    fn caller_holding(roles: &[&str]) -> Identity {
        Identity {
            subject: "alice".to_owned(),
            roles: strings(roles),
            ..Identity::anonymous()
        }
    }

    #[test]
    fn allows_a_caller_holding_any_one_of_the_routes_roles() {
        let requirements = requiring_rbac(&["admin", "user"], &[]);
        assert_eq!(
            authorize(&requirements, &caller_holding(&["user"]), &document("42")),
            Ok(())
        );
    }

    #[test]
    fn denies_a_caller_holding_none_of_the_routes_roles() {
        let requirements = requiring_rbac(&["admin"], &[]);
        for held in [&["user", "viewer"][..], &[]] {
            assert_eq!(
                authorize(&requirements, &caller_holding(held), &document("42")),
                Err(Refusal::MissingRole)
            );
        }
    }

    #[test]
    fn allows_when_the_callers_roles_together_grant_every_permission() {
        // `viewer` alone grants read; another role held may grant the rest.
        let requirements = requiring_rbac(&[], &["read", "write"]);
        assert_eq!(
            authorize(&requirements, &caller_holding(&["user"]), &document("42")),
            Ok(())
        );
    }

    #[test]
    fn denies_naming_the_permissions_no_held_role_grants() {
        let requirements = requiring_rbac(&[], &["read", "delete", "admin"]);
        assert_eq!(
            authorize(&requirements, &caller_holding(&["user"]), &document("42")),
            Err(Refusal::MissingPermissions(vec!["delete", "admin"]))
        );
    }

    #[test]
    fn a_role_the_configuration_does_not_define_grants_no_permission() {
        let requirements = requiring_rbac(&[], &["read"]);
        assert_eq!(
            authorize(&requirements, &caller_holding(&["root"]), &document("42")),
            Err(Refusal::MissingPermissions(vec!["read"]))
        );
    }

    #[test]
    fn a_path_parameter_never_stands_in_for_a_role() {
        let requirements = requiring_rbac(&["admin"], &["admin"]);
        assert_eq!(
            authorize(&requirements, &caller_holding(&[]), &document("admin")),
            Err(Refusal::MissingRole)
        );
    }

    #[test]
    fn scopes_are_checked_before_roles() {
        let requirements = Requirements {
            scopes: strings(&["documents"]),
            ..requiring_rbac(&["admin"], &[])
        };
        assert_eq!(
            authorize(&requirements, &caller_holding(&["admin"]), &document("42")),
            Err(Refusal::MissingScopes(vec!["documents"]))
        );
    }

    #[test]
    fn any_scopes_needs_one_of_them_besides_every_required_scope() {
        let requirements = Requirements {
            scopes: strings(&["openid"]),
            any_scopes: strings(&["documents:read", "admin"]),
            ..Requirements::default()
        };
        let reader = caller_granted(&["openid", "documents:read"]);
        assert_eq!(authorize(&requirements, &reader, &document("42")), Ok(()));
        let neither = caller_granted(&["openid", "documents:write"]);
        assert_eq!(
            authorize(&requirements, &neither, &document("42")),
            Err(Refusal::NoneOfScopes(&requirements.any_scopes))
        );
        let admin_without_openid = caller_granted(&["admin"]);
        assert_eq!(
            authorize(&requirements, &admin_without_openid, &document("42")),
            Err(Refusal::MissingScopes(vec!["openid"]))
        );
    }

    #[test]
    fn a_wildcard_scope_counts_only_for_an_issuer_that_turns_wildcards_on() {
        let requirements = Requirements {
            scopes: strings(&["documents:read"]),
            any_scopes: strings(&["documents:write", "admin"]),
            ..Requirements::default()
        };
        let mut caller = caller_granted(&["documents:*"]);
        assert_eq!(
            authorize(&requirements, &caller, &document("42")),
            Err(Refusal::MissingScopes(vec!["documents:read"]))
        );
        caller.scope_wildcards = true;
        assert_eq!(authorize(&requirements, &caller, &document("42")), Ok(()));
    }

    #[test]
    fn a_step_up_failure_is_refused_after_the_scopes_are_met() {
        let requirements = Requirements {
            scopes: strings(&["read:documents"]),
            step_up: step_up::StepUpRequirement {
                mfa: true,
                ..Default::default()
            },
            ..Requirements::default()
        };
        let alice = caller_granted(&["read:documents"]);
        assert_eq!(
            authorize(&requirements, &alice, &document("42")),
            Err(Refusal::StepUp(&requirements.step_up))
        );
        let mut strong = alice.clone();
        strong.user_authentication.mfa = true;
        assert_eq!(authorize(&requirements, &strong, &document("42")), Ok(()));
        let lacks_scope = caller_granted(&[]);
        assert_eq!(
            authorize(&requirements, &lacks_scope, &document("42")),
            Err(Refusal::MissingScopes(vec!["read:documents"]))
        );
    }

    #[test]
    fn a_condition_is_checked_after_the_roles_and_before_the_step_up() {
        let owner_only =
            condition::Condition::compile("resource.doc_id == subject.sub").expect("compiles");
        let requirements = Requirements {
            when: Some(owner_only),
            step_up: step_up::StepUpRequirement {
                mfa: true,
                ..Default::default()
            },
            ..requiring_rbac(&["user"], &[])
        };
        let alice = caller_holding(&["user"]);
        assert_eq!(
            authorize(&requirements, &caller_holding(&[]), &document("alice")),
            Err(Refusal::MissingRole)
        );
        assert_eq!(
            authorize(&requirements, &alice, &document("bob")),
            Err(Refusal::ConditionFailed)
        );
        assert_eq!(
            authorize(&requirements, &alice, &document("alice")),
            Err(Refusal::StepUp(&requirements.step_up))
        );
        let mut strong = alice.clone();
        strong.user_authentication.mfa = true;
        assert_eq!(
            authorize(&requirements, &strong, &document("alice")),
            Ok(())
        );
        let unreadable = Requirements {
            when: condition::Condition::compile("subject.team == 'blue'").ok(),
            ..requirements.clone()
        };
        assert_eq!(
            authorize(&unreadable, &strong, &document("alice")),
            Err(Refusal::ConditionError)
        );
    }

    #[test]
    fn request_hygiene_is_checked_after_the_caller_may_use_the_route() {
        let requirements = Requirements {
            scopes: strings(&["write:documents"]),
            hygiene: hygiene::Hygiene {
                content_types: strings(&["application/json"]),
                idempotency_key: true,
            },
            ..Requirements::default()
        };
        let form = Headers::new([("content-type".to_owned(), "text/plain".to_owned())]);
        let post = |headers| Resource {
            method: "POST",
            headers,
            ..document("42")
        };
        let writer = caller_granted(&["write:documents"]);
        assert_eq!(
            authorize(&requirements, &writer, &post(&form)),
            Err(Refusal::Hygiene(
                hygiene::HygieneProblem::UnsupportedMediaType
            ))
        );
        let json = Headers::new([("content-type".to_owned(), "application/json".to_owned())]);
        assert_eq!(
            authorize(&requirements, &writer, &post(&json)),
            Err(Refusal::Hygiene(
                hygiene::HygieneProblem::MissingIdempotencyKey
            ))
        );
        let reader = caller_granted(&["read:documents"]);
        assert_eq!(
            authorize(&requirements, &reader, &post(&form)),
            Err(Refusal::MissingScopes(vec!["write:documents"]))
        );
    }
}
