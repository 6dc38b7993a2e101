//! Shared integration-test harness. Each file has one owner:
//! `tokens` (key fixtures, token minting), `jwks_server` (a JWKS/discovery server under the
//! test's control), `agent` (portcullis in-process and as the built binary, gRPC Check client),
//! `envoy`, `idp`, `upstream` (real Envoy, the real OpenID Provider, an echoing upstream).
#![allow(dead_code, unused_imports)]

pub mod agent;
pub mod envoy;
pub mod idp;
pub mod jwks_server;
pub mod tokens;
pub mod upstream;
