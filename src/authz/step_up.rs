//! Step-up authentication (RFC 9470): whether the user behind a credential authenticated
//! strongly enough (`require.mfa`, `require.acr`) and recently enough (`require.max_auth_age`)
//! for a route. A failure is answered 401 with an `insufficient_user_authentication` challenge
//! naming the route's `acr_values` and `max_age`, so the client knows what to ask for.

use std::sync::Arc;

use crate::identity::UserAuthentication;

/// A route's step-up requirements; the default demands nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepUpRequirement {
    /// `amr` must name one of the issuer's multi-factor methods.
    pub mfa: bool,
    /// `acr` must be one of these (none: any, or no `acr` at all).
    pub acr: Vec<String>,
    /// `acr` joined with spaces, as the challenge's `acr_values` sends it; built once at load.
    pub acr_values: Option<Arc<str>>,
    /// Longest time, in seconds, since `auth_time` (plus the issuer's clock skew).
    pub max_auth_age: Option<u64>,
}

impl StepUpRequirement {
    pub fn is_empty(&self) -> bool {
        !self.mfa && self.acr.is_empty() && self.max_auth_age.is_none()
    }

    /// What the route asks for, for a person reading an explanation (`mfa, acr one of phrh,
    /// authenticated within 300s`).
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.mfa {
            parts.push("mfa".to_owned());
        }
        if !self.acr.is_empty() {
            parts.push(format!("acr one of {}", self.acr.join(" ")));
        }
        if let Some(max_age) = self.max_auth_age {
            parts.push(format!("authenticated within {max_age}s"));
        }
        parts.join(", ")
    }

    /// Whether `user` meets every step-up requirement at `now` (Unix seconds). A missing claim
    /// fails the check that needs it.
    pub fn met_by(&self, user: &UserAuthentication, now: u64) -> bool {
        if self.mfa && !user.mfa {
            return false;
        }
        if !self.acr.is_empty()
            && !user
                .acr
                .as_deref()
                .is_some_and(|acr| self.acr.iter().any(|wanted| wanted == acr))
        {
            return false;
        }
        if let Some(max_age) = self.max_auth_age {
            let Some(auth_time) = user.auth_time else {
                return false;
            };
            // An `auth_time` in the future (within the skew the token itself passed) is fresh.
            if now.saturating_sub(auth_time) > max_age.saturating_add(user.clock_skew) {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000;

    fn user(
        amr: &[&str],
        mfa: bool,
        acr: Option<&str>,
        auth_time: Option<u64>,
    ) -> UserAuthentication {
        UserAuthentication {
            amr: amr.iter().map(|m| (*m).to_owned()).collect(),
            mfa,
            acr: acr.map(str::to_owned),
            auth_time,
            clock_skew: 30,
        }
    }

    fn acr(values: &[&str]) -> StepUpRequirement {
        StepUpRequirement {
            acr: values.iter().map(|v| (*v).to_owned()).collect(),
            acr_values: Some(values.join(" ").into()),
            ..StepUpRequirement::default()
        }
    }

    #[test]
    fn mfa_needs_a_multi_factor_method_in_amr() {
        let mfa = StepUpRequirement {
            mfa: true,
            ..StepUpRequirement::default()
        };
        assert!(mfa.met_by(&user(&["pwd", "otp"], true, None, None), NOW));
        assert!(!mfa.met_by(&user(&["pwd"], false, None, None), NOW));
        assert!(!mfa.met_by(&UserAuthentication::default(), NOW));
    }

    #[test]
    fn acr_must_be_one_of_the_listed_classes() {
        let required = acr(&["phrh", "phr"]);
        assert!(required.met_by(&user(&[], false, Some("phr"), None), NOW));
        assert!(!required.met_by(&user(&[], false, Some("urn:low"), None), NOW));
        assert!(!required.met_by(&user(&[], false, None, None), NOW));
    }

    #[test]
    fn max_auth_age_allows_the_clock_skew_and_refuses_a_token_without_auth_time() {
        let recent = StepUpRequirement {
            max_auth_age: Some(300),
            ..StepUpRequirement::default()
        };
        assert!(recent.met_by(&user(&[], false, None, Some(NOW - 300)), NOW));
        assert!(recent.met_by(&user(&[], false, None, Some(NOW - 330)), NOW));
        assert!(!recent.met_by(&user(&[], false, None, Some(NOW - 331)), NOW));
        assert!(recent.met_by(&user(&[], false, None, Some(NOW + 10)), NOW));
        assert!(!recent.met_by(&user(&[], false, None, None), NOW));
    }

    #[test]
    fn no_step_up_requirement_is_met_by_anyone() {
        assert!(StepUpRequirement::default().is_empty());
        assert!(StepUpRequirement::default().met_by(&UserAuthentication::default(), NOW));
    }
}
