//! portcullis: an authorization sidecar for Envoy's `ext_authz` filter.
//!
//! Module map (dependency direction: `grpc → engine → {authn, authz} → {input, decision}`):
//!
//! | module | job |
//! |---|---|
//! | [`proto`] | generated Envoy types, included once; only `grpc` uses them |
//! | [`grpc`] | tonic `Authorization` service: `CheckRequest` → [`input::CheckInput`], [`decision::Decision`] → `CheckResponse` |
//! | [`input`] | the transport-free view of one request |
//! | [`decision`] | `Decision` = allow (`Permit`) or deny (`DenyReason` with status and challenge) |
//! | [`engine`] | route → authenticate → authorize, immutable per configuration generation |
//! | [`authn`] | credentials, JWT verification, JWKS key sets, verified-token cache |
//! | [`authz`] | routes and path normalization, scopes |
//! | [`config`] | YAML → validated `Config` with located errors; hot reload |
//! | [`envoy_filter`] | the Envoy `ext_authz` filter and cluster derived from a `Config` (`portcullis envoy-filter`) |
//! | [`telemetry`] | metrics, audit events, logging setup |
//! | [`admin`] | `/healthz`, `/readyz`, `/status`, `/metrics` |
//! | [`listener`] | accept loops (connection limit, back-off on accept errors), HTTP connection timeouts |
//! | [`app`] | wiring: shared caches, servers, reload task, graceful shutdown |
#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod authn;
pub mod authz;
pub mod config;
pub mod decision;
pub mod engine;
pub mod envoy_filter;
pub mod grpc;
pub mod http;
pub mod input;
pub mod listener;
pub mod proto;
pub mod service;
pub mod telemetry;
