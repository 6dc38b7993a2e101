//! Shared integration-test harness. Each file has one owner:
//! `tokens` (key fixtures, token minting), `http_server` (an HTTP server under the test's
//! control: serve, fail, hang, count, see the last request; JWKS and OIDC discovery on top),
//! `agent` (portcullis in-process and as the built binary, gRPC Check client), `envoy`, `idp`,
//! `upstream` (real Envoy, the real OpenID Provider, an echoing upstream), `otlp` (a test
//! OpenTelemetry collector on the real OTLP/gRPC service), `redis` (a real `redis-server` per
//! test), `pki` (a test CA and the certificates it signs).
#![allow(dead_code, unused_imports)]

pub mod agent;
pub mod envoy;
pub mod http_server;
pub mod idp;
pub mod otlp;
pub mod pki;
pub mod redis;
pub mod tokens;
pub mod upstream;
