//! Issuer key sets (skeleton; the authn helper owns this file).
