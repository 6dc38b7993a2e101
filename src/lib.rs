//! portcullis: an authorization sidecar for Envoy's `ext_authz` filter.
//!
//! Module map (dependency direction: `grpc → engine → {authn, authz} → {input, decision}`;
//! `error`, `fetch` and `watch` are leaves that import nothing from the crate):
//!
//! | module | job |
//! |---|---|
//! | [`proto`] | generated Envoy types, included once; only `grpc` uses them |
//! | [`grpc`] | tonic `Authorization` service: `CheckRequest` → [`input::CheckInput`], [`decision::Decision`] → `CheckResponse` |
//! | [`input`] | the transport-free view of one request |
//! | [`decision`] | `Decision` = allow (`Permit`) or deny (`DenyReason` with status and challenge) |
//! | [`engine`] | route → authenticate → authorize, immutable per configuration generation |
//! | [`authn`] | credentials, JWT verification, JWKS key sets (`jwks/{document,schedule,store}`), verified-token cache |
//! | [`authz`] | routes and path normalization, scopes |
//! | [`config`] | YAML → validated `Config` with located errors; hot reload (on [`watch`]) |
//! | [`envoy_filter`] | the Envoy `ext_authz` filter and cluster derived from a `Config` (`portcullis envoy-filter`) |
//! | [`telemetry`] | metrics, audit events, logging setup |
//! | [`fetch`] | outbound fetches: the URL rule (https except loopback, no credentials or fragment), redaction, size cap, timeout, `Cache-Control`/`ETag` |
//! | [`watch`] | the ConfigMap-safe, debounced file watcher (configuration today; keys and revocation files later) |
//! | [`error`] | `ErrorChain`: an error and its sources on one line; a leaf, imports nothing from the crate |
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
pub mod error;
pub mod fetch;
pub mod grpc;
pub mod http;
pub mod input;
pub mod listener;
pub mod proto;
pub mod telemetry;
pub mod watch;
