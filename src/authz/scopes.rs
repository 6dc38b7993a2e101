//! OAuth scope checks.
//!
//! A granted scope satisfies a required one when the two are equal. With the issuer's
//! `scope_wildcards: true`, a granted scope ending in `:*` (`documents:*`) also satisfies every
//! required scope that starts with what comes before the `*` and has something after it
//! (`documents:read`, `documents:read:all`, not `documents` nor `documentsX:read`). Only a
//! trailing `*` right after a `:` is a wildcard; `*` alone, `documents*` or `a:*:b` match only
//! themselves.

/// Whether the granted scope `have` satisfies the required scope `need`.
pub fn grants(have: &str, need: &str, wildcards: bool) -> bool {
    if have == need {
        return true;
    }
    wildcards
        && have
            .strip_suffix('*')
            .filter(|prefix| prefix.len() > 1 && prefix.ends_with(':'))
            .is_some_and(|prefix| need.len() > prefix.len() && need.starts_with(prefix))
}

/// The required scopes not granted, in the route's order (empty: all granted), with the
/// issuer's wildcard rule when `wildcards` is set.
pub fn missing<'a>(required: &'a [String], granted: &[String], wildcards: bool) -> Vec<&'a str> {
    required
        .iter()
        .filter(|need| !granted.iter().any(|have| grants(have, need, wildcards)))
        .map(String::as_str)
        .collect()
}

/// Whether at least one of `wanted` is granted (`require.any_scopes`).
pub fn any_granted(wanted: &[String], granted: &[String], wildcards: bool) -> bool {
    wanted
        .iter()
        .any(|need| granted.iter().any(|have| grants(have, need, wildcards)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn allows_when_every_required_scope_is_granted() {
        let required = strings(&["read:documents", "write:documents"]);
        let granted = strings(&["write:documents", "openid", "read:documents"]);
        assert!(missing(&required, &granted, false).is_empty());
    }

    #[test]
    fn denies_when_one_scope_is_missing() {
        let required = strings(&["read:documents", "write:documents"]);
        let granted = strings(&["read:documents"]);
        assert_eq!(missing(&required, &granted, false), vec!["write:documents"]);
    }

    #[test]
    fn scope_prefix_is_not_a_match() {
        let required = strings(&["read:documents"]);
        let granted = strings(&["read:doc", "read:documents:all"]);
        assert_eq!(missing(&required, &granted, false), vec!["read:documents"]);
    }

    #[test]
    fn a_trailing_colon_star_grants_the_scopes_under_it_only_when_wildcards_are_on() {
        assert!(grants("documents:*", "documents:read", true));
        assert!(grants("documents:*", "documents:read:all", true));
        assert!(!grants("documents:*", "documents:read", false));
        assert!(!grants("documents:*", "documents", true));
        assert!(!grants("documents:*", "documents:", true));
        assert!(!grants("documents:*", "documentsx:read", true));
        assert!(!grants("*", "documents:read", true));
        assert!(!grants(":*", "x", true));
        assert!(!grants("documents*", "documents:read", true));
        assert!(!grants("a:*:b", "a:x:b", true));
        // A required wildcard is only met by the same literal scope.
        assert!(!grants("documents:read", "documents:*", true));
        assert!(grants("documents:*", "documents:*", false));
    }

    #[test]
    fn any_granted_needs_one_of_the_listed_scopes() {
        let wanted = strings(&["documents:read", "admin"]);
        assert!(any_granted(&wanted, &strings(&["openid", "admin"]), false));
        assert!(!any_granted(&wanted, &strings(&["openid"]), false));
        assert!(any_granted(&wanted, &strings(&["documents:*"]), true));
        assert!(!any_granted(&wanted, &strings(&["documents:*"]), false));
        assert_eq!(
            missing(&wanted, &strings(&["documents:*"]), true),
            vec!["admin"]
        );
    }
}
