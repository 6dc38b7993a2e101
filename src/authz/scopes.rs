//! OAuth scope checks.

/// The required scopes the caller lacks, in the route's order; empty means allowed.
pub fn missing<'a>(required: &'a [String], granted: &[String]) -> Vec<&'a str> {
    required
        .iter()
        .filter(|need| !granted.iter().any(|have| have == *need))
        .map(String::as_str)
        .collect()
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
        assert!(missing(&required, &granted).is_empty());
    }

    #[test]
    fn denies_when_one_scope_is_missing() {
        let required = strings(&["read:documents", "write:documents"]);
        let granted = strings(&["read:documents"]);
        assert_eq!(missing(&required, &granted), vec!["write:documents"]);
    }

    #[test]
    fn scope_prefix_is_not_a_match() {
        let required = strings(&["read:documents"]);
        let granted = strings(&["read:doc", "read:documents:all"]);
        assert_eq!(missing(&required, &granted), vec!["read:documents"]);
    }
}
