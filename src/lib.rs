//! portcullis: an authorization sidecar for Envoy's `ext_authz` filter.
//!
//! Module map. Imports point one way (style.md layering; `make lint` checks it with
//! `deploy/ci/layers.sh`): `main → app → admin → app::state → {grpc, http, listener,
//! envoy_filter} → service → {engine, telemetry} → config → {authn, authz, revocation} → {input, decision,
//! proto, error, fetch, watch} → identity` (`error`, `fetch`, `watch` and `identity` import
//! nothing from the crate), and `main → tools → {engine, config}`; the decision core (engine,
//! authn, authz, revocation, decision, input, identity) never uses tonic or the protos.
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
//! | [`engine`] | route → authenticate → authorize, immutable per configuration generation; built on `Shared`, the app-lifetime stores (key registry, token-cache counters, API keys store) |
//! | [`authn`] | `authenticate(Presented)` by credential kind, credentials, JWT verification, JWKS key sets (`jwks/{document,schedule,store}`), verified-token cache and its process-lifetime counters; `api_keys` (key format and checksum, the watched keys store, O(1) constant-time key check); `introspection` (RFC 7662: opaque tokens and `require.introspect`, answer checks, bounded single-flight answer cache) |
//! | [`authz`] | `authorize` (requirements, identity, resource: the route and its path parameters; one table of requirement steps, which `evaluate` runs whole for shadow routes and `explain`); `path` normalization; `routes` (table, templates); `scopes` (all of, any of, wildcards); `roles` (RBAC: the `roles:` map resolved into one permission set per role); `condition` (`require.when`: CEL compiled at load, evaluated over lazy views of the identity and request); `step_up` (RFC 9470: `mfa`, `acr`, `max_auth_age`); `hygiene` (`content_types`, `idempotency_key`) |
//! | [`revocation`] | the revocation store (by `jti`, subject, key id, API key id; merged from every source, swapped whole, lock-free check) and its sources: `file` (located parse, follow, atomic write), `http` (the polled feed, on [`fetch`]), `redis` (subscribe, load, publish) |
//! | [`config`] | YAML → validated `Config` with located errors; hot reload (on [`watch`]); `keys_file`: the `api_keys` section and the keys file (located errors, never key material) |
//! | [`envoy_filter`] | the Envoy `ext_authz` filter and cluster derived from a `Config` (`portcullis envoy-filter`) |
//! | [`telemetry`] | metrics, audit events, logging setup; `otel`: OpenTelemetry traces (the `portcullis.check` span, its W3C parent, bounded OTLP export, off unless configured) |
//! | [`fetch`] | outbound fetches: the URL rule (https except loopback, no credentials or fragment), redaction, size cap, timeout, `Cache-Control`/`ETag` |
//! | [`watch`] | the ConfigMap-safe, debounced file watcher (configuration and API keys file; revocation files later) |
//! | [`error`] | `ErrorChain`: an error and its sources on one line; a leaf, imports nothing from the crate |
//! | [`tools`] | the offline operator tools on the real engine: `explain` (one request's decision and reasoning) and `policy_test` (`portcullis test`: YAML policy test cases) |
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
pub mod revocation;
pub mod service;
pub mod telemetry;
#[cfg(test)]
pub(crate) mod testing;
pub mod tools;
pub mod watch;
