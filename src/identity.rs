//! `Identity`: a verified caller, as authentication hands it to authorization, the audit log and
//! the identity headers; and its [`CachePolicy`], which says how long the verified-token cache
//! may serve it. A leaf: it imports nothing from the crate.

use std::sync::Arc;

/// How the caller proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    Jwt,
    ApiKey,
    Introspection,
    Anonymous,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Jwt => "jwt",
            Self::ApiKey => "api_key",
            Self::Introspection => "introspection",
            Self::Anonymous => "anonymous",
        }
    }
}

/// How long the verified-token cache may serve an identity, decided by whoever verified the
/// credential. Whatever the policy, an identity is never served at or past its token's
/// `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CachePolicy {
    /// Never cached: the credential is verified afresh on every request (a JWT whose key has
    /// no `kid` or is a shared secret cannot be traced to a published key).
    Uncacheable,
    /// A JWT signed by the issuer's key with this `kid`: served until the token's `exp` (an
    /// identity without one is not cached), and only while the issuer still publishes the key,
    /// so a rotation that retires the key sends its tokens back to verification.
    KeyBound(String),
    /// Served until this instant (Unix seconds), never past the token's own `expires_at`: for
    /// identities vouched for by someone else (an introspection answer), with no key to follow.
    Until(u64),
}

/// A verified caller. Built once per verified credential and shared (token cache) as `Arc`.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub method: AuthMethod,
    pub subject: String,
    pub issuer: String,
    /// Granted scopes, from `scope` (space separated), `scp` (array) or the configured claim.
    pub scopes: Vec<String>,
    pub roles: Vec<String>,
    /// `jti`, `iat`, `exp` and the key id, kept for revocation checks.
    pub token_id: Option<String>,
    pub issued_at: Option<u64>,
    /// Unix seconds; the token cache never keeps an identity past this.
    pub expires_at: Option<u64>,
    /// The JWT's `kid`, or for [`AuthMethod::ApiKey`] the API key's id (never the key).
    pub key_id: Option<String>,
    /// How long the verified-token cache may serve this identity.
    pub cache_policy: CachePolicy,
    /// Headers from the issuer's claim-to-header mappings, resolved at verification time.
    pub claim_headers: Vec<(String, String)>,
    /// The verified claims, for conditions and later stages.
    pub claims: Arc<serde_json::Map<String, serde_json::Value>>,
    /// How and when the user authenticated (`amr`, `acr`, `auth_time`), for step-up checks.
    pub user_authentication: UserAuthentication,
    /// Whether a granted `prefix:*` scope satisfies a required `prefix:...` one (the issuer's
    /// `scope_wildcards`, see `authz::scopes`).
    pub scope_wildcards: bool,
}

/// How and when the user behind a credential authenticated (RFC 9470, OpenID Connect Core
/// §2), as the authenticator read it. A claim of the wrong type is absent here, so a check that
/// needs it fails closed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserAuthentication {
    /// `amr`: the authentication methods used (an array of strings).
    pub amr: Vec<String>,
    /// Whether `amr` names one of the issuer's multi-factor methods (`mfa_methods`).
    pub mfa: bool,
    /// `acr`: the authentication context class satisfied.
    pub acr: Option<String>,
    /// `auth_time`: when the user last authenticated, Unix seconds.
    pub auth_time: Option<u64>,
    /// The issuer's clock skew, in seconds, allowed when comparing `auth_time` with now.
    pub clock_skew: u64,
}

impl Identity {
    pub fn anonymous() -> Self {
        Self {
            method: AuthMethod::Anonymous,
            subject: String::new(),
            issuer: String::new(),
            scopes: Vec::new(),
            roles: Vec::new(),
            token_id: None,
            issued_at: None,
            expires_at: None,
            key_id: None,
            cache_policy: CachePolicy::Uncacheable,
            claim_headers: Vec::new(),
            claims: Arc::default(),
            user_authentication: UserAuthentication::default(),
            scope_wildcards: false,
        }
    }

    /// The Unix second from which the cache must no longer serve this identity, by its policy:
    /// `None` when it may not be cached at all (uncacheable, or a key-bound token without
    /// `exp`).
    pub fn cached_until(&self) -> Option<u64> {
        match self.cache_policy {
            CachePolicy::Uncacheable => None,
            CachePolicy::KeyBound(_) => self.expires_at,
            CachePolicy::Until(until) => Some(self.expires_at.map_or(until, |exp| exp.min(until))),
        }
    }

    /// The key the issuer must still publish for this identity to be served from the cache.
    pub fn bound_key(&self) -> Option<&str> {
        match &self.cache_policy {
            CachePolicy::KeyBound(kid) => Some(kid),
            CachePolicy::Uncacheable | CachePolicy::Until(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(cache: CachePolicy, expires_at: Option<u64>) -> Identity {
        Identity {
            cache_policy: cache,
            expires_at,
            ..Identity::anonymous()
        }
    }

    #[test]
    fn a_key_bound_identity_is_cached_until_its_exp_and_never_without_one() {
        let bound = CachePolicy::KeyBound("k1".to_owned());
        assert_eq!(with(bound.clone(), Some(100)).cached_until(), Some(100));
        assert_eq!(with(bound.clone(), None).cached_until(), None);
        assert_eq!(with(bound, None).bound_key(), Some("k1"));
    }

    #[test]
    fn an_until_identity_is_never_cached_past_its_token_expiry() {
        assert_eq!(
            with(CachePolicy::Until(50), Some(100)).cached_until(),
            Some(50)
        );
        assert_eq!(
            with(CachePolicy::Until(500), Some(100)).cached_until(),
            Some(100)
        );
        assert_eq!(
            with(CachePolicy::Until(500), None).cached_until(),
            Some(500)
        );
        assert_eq!(with(CachePolicy::Until(500), None).bound_key(), None);
    }

    #[test]
    fn an_uncacheable_identity_is_never_cached() {
        assert_eq!(
            with(CachePolicy::Uncacheable, Some(100)).cached_until(),
            None
        );
        assert_eq!(Identity::anonymous().cached_until(), None);
    }
}
