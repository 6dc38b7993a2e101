//! portcullis: an authorization sidecar for Envoy's `ext_authz` filter.
//!
//! Module map. Imports point one way (style.md layering; `make lint` checks it with
//! `deploy/ci/layers.sh`): `main → app → admin → app::state → {grpc, http, listener,
//! envoy_filter} → service → {engine, telemetry} → config → {authn, authz} → {input, decision,
//! proto, error, fetch, watch} → identity` (`error`, `fetch`, `watch` and `identity` import
//! nothing from the crate); the decision core (engine, authn, authz, decision, input, identity)
//! never uses tonic or the protos.
//!
//! | module | job |
//! |---|---|
//! | [`proto`] | generated Envoy types, included once; only `grpc` (and `app`, for the service name) use them |
//! | [`grpc`] | tonic `Authorization` service: `CheckRequest` → [`input::CheckInput`], [`decision::Decision`] → `CheckResponse`; [`grpc::dispatch`]: the listener's two services, by name |
//! | [`http`] | Envoy's HTTP `ext_authz` mode: request → [`input::CheckInput`], decision → HTTP answer |
//! | [`service`] | one check for both adapters: engine snapshot, decide, record telemetry, the `check` span |
//! | [`input`] | the transport-free view of one request |
//! | [`decision`] | `Decision` = allow (`Permit`) or deny (`Denial`: reason, status and challenge); the engine's `ResponseSettings` |
//! | [`identity`] | `Identity`, the verified caller (re-exported by [`decision`]), and the `CachePolicy` it carries: key-bound, until an instant, or uncacheable |
//! | [`engine`] | route → authenticate → authorize, immutable per configuration generation; built on `Shared`, the app-lifetime stores (key registry, token-cache counters) |
//! | [`authn`] | `authenticate(Presented)` by credential kind, credentials, JWT verification, JWKS key sets (`jwks/{document,schedule,store}`), verified-token cache and its process-lifetime counters |
//! | [`authz`] | `authorize` (requirements, identity, resource: the route and its path parameters); `path` normalization; `routes` (table, templates); `scopes` (all of, any of, wildcards); `roles` (RBAC: the `roles:` map resolved into one permission set per role); `condition` (`require.when`: CEL compiled at load, evaluated over lazy views of the identity and request); `step_up` (RFC 9470: `mfa`, `acr`, `max_auth_age`); `hygiene` (`content_types`, `idempotency_key`) |
//! | [`config`] | YAML → validated `Config` with located errors; hot reload (on [`watch`]) |
//! | [`envoy_filter`] | the Envoy `ext_authz` filter and cluster derived from a `Config` (`portcullis envoy-filter`) |
//! | [`telemetry`] | metrics, audit events, logging setup |
//! | [`fetch`] | outbound fetches: the URL rule (https except loopback, no credentials or fragment), redaction, size cap, timeout, `Cache-Control`/`ETag` |
//! | [`watch`] | the ConfigMap-safe, debounced file watcher (configuration today; keys and revocation files later) |
//! | [`error`] | `ErrorChain`: an error and its sources on one line; a leaf, imports nothing from the crate |
//! | [`admin`] | `/healthz`, `/readyz`, `/status`, `/metrics` (reads [`app::state`]) |
//! | [`listener`] | accept loops (connection limit, back-off on accept errors), HTTP connection timeouts |
//! | [`app`] | wiring: shared caches and counters, engine, reload task; `app::servers`: listeners, the gRPC, HTTP `ext_authz` and admin servers, gRPC health, ordered shutdown; [`app::state`]: `AppState`, readiness, reload |
//! | `testing` | tests only: crate-wide unit-test fixtures (in-memory configurations, a check service) |
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
pub mod identity;
pub mod input;
pub mod listener;
pub mod proto;
pub mod service;
pub mod telemetry;
#[cfg(test)]
pub(crate) mod testing;
pub mod watch;
