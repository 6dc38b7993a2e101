//! JWT verification (skeleton; the authn helper owns this file).
