//! Issuer key sets: parse JWKS documents into ready-to-use verification keys (built once per
//! key set, never per request), fetch them (`jwks_uri`, OIDC discovery, file, shared secret),
//! refresh them in the background, refetch on an unknown `kid` (single-flight, rate-limited),
//! and keep the last good set when the IdP fails (stale-if-error).
//!
//! The lifecycle, and why:
//! - **First fetch** starts in the background when a store is created. If it fails the store has
//!   no keys, [`KeyStore::resolve`] answers [`KeyError::NoKeys`] (503, fail closed), and the
//!   store retries within about a second, backing off to `min_refresh_interval` — never the
//!   20-minute empty cache Istio users report (istio/istio#37456).
//! - **Refresh period** is the JWKS response's `Cache-Control: max-age`, clamped to
//!   [`min_refresh_interval`, `max_refresh_interval`]; without a `max-age` (and for files) it is
//!   `max_refresh_interval`. Periods get up to 10 % of jitter so a fleet of pods does not fetch
//!   in lockstep.
//! - **Failure** (network, HTTP status, oversized or invalid document, or a document with no
//!   usable key) never replaces a good set: the last good set stays in use and its age keeps
//!   growing in [`IssuerKeyStatus::age`](crate::authn::IssuerKeyStatus::age). Retries back off from 1 s (or `min_refresh_interval`
//!   when that is shorter), doubling up to `min_refresh_interval`, with jitter.
//! - **Unknown `kid`**: one refetch, shared by every concurrent caller (single-flight), and at
//!   most one such refetch per issuer per `min_refresh_interval`, so random kids cannot make us
//!   hammer the IdP (oathkeeper#203). Callers wait at most `fetch_timeout` for it; the fetch
//!   itself runs in its own task, so a cancelled request does not abort it for the others.
//!   Any completed attempt reschedules the background refresh from that moment.
//! - **Discovery**: `{issuer}/.well-known/openid-configuration` (trailing `/` of the issuer
//!   removed, OpenID Connect Discovery 1.0 §4); its `issuer` must equal ours exactly (§4.3). The
//!   `jwks_uri` found there is cached and re-discovered after any failed JWKS fetch and at
//!   least every `max_refresh_interval`.
//! - **Transport**: one shared `reqwest` client (rustls), no redirects (a redirect could move
//!   us to plain HTTP or another host), HTTPS only except to loopback or when
//!   `allow_insecure_http` is set, never credentials or a fragment in a URL (the rule of
//!   [`crate::fetch`], which the configuration check applies too), a `fetch_timeout` on every
//!   request, and a size cap enforced while the body streams in.
//!
//! This module must never log or print key material or a shared secret, never log a URL's
//! query string or credentials, never take a symmetric key from a JWKS document, and never
//! answer with keys it could not parse (fail closed).
//!
//! Layout: `document` parses JWKS documents into keys, `schedule` computes refresh and retry
//! delays, `store` holds the stores and the registry; fetches go through [`crate::fetch`].

mod document;
mod schedule;
mod store;

pub use document::{JwksError, KeyFamily, KeySet, SkippedKey, VerificationKey, parse_jwks};
pub use store::{KeyError, KeyRegistry, KeyStore};
