//! Verified-token cache (skeleton; the authn helper owns this file).

/// Verified identities keyed by a hash of the token.
#[derive(Debug, Default)]
pub struct TokenCache {}

impl TokenCache {
    pub fn new(_capacity: u64) -> Self {
        Self {}
    }
}
