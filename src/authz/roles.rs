//! RBAC: the configuration's `roles:` map, resolved when it loads into one permission set per
//! role (its own permissions and those of every role it includes, transitively), so that the
//! check per request is a few set look-ups and allocates nothing when it allows.

use std::collections::{HashMap, HashSet};

/// Each defined role and every permission it grants, `includes` already followed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoleGrants(HashMap<String, HashSet<String>>);

/// One role as written: its own permissions and the roles it includes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoleDefinition {
    pub name: String,
    pub permissions: Vec<String>,
    pub includes: Vec<String>,
}

/// Why the `roles:` map cannot be resolved. `role` and `include` locate the offending entry
/// (`includes[include]` of `role`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoleError {
    /// An include names no defined role.
    UndefinedInclude { role: String, include: usize },
    /// Following includes comes back to a role: `path` is the cycle, first role repeated last.
    Cycle {
        role: String,
        include: usize,
        path: Vec<String>,
    },
}

impl RoleGrants {
    /// Resolves `definitions` (unique names); every problem found, or the grants.
    pub fn resolve(definitions: &[RoleDefinition]) -> Result<Self, Vec<RoleError>> {
        let by_name: HashMap<&str, &RoleDefinition> = definitions
            .iter()
            .map(|definition| (definition.name.as_str(), definition))
            .collect();
        let mut errors = Vec::new();
        for definition in definitions {
            for (include, name) in definition.includes.iter().enumerate() {
                if !by_name.contains_key(name.as_str()) {
                    errors.push(RoleError::UndefinedInclude {
                        role: definition.name.clone(),
                        include,
                    });
                }
            }
        }
        // Depth-first from each role in file order; a cycle is reported once, at the include
        // that closes it.
        let mut done: HashSet<&str> = HashSet::new();
        for definition in definitions {
            let mut stack = Vec::new();
            find_cycles(definition, &by_name, &mut stack, &mut done, &mut errors);
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut grants = HashMap::with_capacity(definitions.len());
        for definition in definitions {
            let mut permissions = HashSet::new();
            let mut seen: HashSet<&str> = HashSet::new();
            let mut pending = vec![definition];
            while let Some(role) = pending.pop() {
                if !seen.insert(role.name.as_str()) {
                    continue;
                }
                permissions.extend(role.permissions.iter().cloned());
                pending.extend(
                    role.includes
                        .iter()
                        .filter_map(|name| by_name.get(name.as_str()).copied()),
                );
            }
            grants.insert(definition.name.clone(), permissions);
        }
        Ok(Self(grants))
    }

    pub fn is_defined(&self, role: &str) -> bool {
        self.0.contains_key(role)
    }

    /// Whether some defined role grants `permission`.
    pub fn any_grants(&self, permission: &str) -> bool {
        self.0.values().any(|granted| granted.contains(permission))
    }

    /// The required permissions none of `held` grants, in the route's order; empty means
    /// allowed (and allocates nothing). A held role the map does not define grants nothing.
    pub fn missing<'r>(&self, required: &'r [String], held: &[String]) -> Vec<&'r str> {
        required
            .iter()
            .filter(|permission| {
                !held.iter().any(|role| {
                    self.0
                        .get(role.as_str())
                        .is_some_and(|granted| granted.contains(permission.as_str()))
                })
            })
            .map(String::as_str)
            .collect()
    }
}

/// Whether the caller holds any one of `required` (an empty list asks for none).
pub fn holds_any(required: &[String], held: &[String]) -> bool {
    required.is_empty() || required.iter().any(|role| held.contains(role))
}

fn find_cycles<'d>(
    role: &'d RoleDefinition,
    by_name: &HashMap<&str, &'d RoleDefinition>,
    stack: &mut Vec<&'d str>,
    done: &mut HashSet<&'d str>,
    errors: &mut Vec<RoleError>,
) {
    if done.contains(role.name.as_str()) {
        return;
    }
    stack.push(role.name.as_str());
    for (include, name) in role.includes.iter().enumerate() {
        if let Some(start) = stack.iter().position(|on_path| *on_path == name.as_str()) {
            let mut path: Vec<String> = stack[start..].iter().map(|r| (*r).to_owned()).collect();
            path.push(name.clone());
            errors.push(RoleError::Cycle {
                role: role.name.clone(),
                include,
                path,
            });
        } else if let Some(next) = by_name.get(name.as_str()) {
            find_cycles(next, by_name, stack, done, errors);
        }
    }
    stack.pop();
    done.insert(role.name.as_str());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    fn role(name: &str, permissions: &[&str], includes: &[&str]) -> RoleDefinition {
        RoleDefinition {
            name: name.to_owned(),
            permissions: strings(permissions),
            includes: strings(includes),
        }
    }

    #[test]
    fn a_role_grants_the_permissions_of_the_roles_it_includes_transitively() {
        let grants = RoleGrants::resolve(&[
            role("admin", &["admin"], &["editor"]),
            role("editor", &["write"], &["viewer"]),
            role("viewer", &["read"], &[]),
        ])
        .expect("resolves");
        let admin = strings(&["admin"]);
        assert!(
            grants
                .missing(&strings(&["read", "write", "admin"]), &admin)
                .is_empty()
        );
        assert_eq!(
            grants.missing(&strings(&["read", "write", "admin"]), &strings(&["viewer"])),
            ["write", "admin"]
        );
    }

    #[test]
    fn an_undefined_held_role_grants_nothing() {
        let grants = RoleGrants::resolve(&[role("viewer", &["read"], &[])]).expect("resolves");
        assert_eq!(
            grants.missing(&strings(&["read"]), &strings(&["intruder"])),
            ["read"]
        );
    }

    #[test]
    fn a_cycle_is_reported_once_with_its_path() {
        let errors = RoleGrants::resolve(&[
            role("admin", &[], &["ops"]),
            role("ops", &[], &["admin"]),
            role("viewer", &["read"], &[]),
        ])
        .expect_err("cycle");
        assert_eq!(
            errors,
            [RoleError::Cycle {
                role: "ops".into(),
                include: 0,
                path: strings(&["admin", "ops", "admin"]),
            }]
        );
    }

    #[test]
    fn a_role_including_itself_is_a_cycle_and_an_unknown_include_is_reported() {
        let errors =
            RoleGrants::resolve(&[role("admin", &[], &["ghost", "admin"])]).expect_err("invalid");
        assert_eq!(
            errors,
            [
                RoleError::UndefinedInclude {
                    role: "admin".into(),
                    include: 0
                },
                RoleError::Cycle {
                    role: "admin".into(),
                    include: 1,
                    path: strings(&["admin", "admin"]),
                },
            ]
        );
    }

    #[test]
    fn holds_any_needs_one_of_the_listed_roles() {
        let held = strings(&["user"]);
        assert!(holds_any(&strings(&["admin", "user"]), &held));
        assert!(!holds_any(&strings(&["admin"]), &held));
        assert!(!holds_any(&strings(&["admin"]), &[]));
    }
}
