//! Raw configuration → checked [`Config`]: defaults, bounds, and every rule that involves more
//! than one field, each failure recorded with its path (vector's `config/compiler.rs` is the
//! model: collect everything, then fail once).
//!
//! Security rules enforced here: an issuer has exactly one key source; `HS*` only with a
//! shared secret and a shared secret only with `HS*` (an HMAC key next to public keys is the
//! classic algorithm-confusion hole); key URLs are HTTPS unless loopback or explicitly
//! allowed; every route says `allow: anonymous`, `allow: authenticated` or a `require` that
//! demands something (no implicit allow, and no empty `require` that reads as one); a route that
//! an earlier route always shadows is an error (the operator believes it applies).
//!
//! This module must never read file contents (it only checks that referenced files exist)
//! and never put a secret into a message.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::{NonZeroU8, NonZeroU32};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::raw::{
    self, AllowKind, Checked, ClaimPath, FilePath, HumanDuration, ModeName, OnDenyName, RawConfig,
    RawIssuer, RawRequire, RawRoute, RawServer,
};
use super::source::YamlPath;
use super::{
    Config, Problem, ReadinessConfig, ResponseSettings, ServerConfig, TelemetryConfig, TlsConfig,
    TracingConfig,
};
use crate::authn::attempts::{
    AttemptQuota, AttemptSettings, ClientAddressHeader, MAX_TRUSTED_HOPS,
};
use crate::authn::introspection::{
    self, ClientAuth, ClientSecret, Endpoint, IntrospectionConfig, SecretSource,
};
use crate::authn::{Algorithm, AuthnSettings, ClaimPaths, IssuerConfig, KeySource, RefreshPolicy};
use crate::authz::hygiene::Hygiene;
use crate::authz::roles::{RoleDefinition, RoleError, RoleGrants};
use crate::authz::routes::{PathMatch, RouteMatch, prefix_matches};
use crate::authz::step_up::StepUpRequirement;
use crate::authz::{Mode, OnDeny, Policy, Requirements, Route};
use crate::fetch;
use crate::revocation::http::FeedConfig;
use crate::revocation::redis::RedisConfig;
use crate::revocation::{self, RevocationConfig};

/// Largest `revocation.max_entries`: ten million entries take a few GiB; more would let one
/// source exhaust a sidecar's memory.
const MAX_REVOCATION_ENTRIES: u64 = 10_000_000;

pub const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(30);
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);
pub const MIN_REFRESH_INTERVAL_FLOOR: Duration = Duration::from_secs(1);
pub const MAX_REFRESH_INTERVAL_CEILING: Duration = Duration::from_secs(24 * 3600);
pub const MIN_FETCH_TIMEOUT: Duration = Duration::from_millis(100);
pub const MAX_FETCH_TIMEOUT: Duration = Duration::from_secs(60);
pub const MIN_DOCUMENT_BYTES: u64 = 1024;
pub const MAX_DOCUMENT_BYTES: u64 = 16 * 1024 * 1024;
pub const MIN_TOKEN_BYTES: u64 = 512;
pub const MAX_TOKEN_BYTES: u64 = 64 * 1024;
pub const MAX_TOKEN_CACHE_ENTRIES: u64 = 10_000_000;
pub const MAX_FAILED_ATTEMPTS_PER_SOURCE: u64 = 10_000;
pub const MIN_FAILED_ATTEMPTS_PERIOD: Duration = Duration::from_secs(1);
pub const MAX_FAILED_ATTEMPTS_PERIOD: Duration = Duration::from_secs(24 * 3600);

/// Upper bound of `server.connections.max_per_listener`.
const MAX_CONNECTIONS_PER_LISTENER: usize = 1_000_000;
/// Lower bound of the `server.connections` timeouts: a shorter one cuts off real clients.
const MIN_CONNECTION_TIMEOUT: Duration = Duration::from_millis(100);

/// Compiles `raw`; `None` when anything was wrong (all of it recorded in `problems`).
/// Relative file paths resolve against `base_dir`.
pub(crate) fn compile(
    raw: RawConfig,
    base_dir: &Path,
    problems: &mut Vec<Problem>,
) -> Option<Config> {
    let before = problems.len();
    let mut ctx = Ctx {
        base_dir,
        problems,
        grants: None,
        default_mode: Mode::Enforce,
        introspection_configured: !raw.introspection.is_empty(),
    };
    ctx.grants = ctx.roles(&raw);
    if let Some(mode) = &raw.mode {
        ctx.default_mode = ctx.mode(root().key("mode"), mode).unwrap_or_default();
    }
    let server = ctx.server(&raw.server);
    let issuers: Vec<Option<IssuerConfig>> = raw
        .issuers
        .iter()
        .map(|(index, issuer)| ctx.issuer(&issuer_path(*index), issuer))
        .collect();
    ctx.unique_issuers(&raw.issuers);
    let authn = ctx.limits(&raw.limits);
    // API keys are a credential too: a route may require them without any JWT issuer.
    let have_issuers = !raw.issuers.is_empty() || raw.api_keys.is_some() || raw.incomplete;
    // Step-up reads `amr`, `acr` and `auth_time`, which only a token carries (an API key records
    // no user authentication): with API keys alone such a route could never be passed.
    let have_token_issuers = !raw.issuers.is_empty() || raw.incomplete;
    let routes: Vec<(usize, Option<Route>)> = raw
        .routes
        .iter()
        .map(|(index, route)| {
            let callers = Callers {
                any: have_issuers,
                tokens: have_token_issuers,
            };
            (*index, ctx.route(&route_path(*index), route, callers))
        })
        .collect();
    ctx.unique_routes(&raw.routes);
    ctx.reachable(&routes);
    let response = ResponseSettings {
        strip_credentials: raw.response.strip_credentials.unwrap_or(true),
        dynamic_metadata: raw.response.dynamic_metadata.unwrap_or(true),
        no_route_status: raw
            .response
            .no_route_status
            .as_ref()
            .and_then(|status| ctx.get(root().key("response").key("no_route_status"), status))
            .map_or(404, |status| status.0),
    };
    let readiness = ReadinessConfig {
        require_keys: raw.readiness.require_keys.unwrap_or(true),
    };
    let api_keys = raw
        .api_keys
        .as_ref()
        .map(|section| super::keys_file::compile(section, base_dir, ctx.problems));
    let introspection = ctx.introspection(&raw);
    let telemetry = TelemetryConfig {
        tracing: raw
            .telemetry
            .tracing
            .as_ref()
            .map(|tracing| ctx.tracing(tracing))
            .unwrap_or_default(),
    };
    let revocation = raw
        .revocation
        .as_ref()
        .map(|revocation| ctx.revocation(revocation, raw.incomplete));
    if ctx.problems.len() > before || raw.incomplete {
        return None;
    }
    Some(Config {
        server: server?,
        issuers: issuers.into_iter().collect::<Option<Vec<_>>>()?,
        authn,
        routes: routes
            .into_iter()
            .map(|(_, route)| route)
            .collect::<Option<Vec<_>>>()?,
        response,
        readiness,
        api_keys: match api_keys {
            Some(settings) => Some(settings?),
            None => None,
        },
        introspection: introspection?,
        telemetry,
        revocation: revocation.map_or(Some(None), |r| r.map(Some))?,
    })
}

fn root() -> YamlPath {
    YamlPath::root()
}

fn issuer_path(index: usize) -> YamlPath {
    root().key("issuers").index(index)
}

fn route_path(index: usize) -> YamlPath {
    root().key("routes").index(index)
}

fn format_duration(duration: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(duration)
}

/// Who could ever call a route that requires something: anyone (a token issuer or API keys),
/// and a caller with a token (only tokens carry user authentication, for step-up).
#[derive(Debug, Clone, Copy)]
struct Callers {
    any: bool,
    tokens: bool,
}

struct Ctx<'a> {
    base_dir: &'a Path,
    problems: &'a mut Vec<Problem>,
    /// `roles:` resolved; `None` when it could not be (its problems recorded), and then
    /// routes' roles and permissions are not checked against it.
    grants: Option<Arc<RoleGrants>>,
    /// The top-level `mode`: a route's own `mode` when it sets none.
    default_mode: Mode,
    /// `introspection:` lists at least one entry (`require.introspect` needs one).
    introspection_configured: bool,
}

impl Ctx<'_> {
    fn value(&mut self, path: YamlPath, message: impl Into<String>) {
        self.problems.push(Problem::value(path, message.into()));
    }

    /// The value of a leaf, or `None` after recording why it is invalid. Call it once per leaf.
    fn get<'v, T>(&mut self, path: YamlPath, checked: &'v Checked<T>) -> Option<&'v T> {
        match &checked.0 {
            Ok(value) => Some(value),
            Err(message) => {
                self.value(path, message.clone());
                None
            }
        }
    }

    /// Every valid element of a list of leaves (invalid ones recorded); `None` if any failed.
    fn get_all<'v, T>(&mut self, path: &YamlPath, list: &'v [Checked<T>]) -> Option<Vec<&'v T>> {
        let mut all = Some(Vec::with_capacity(list.len()));
        for (index, item) in list.iter().enumerate() {
            match self.get(path.index(index), item) {
                Some(value) => {
                    if let Some(all) = all.as_mut() {
                        all.push(value);
                    }
                }
                None => all = None,
            }
        }
        all
    }

    /// Resolves `file` against the configuration's directory and checks that it exists.
    fn file(&mut self, path: YamlPath, file: &Checked<FilePath>) -> Option<PathBuf> {
        let given = Path::new(&self.get(path.clone(), file)?.0).to_owned();
        let resolved = if given.is_absolute() {
            given
        } else {
            self.base_dir.join(given)
        };
        if resolved.is_file() {
            Some(resolved)
        } else {
            self.value(
                path,
                format!("`{}` does not exist or is not a file", resolved.display()),
            );
            None
        }
    }

    fn server(&mut self, raw: &RawServer) -> Option<ServerConfig> {
        let path = root().key("server");
        let grpc = self
            .get(path.key("grpc_listen"), &raw.grpc_listen)
            .map(|a| a.0);
        let admin = self
            .get(path.key("admin_listen"), &raw.admin_listen)
            .map(|a| a.0);
        let http = raw
            .http_listen
            .as_ref()
            .map(|http| self.get(path.key("http_listen"), http).map(|a| a.0));
        // Port 0 asks the OS for a free port, so two listeners may both say `:0`.
        let clash = |a: Option<SocketAddr>, b: Option<SocketAddr>| {
            a.is_some_and(|a| a.port() != 0) && a == b
        };
        if clash(admin, grpc) {
            self.value(
                path.key("admin_listen"),
                "the same address as `grpc_listen`; each listener needs its own",
            );
        }
        if let Some(Some(http)) = http
            && (clash(Some(http), grpc) || clash(Some(http), admin))
        {
            self.value(
                path.key("http_listen"),
                format!("`{http}` is already used by another listener"),
            );
        }
        let tls = match &raw.tls {
            None => Some(None),
            Some(tls) => {
                let tls_path = path.key("tls");
                let cert_file = self.file(tls_path.key("cert_file"), &tls.cert_file);
                let key_file = self.file(tls_path.key("key_file"), &tls.key_file);
                let client_ca_file = tls
                    .client_ca_file
                    .as_ref()
                    .map(|ca| self.file(tls_path.key("client_ca_file"), ca));
                match (cert_file, key_file, client_ca_file) {
                    (Some(cert_file), Some(key_file), None) => Some(Some(TlsConfig {
                        cert_file,
                        key_file,
                        client_ca_file: None,
                    })),
                    (Some(cert_file), Some(key_file), Some(Some(ca))) => Some(Some(TlsConfig {
                        cert_file,
                        key_file,
                        client_ca_file: Some(ca),
                    })),
                    _ => None,
                }
            }
        };
        let connections = self.connections(path.key("connections"), &raw.connections);
        Some(ServerConfig {
            grpc_listen: grpc?,
            http_listen: http.map_or(Some(None), |h| h.map(Some))?,
            admin_listen: admin?,
            tls: tls?,
            connections: connections?,
        })
    }

    fn connections(
        &mut self,
        path: YamlPath,
        raw: &raw::RawConnections,
    ) -> Option<super::ConnectionLimits> {
        let defaults = super::ConnectionLimits::default();
        let max = raw
            .max_per_listener
            .unwrap_or(defaults.max_per_listener as u64);
        let max_per_listener = match usize::try_from(max) {
            Ok(max) if (1..=MAX_CONNECTIONS_PER_LISTENER).contains(&max) => Some(max),
            _ => {
                self.value(
                    path.key("max_per_listener"),
                    format!("must be between 1 and {MAX_CONNECTIONS_PER_LISTENER}"),
                );
                None
            }
        };
        let mut timeout = |key: &str, raw: &Option<Checked<HumanDuration>>, default| {
            let value = match raw {
                None => Some(default),
                Some(raw) => self.get(path.key(key), raw).map(|d| d.0),
            }?;
            if value < MIN_CONNECTION_TIMEOUT {
                self.value(
                    path.key(key),
                    format!(
                        "must be at least {}",
                        humantime::format_duration(MIN_CONNECTION_TIMEOUT)
                    ),
                );
                return None;
            }
            Some(value)
        };
        let header_read_timeout = timeout(
            "header_read_timeout",
            &raw.header_read_timeout,
            defaults.header_read_timeout,
        );
        let idle_timeout = timeout("idle_timeout", &raw.idle_timeout, defaults.idle_timeout);
        Some(super::ConnectionLimits {
            max_per_listener: max_per_listener?,
            header_read_timeout: header_read_timeout?,
            idle_timeout: idle_timeout?,
        })
    }

    fn issuer(&mut self, path: &YamlPath, raw: &RawIssuer) -> Option<IssuerConfig> {
        let before = self.problems.len();

        let name = self.get(path.key("name"), &raw.name).map(|n| n.0.clone());
        let issuer = self
            .get(path.key("issuer"), &raw.issuer)
            .map(|i| i.0.clone());

        if raw.audiences.is_empty() {
            self.value(
                path.key("audiences"),
                "list at least one audience: a token for another API must not be accepted",
            );
        }
        let audiences = self.get_all(&path.key("audiences"), &raw.audiences);

        let source = self.key_source(path, raw, issuer.as_deref());
        let algorithms = self.algorithms(path, raw);

        let clock_skew = match &raw.clock_skew {
            None => Some(DEFAULT_CLOCK_SKEW),
            Some(skew) => self.get(path.key("clock_skew"), skew).map(|d| d.0),
        };
        if let Some(skew) = clock_skew
            && skew > MAX_CLOCK_SKEW
        {
            self.value(
                path.key("clock_skew"),
                format!(
                    "{} is more than the maximum of {}",
                    format_duration(skew),
                    format_duration(MAX_CLOCK_SKEW)
                ),
            );
        }

        let max_lifetime = raw
            .max_lifetime
            .as_ref()
            .map(|lifetime| self.get(path.key("max_lifetime"), lifetime).map(|d| d.0));
        if let Some(Some(lifetime)) = max_lifetime
            && lifetime.is_zero()
        {
            self.value(path.key("max_lifetime"), "must be longer than zero");
        }

        let allowed_types = raw.types.as_ref().map(|types| {
            if types.is_empty() {
                self.value(
                    path.key("types"),
                    "list at least one accepted `typ` (e.g. `at+jwt`), or leave `types` out to \
                     accept any",
                );
            }
            self.get_all(&path.key("types"), types)
                .map(|types| types.into_iter().map(|t| t.0.clone()).collect::<Vec<_>>())
        });

        let refresh = self.refresh(path, raw);
        let claims = self.claims(path, raw);
        let claim_headers = self.claim_headers(path, raw);
        let mfa_methods = self.mfa_methods(path, raw);

        if self.problems.len() > before {
            return None;
        }
        Some(IssuerConfig {
            name: name?,
            issuer: issuer?,
            audiences: audiences?.into_iter().map(|a| a.0.clone()).collect(),
            algorithms: algorithms?,
            clock_skew: clock_skew?,
            claims: claims?,
            allowed_types: allowed_types.map_or(Some(None), |t| t.map(Some))?,
            max_lifetime: max_lifetime.map_or(Some(None), |m| m.map(Some))?,
            source: source?,
            refresh: refresh?,
            claim_headers: claim_headers?,
            mfa_methods: mfa_methods?,
            scope_wildcards: raw.scope_wildcards,
        })
    }

    /// `mfa_methods`: the `amr` values that count as multi-factor; the RFC 8176 default when
    /// absent, never empty (an empty list would make `require.mfa` refuse every token
    /// silently).
    fn mfa_methods(&mut self, path: &YamlPath, raw: &RawIssuer) -> Option<Vec<String>> {
        let Some(methods) = &raw.mfa_methods else {
            return Some(crate::authn::default_mfa_methods());
        };
        let at = path.key("mfa_methods");
        if methods.is_empty() {
            self.value(
                at.clone(),
                "list at least one `amr` value, or leave `mfa_methods` out for the default \
                 `[mfa, otp, hwk, sms, swk]`",
            );
        }
        let methods = self.get_all(&at, methods)?;
        Some(methods.into_iter().map(|m| m.0.clone()).collect())
    }

    fn key_source(
        &mut self,
        path: &YamlPath,
        raw: &RawIssuer,
        issuer: Option<&str>,
    ) -> Option<KeySource> {
        let mut given: Vec<&str> = Vec::new();
        if raw.jwks_uri.is_some() {
            given.push("jwks_uri");
        }
        if raw.discovery == Some(true) {
            given.push("discovery");
        }
        if raw.jwks_file.is_some() {
            given.push("jwks_file");
        }
        if raw.shared_secret_file.is_some() {
            given.push("shared_secret_file");
        }
        if given.is_empty() {
            self.value(
                path.clone(),
                "no key source: set exactly one of `jwks_uri`, `discovery: true`, `jwks_file` \
                 or `shared_secret_file`",
            );
            return None;
        }
        if given.len() > 1 {
            let listed = given
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(" and ");
            self.value(
                path.clone(),
                format!("{listed} are all set: an issuer has exactly one key source"),
            );
            return None;
        }
        if let Some(uri) = &raw.jwks_uri {
            let uri = self.get(path.key("jwks_uri"), uri)?;
            if let Err(message) = check_fetch_url(&uri.0, raw.allow_insecure_http) {
                self.value(path.key("jwks_uri"), message);
                return None;
            }
            return Some(KeySource::JwksUri(uri.0.clone()));
        }
        if raw.discovery == Some(true) {
            // Discovery fetches `{issuer}/.well-known/openid-configuration`.
            if let Err(message) = check_fetch_url(issuer?, raw.allow_insecure_http) {
                self.value(
                    path.key("issuer"),
                    format!("with `discovery: true` the issuer must be a URL: {message}"),
                );
                return None;
            }
            return Some(KeySource::Discovery);
        }
        if let Some(file) = &raw.jwks_file {
            return self
                .file(path.key("jwks_file"), file)
                .map(KeySource::JwksFile);
        }
        let file = raw.shared_secret_file.as_ref()?;
        self.file(path.key("shared_secret_file"), file)
            .map(KeySource::SharedSecretFile)
    }

    fn algorithms(&mut self, path: &YamlPath, raw: &RawIssuer) -> Option<Vec<Algorithm>> {
        let algorithms_path = path.key("algorithms");
        if raw.algorithms.is_empty() {
            self.value(
                algorithms_path.clone(),
                "list the accepted algorithms (e.g. `[RS256]`); there is no default",
            );
            return None;
        }
        let shared_secret = raw.shared_secret_file.is_some();
        let mut valid = true;
        let mut seen: Vec<Algorithm> = Vec::new();
        for (index, algorithm) in raw.algorithms.iter().enumerate() {
            let item = algorithms_path.index(index);
            let Some(algorithm) = self.get(item.clone(), algorithm).map(|a| a.0) else {
                valid = false;
                continue;
            };
            let name = algorithm.name();
            if seen.contains(&algorithm) {
                self.value(item, format!("`{name}` is listed twice"));
                valid = false;
                continue;
            }
            seen.push(algorithm);
            let hmac = algorithm.is_hmac();
            if hmac && !shared_secret {
                self.value(
                    item,
                    format!(
                        "`{name}` is an HMAC algorithm: it is only allowed with \
                         `shared_secret_file`, never with public keys (algorithm confusion)"
                    ),
                );
                valid = false;
            } else if !hmac && shared_secret {
                self.value(
                    item,
                    format!(
                        "`{name}` needs a public key: with `shared_secret_file` only HS256, \
                         HS384 and HS512 are allowed"
                    ),
                );
                valid = false;
            }
        }
        valid.then_some(seen)
    }

    fn claims(&mut self, path: &YamlPath, raw: &RawIssuer) -> Option<ClaimPaths> {
        let claims_path = path.key("claims");
        let defaults = ClaimPaths::default();
        let one = |ctx: &mut Self, key: &str, claim: &Option<Checked<ClaimPath>>| {
            claim
                .as_ref()
                .map(|claim| ctx.get(claims_path.key(key), claim).map(|c| c.0.clone()))
        };
        let subject = one(self, "subject", &raw.claims.subject);
        let scopes = one(self, "scopes", &raw.claims.scopes);
        let roles = one(self, "roles", &raw.claims.roles);
        Some(ClaimPaths {
            subject: subject.unwrap_or(Some(defaults.subject))?,
            scopes: scopes.map_or(Some(defaults.scopes), |s| s.map(Some))?,
            roles: roles.map_or(Some(defaults.roles), |r| r.map(Some))?,
        })
    }

    fn claim_headers(&mut self, path: &YamlPath, raw: &RawIssuer) -> Option<Vec<(String, String)>> {
        let headers_path = path.key("claim_headers");
        let mut valid = true;
        let mut mappings: Vec<(String, String)> = Vec::new();
        for (claim, header) in &raw.claim_headers.0 {
            let entry = headers_path.key(claim);
            if let Err(message) = raw::parse_claim_path(claim) {
                self.problems.push(Problem::key(entry.clone(), message));
                valid = false;
            }
            let Some(header) = self.get(entry.clone(), header) else {
                valid = false;
                continue;
            };
            if let Some((other, _)) = mappings.iter().find(|(_, h)| *h == header.0) {
                self.value(
                    entry,
                    format!("header `{}` is already set from claim `{other}`", header.0),
                );
                valid = false;
                continue;
            }
            mappings.push((claim.clone(), header.0.clone()));
        }
        valid.then_some(mappings)
    }

    fn refresh(&mut self, path: &YamlPath, raw: &RawIssuer) -> Option<RefreshPolicy> {
        let defaults = RefreshPolicy::default();
        let refresh_path = path.key("refresh");
        let duration = |ctx: &mut Self, key: &str, value: &Option<Checked<HumanDuration>>| {
            value
                .as_ref()
                .map(|value| ctx.get(refresh_path.key(key), value).map(|d| d.0))
        };
        let min = duration(self, "min_interval", &raw.refresh.min_interval)
            .unwrap_or(Some(defaults.min_refresh_interval));
        let max = duration(self, "max_interval", &raw.refresh.max_interval)
            .unwrap_or(Some(defaults.max_refresh_interval));
        let timeout =
            duration(self, "timeout", &raw.refresh.timeout).unwrap_or(Some(defaults.fetch_timeout));
        let max_document_bytes = raw
            .refresh
            .max_document_bytes
            .unwrap_or(defaults.max_document_bytes as u64);
        let before = self.problems.len();

        if let Some(min) = min
            && min < MIN_REFRESH_INTERVAL_FLOOR
        {
            self.value(
                refresh_path.key("min_interval"),
                format!(
                    "must be at least {}: it also limits how often an unknown `kid` can make \
                     portcullis fetch keys",
                    format_duration(MIN_REFRESH_INTERVAL_FLOOR)
                ),
            );
        }
        if let (Some(min), Some(max)) = (min, max)
            && max < min
        {
            self.value(
                refresh_path.key("max_interval"),
                format!(
                    "{} is shorter than `min_interval` ({})",
                    format_duration(max),
                    format_duration(min)
                ),
            );
        } else if let Some(max) = max
            && max > MAX_REFRESH_INTERVAL_CEILING
        {
            self.value(
                refresh_path.key("max_interval"),
                format!(
                    "must be at most {}",
                    format_duration(MAX_REFRESH_INTERVAL_CEILING)
                ),
            );
        }
        if let Some(timeout) = timeout
            && !(MIN_FETCH_TIMEOUT..=MAX_FETCH_TIMEOUT).contains(&timeout)
        {
            self.value(
                refresh_path.key("timeout"),
                format!(
                    "must be between {} and {}",
                    format_duration(MIN_FETCH_TIMEOUT),
                    format_duration(MAX_FETCH_TIMEOUT)
                ),
            );
        }
        if !(MIN_DOCUMENT_BYTES..=MAX_DOCUMENT_BYTES).contains(&max_document_bytes) {
            self.value(
                refresh_path.key("max_document_bytes"),
                format!("must be between {MIN_DOCUMENT_BYTES} and {MAX_DOCUMENT_BYTES}"),
            );
        }
        if self.problems.len() > before {
            return None;
        }
        Some(RefreshPolicy {
            min_refresh_interval: min?,
            max_refresh_interval: max?,
            fetch_timeout: timeout?,
            max_document_bytes: usize::try_from(max_document_bytes).ok()?,
            allow_insecure_http: raw.allow_insecure_http,
        })
    }

    fn unique_issuers(&mut self, issuers: &[(usize, RawIssuer)]) {
        let mut names: HashMap<&str, usize> = HashMap::new();
        let mut iss: HashMap<&str, usize> = HashMap::new();
        for (index, issuer) in issuers {
            let path = issuer_path(*index);
            if let Ok(name) = &issuer.name.0
                && let Some(first) = earlier_use(&mut names, &name.0, *index)
            {
                self.value(
                    path.key("name"),
                    format!(
                        "issuer name `{}` is already used by issuers[{first}]",
                        name.0
                    ),
                );
            }
            if let Ok(value) = &issuer.issuer.0
                && let Some(first) = earlier_use(&mut iss, &value.0, *index)
            {
                self.value(
                    path.key("issuer"),
                    format!(
                        "`{}` is already configured by issuers[{first}]: a token's `iss` \
                         must pick exactly one issuer",
                        value.0
                    ),
                );
            }
        }
    }

    fn limits(&mut self, raw: &raw::RawLimits) -> AuthnSettings {
        let defaults = AuthnSettings::default();
        let path = root().key("limits");
        let max_token_bytes = raw
            .max_token_bytes
            .unwrap_or(defaults.max_token_bytes as u64);
        if !(MIN_TOKEN_BYTES..=MAX_TOKEN_BYTES).contains(&max_token_bytes) {
            self.value(
                path.key("max_token_bytes"),
                format!("must be between {MIN_TOKEN_BYTES} and {MAX_TOKEN_BYTES}"),
            );
        }
        let token_cache_entries = raw
            .token_cache_entries
            .unwrap_or(defaults.token_cache_entries);
        if token_cache_entries > MAX_TOKEN_CACHE_ENTRIES {
            self.value(
                path.key("token_cache_entries"),
                format!("must be at most {MAX_TOKEN_CACHE_ENTRIES}"),
            );
        }
        AuthnSettings {
            max_token_bytes: usize::try_from(max_token_bytes).unwrap_or(usize::MAX),
            token_cache_entries,
            failed_attempts: self.failed_attempts(raw.failed_attempts.as_ref()),
        }
    }

    /// `telemetry.tracing`: each value checked where it is written; what is left out is the
    /// environment's or the default's, resolved at start.
    fn tracing(&mut self, raw: &raw::RawTracing) -> TracingConfig {
        let path = root().key("telemetry").key("tracing");
        let endpoint = raw
            .endpoint
            .as_ref()
            .and_then(|e| self.get(path.key("endpoint"), e))
            .map(|e| e.0.clone());
        let protocol = raw
            .protocol
            .as_ref()
            .and_then(|p| self.get(path.key("protocol"), p))
            .map(|p| p.0);
        let sampler = raw
            .sampler
            .as_ref()
            .and_then(|s| self.get(path.key("sampler"), s))
            .map(|s| s.0);
        let ratio = raw
            .ratio
            .as_ref()
            .and_then(|r| self.get(path.key("ratio"), r))
            .map(|r| r.0);
        for (key, _) in &raw.resource_attributes.0 {
            if key.trim().is_empty() {
                self.value(
                    path.key("resource_attributes"),
                    "attribute names must not be empty",
                );
            }
        }
        TracingConfig {
            endpoint,
            protocol,
            sampler,
            ratio,
            resource_attributes: raw.resource_attributes.0.clone(),
            include_subject: raw.include_subject.unwrap_or(false),
        }
    }

    /// `revocation:`: at least one source; the cap within bounds.
    fn revocation(
        &mut self,
        raw: &raw::RawRevocation,
        incomplete: bool,
    ) -> Option<RevocationConfig> {
        let path = root().key("revocation");
        let before = self.problems.len();
        let file = raw
            .file
            .as_ref()
            .and_then(|file| self.file(path.key("file"), file));
        // A section that could not be read is reported where it is written.
        if raw.file.is_none() && raw.http.is_none() && raw.redis.is_none() && !incomplete {
            self.value(
                path.clone(),
                "names no source: give `file` (the revocation file), `http` or `redis`",
            );
        }
        let http = raw.http.as_ref().and_then(|feed| {
            let feed_path = path.key("http");
            let url = fetch::checked_url(&feed.url, false)
                .map_err(|error| self.value(feed_path.key("url"), error.to_string()))
                .ok();
            let interval = match &feed.interval {
                None => Some(revocation::http::DEFAULT_INTERVAL),
                Some(interval) => self
                    .get(feed_path.key("interval"), interval)
                    .map(|d| d.0)
                    .filter(|d| {
                        let ok = *d >= Duration::from_secs(1);
                        if !ok {
                            self.value(feed_path.key("interval"), "must be at least 1s");
                        }
                        ok
                    }),
            };
            Some(FeedConfig {
                url: url?,
                interval: interval?,
            })
        });
        let redis = raw.redis.as_ref().and_then(|redis| {
            let url_path = path.key("redis").key("url");
            let tls = match url::Url::parse(&redis.url) {
                Ok(url) if url.scheme() == "redis" && url.host().is_some() => false,
                Ok(url) if url.scheme() == "rediss" && url.host().is_some() => true,
                // The URL is never echoed: it may hold a password.
                _ => {
                    self.value(
                        url_path,
                        "must be a URL like redis://[user:password@]host:port[/db] (rediss:// \
                         for TLS)",
                    );
                    return None;
                }
            };
            if redis.ca_file.is_some() && !tls {
                self.value(
                    path.key("redis").key("ca_file"),
                    "a CA file is for TLS: write the URL as rediss://",
                );
            }
            let name = |given: &Option<String>, default: &str, key: &str, ctx: &mut Self| {
                let value = given.clone().unwrap_or_else(|| default.to_owned());
                if value.is_empty() {
                    ctx.value(path.key("redis").key(key), "must not be empty");
                }
                value
            };
            let password_file = match &redis.password_file {
                None => None,
                Some(file) => Some(self.file(path.key("redis").key("password_file"), file)?),
            };
            let ca_file = match &redis.ca_file {
                None => None,
                Some(file) => Some(self.file(path.key("redis").key("ca_file"), file)?),
            };
            Some(RedisConfig {
                url: redis.url.clone(),
                ca_file,
                password_file,
                channel: name(
                    &redis.channel,
                    revocation::redis::DEFAULT_CHANNEL,
                    "channel",
                    self,
                ),
                key_prefix: name(
                    &redis.key_prefix,
                    revocation::redis::DEFAULT_KEY_PREFIX,
                    "key_prefix",
                    self,
                ),
            })
        });
        let max_entries = raw
            .max_entries
            .unwrap_or(revocation::DEFAULT_MAX_ENTRIES as u64);
        if !(1..=MAX_REVOCATION_ENTRIES).contains(&max_entries) {
            self.value(
                path.key("max_entries"),
                format!("must be between 1 and {MAX_REVOCATION_ENTRIES}"),
            );
        }
        (self.problems.len() == before).then(|| RevocationConfig {
            file,
            http,
            redis,
            max_entries: usize::try_from(max_entries).unwrap_or(usize::MAX),
            require_sync: raw.require_sync.unwrap_or(true),
        })
    }

    /// Off unless written: keyed on a shared address (a gateway, a NAT, a mesh) the limiter
    /// would let one client's failures refuse everyone's new logins.
    fn failed_attempts(&mut self, raw: Option<&raw::RawFailedAttempts>) -> Option<AttemptSettings> {
        let defaults = AttemptQuota::default();
        let limit = match raw {
            None | Some(raw::RawFailedAttempts::Off) => return None,
            Some(raw::RawFailedAttempts::Limit(limit)) => limit,
        };
        let path = root().key("limits").key("failed_attempts");
        let per_source = limit
            .per_source
            .unwrap_or(u64::from(defaults.per_source.get()));
        let per_source = match u32::try_from(per_source).ok().and_then(NonZeroU32::new) {
            Some(n) if u64::from(n.get()) <= MAX_FAILED_ATTEMPTS_PER_SOURCE => n,
            _ => {
                self.value(
                    path.key("per_source"),
                    format!(
                        "must be between 1 and {MAX_FAILED_ATTEMPTS_PER_SOURCE} (or write \
                         `failed_attempts: off`)"
                    ),
                );
                defaults.per_source
            }
        };
        let per = match &limit.per {
            None => defaults.per,
            Some(per) => match self.get(path.key("per"), per) {
                Some(per) => per.0,
                None => defaults.per,
            },
        };
        if !(MIN_FAILED_ATTEMPTS_PERIOD..=MAX_FAILED_ATTEMPTS_PERIOD).contains(&per) {
            self.value(
                path.key("per"),
                format!(
                    "must be between {} and {}",
                    format_duration(MIN_FAILED_ATTEMPTS_PERIOD),
                    format_duration(MAX_FAILED_ATTEMPTS_PERIOD)
                ),
            );
        }
        let client_address = limit
            .client_address
            .as_ref()
            .and_then(|raw| self.client_address(&path.key("client_address"), raw));
        Some(AttemptSettings {
            quota: AttemptQuota { per_source, per },
            client_address,
        })
    }

    fn client_address(
        &mut self,
        path: &YamlPath,
        raw: &raw::RawClientAddress,
    ) -> Option<ClientAddressHeader> {
        let name = self
            .get(path.key("header"), &raw.header)
            .map(|h| h.0.clone());
        let trusted_hops = u8::try_from(raw.trusted_hops)
            .ok()
            .and_then(NonZeroU8::new)
            .filter(|hops| hops.get() <= MAX_TRUSTED_HOPS);
        if trusted_hops.is_none() {
            self.value(
                path.key("trusted_hops"),
                format!(
                    "must be between 1 and {MAX_TRUSTED_HOPS}: the proxies that append to the \
                     header and are trusted, counting the Envoy beside portcullis"
                ),
            );
        }
        Some(ClientAddressHeader {
            name: name?,
            trusted_hops: trusted_hops?,
        })
    }

    fn route(&mut self, path: &YamlPath, raw: &RawRoute, callers: Callers) -> Option<Route> {
        let have_issuers = callers.any;
        let before = self.problems.len();
        let match_path = path.key("match");

        let name = self.get(path.key("name"), &raw.name).map(|n| n.0.clone());

        let exact = raw
            .matcher
            .path
            .as_ref()
            .map(|p| self.get(match_path.key("path"), p).map(|p| p.0.clone()));
        let prefix = raw.matcher.path_prefix.as_ref().map(|p| {
            self.get(match_path.key("path_prefix"), p)
                .map(|p| p.0.clone())
        });
        let path_match = match (exact, prefix) {
            (Some(_), Some(_)) => {
                self.value(
                    match_path.clone(),
                    "set either `path` or `path_prefix`, not both",
                );
                None
            }
            (Some(exact), None) => exact,
            (None, Some(prefix)) => prefix.map(PathMatch::Prefix),
            (None, None) => Some(PathMatch::Any),
        };

        let methods = raw.matcher.methods.as_ref().map(|methods| {
            let methods_path = match_path.key("methods");
            if methods.is_empty() {
                self.value(
                    methods_path.clone(),
                    "list at least one method, or leave `methods` out to match any",
                );
            }
            let mut valid = true;
            let mut seen: Vec<String> = Vec::new();
            for (index, method) in methods.iter().enumerate() {
                let Some(method) = self.get(methods_path.index(index), method) else {
                    valid = false;
                    continue;
                };
                if seen.contains(&method.0) {
                    self.value(
                        methods_path.index(index),
                        format!("`{}` is listed twice", method.0),
                    );
                    valid = false;
                } else {
                    seen.push(method.0.clone());
                }
            }
            valid.then_some(seen)
        });

        let host = raw
            .matcher
            .host
            .as_ref()
            .map(|host| self.get(match_path.key("host"), host).map(|h| h.0.clone()));

        let allow = raw
            .allow
            .as_ref()
            .map(|allow| self.get(path.key("allow"), allow).copied());
        let needs_issuers = |ctx: &mut Self, key: &str| {
            if !have_issuers {
                ctx.value(
                    path.key(key),
                    "this route needs a token, but no `issuers` are configured",
                );
            }
        };
        let policy = match (allow, &raw.require) {
            (Some(Some(AllowKind::Anonymous)), None) => Some(Policy::Anonymous),
            (Some(Some(AllowKind::Authenticated)), None) => {
                needs_issuers(self, "allow");
                Some(Policy::Require(Requirements::default()))
            }
            (Some(None), None) => None,
            (None, Some(require)) => {
                needs_issuers(self, "require");
                let step_up = [
                    ("mfa", require.mfa.is_some()),
                    ("acr", require.acr.is_some()),
                    ("max_auth_age", require.max_auth_age.is_some()),
                ];
                if callers.any && !callers.tokens {
                    for (key, _) in step_up.iter().filter(|(_, set)| *set) {
                        self.value(
                            path.key("require").key(key),
                            "step-up reads the token's `amr`, `acr` and `auth_time`, but no \
                             `issuers` are configured and API keys carry no user \
                             authentication: no caller could ever pass this route",
                        );
                    }
                }
                self.requirements(path, require)
            }
            (Some(_), Some(_)) => {
                self.value(path.clone(), "set either `allow` or `require`, not both");
                None
            }
            (None, None) => {
                self.value(
                    path.clone(),
                    "say who may use this route: `allow: anonymous`, `allow: authenticated` \
                     (any valid token) or `require: {scopes: [...]}` (there is no implicit allow)",
                );
                None
            }
        };

        let on_deny = match &raw.on_deny {
            None => Some(OnDeny::Forbidden),
            Some(on_deny) => self
                .get(path.key("on_deny"), on_deny)
                .map(|on_deny| match on_deny {
                    OnDenyName::Forbidden => OnDeny::Forbidden,
                    OnDenyName::NotFound => OnDeny::NotFound,
                }),
        };

        let mode = match &raw.mode {
            None => Some(self.default_mode),
            Some(mode) => self.mode(path.key("mode"), mode),
        };
        // A value that did not parse is reported as such, once.
        let on_deny_written = raw
            .on_deny
            .as_ref()
            .is_some_and(|on_deny| on_deny.0.is_ok());
        if on_deny_written && matches!(policy, Some(Policy::Anonymous)) {
            self.value(
                path.key("on_deny"),
                "an `allow: anonymous` route refuses nothing, so `on_deny` has no effect; leave \
                 it out (or require something of the caller)",
            );
        }
        if raw.mode.is_some() && matches!(policy, Some(Policy::Anonymous)) {
            self.value(
                path.key("mode"),
                "an `allow: anonymous` route refuses nothing, so it has no mode; leave `mode` out",
            );
        }

        if self.problems.len() > before {
            return None;
        }
        Some(Route {
            name: Arc::from(name?.as_str()),
            matcher: RouteMatch {
                methods: methods.map_or(Some(None), |m| m.map(Some))?,
                host: host.map_or(Some(None), |h| h.map(Some))?,
                path: path_match?,
            },
            policy: policy?,
            on_deny: on_deny?,
            mode: mode?,
        })
    }

    /// `mode: enforce | shadow`, of a route or the whole file.
    fn mode(&mut self, path: YamlPath, mode: &Checked<ModeName>) -> Option<Mode> {
        self.get(path, mode).map(|mode| match mode {
            ModeName::Enforce => Mode::Enforce,
            ModeName::Shadow => Mode::Shadow,
        })
    }

    /// `require` must demand something: an empty one (`require: {}`, `scopes: []`) would be a
    /// route open to any valid token that reads as if it were restricted, and is what a file
    /// cut short leaves behind. Any valid token is `allow: authenticated`.
    fn requirements(&mut self, path: &YamlPath, require: &RawRequire) -> Option<Policy> {
        let require_path = path.key("require");
        let rbac = self.rbac_requirements(&require_path, require);
        let scopes_path = require_path.key("scopes");
        let scopes = match &require.scopes {
            Some(scopes) => self.get_all(&scopes_path, scopes)?,
            None => Vec::new(),
        };
        let (roles, permissions) = rbac?;
        let step_up = self.step_up(&require_path, require)?;
        let any_scopes = self.any_scopes(&require_path, require)?;
        let hygiene = self.hygiene(&require_path, require)?;
        let when = match &require.when {
            None => None,
            Some(when) => Some(self.get(require_path.key("when"), when)?.0.clone()),
        };
        let introspect = require.introspect.unwrap_or(false);
        if introspect && !self.introspection_configured {
            self.value(
                require_path.key("introspect"),
                "`introspect: true` needs an `introspection` entry for the issuer of the \
                 route's tokens",
            );
            return None;
        }
        let demands_more = when.is_some()
            || introspect
            || !roles.is_empty()
            || !permissions.is_empty()
            || !step_up.is_empty()
            || !any_scopes.is_empty()
            || !hygiene.is_empty();
        if scopes.is_empty() && (require.scopes.is_some() || !demands_more) {
            let (at, what) = if require.scopes.is_some() {
                (scopes_path, "`scopes` lists no scope")
            } else {
                (require_path, "`require` names no requirement")
            };
            self.value(
                at,
                format!(
                    "{what}: list what a token must have, or write `allow: authenticated` (in \
                     place of `require`) for a route that any valid token may use"
                ),
            );
            return None;
        }
        Some(Policy::Require(Requirements {
            scopes: scopes.into_iter().map(|s| s.0.clone()).collect(),
            roles,
            permissions,
            grants: self.grants.clone().unwrap_or_default(),
            step_up,
            any_scopes,
            hygiene,
            when,
            introspect,
        }))
    }

    /// `introspection:`: each entry names a configured issuer (at most one entry per issuer),
    /// has exactly one endpoint source and one secret source, bounded TTLs, timeout and size
    /// cap; at most one entry takes opaque tokens (a token must never be sent to a provider
    /// that may not have issued it). `None` after recording why not.
    fn introspection(&mut self, raw: &RawConfig) -> Option<Vec<IntrospectionConfig>> {
        let before = self.problems.len();
        let mut entries = Vec::with_capacity(raw.introspection.len());
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut opaque_at: Option<usize> = None;
        for (index, entry) in &raw.introspection {
            let path = root().key("introspection").index(*index);
            let issuer = self
                .get(path.key("issuer"), &entry.issuer)
                .map(|n| n.0.clone());
            let issuer_config = issuer.as_ref().and_then(|name| {
                raw.issuers
                    .iter()
                    .find(|(_, raw_issuer)| raw_issuer.name.0.as_ref().is_ok_and(|n| &n.0 == name))
                    .map(|(_, raw_issuer)| raw_issuer)
            });
            if let Some(name) = &issuer {
                if issuer_config.is_none() && !raw.incomplete {
                    self.value(
                        path.key("issuer"),
                        format!("no entry of `issuers` is named `{name}`"),
                    );
                }
                if let Some(first) = seen.insert(name.clone(), *index) {
                    self.value(
                        path.key("issuer"),
                        format!(
                            "issuer `{name}` already has an introspection entry at \
                             introspection[{first}]"
                        ),
                    );
                }
            }
            let endpoint = match (&entry.endpoint, entry.discovery) {
                (Some(url), None | Some(false)) => {
                    self.get(path.key("endpoint"), url).and_then(|url| {
                        match check_fetch_url(&url.0, entry.allow_insecure_http) {
                            Ok(()) => Some(Endpoint::Url(url.0.clone())),
                            Err(message) => {
                                self.value(path.key("endpoint"), message);
                                None
                            }
                        }
                    })
                }
                (None, Some(true)) => {
                    let issuer_url = issuer_config.and_then(|i| i.issuer.0.as_ref().ok());
                    if let Some(url) = issuer_url
                        && let Err(message) = check_fetch_url(&url.0, entry.allow_insecure_http)
                    {
                        self.value(
                            path.key("discovery"),
                            format!("with `discovery: true` the issuer must be a URL: {message}"),
                        );
                    }
                    Some(Endpoint::Discovery)
                }
                (Some(_), Some(true)) => {
                    self.value(
                        path.key("discovery"),
                        "`endpoint` and `discovery: true` are both set: give exactly one",
                    );
                    None
                }
                (None, _) => {
                    self.value(
                        path.clone(),
                        "give the introspection `endpoint`, or `discovery: true` to read it from \
                         the issuer's discovery document",
                    );
                    None
                }
            };
            let client_id = self
                .get(path.key("client_id"), &entry.client_id)
                .map(|id| id.0.clone());
            let secret_source = match (&entry.client_secret_file, &entry.client_secret_env) {
                (Some(file), None) => self
                    .file(path.key("client_secret_file"), file)
                    .map(SecretSource::File),
                (None, Some(var)) => self
                    .get(path.key("client_secret_env"), var)
                    .map(|var| SecretSource::Env(var.0.clone())),
                (Some(_), Some(_)) => {
                    self.value(
                        path.key("client_secret_env"),
                        "`client_secret_file` and `client_secret_env` are both set: give exactly \
                         one",
                    );
                    None
                }
                (None, None) => {
                    self.value(
                        path.clone(),
                        "give the client secret's source: `client_secret_file` or \
                         `client_secret_env` (never the secret itself)",
                    );
                    None
                }
            };
            let auth_method = match &entry.auth_method {
                None => Some(ClientAuth::ClientSecretBasic),
                Some(method) => self.get(path.key("auth_method"), method).map(|m| m.0),
            };
            let cache_ttl = self.bounded_duration(
                path.key("cache_ttl"),
                entry.cache_ttl.as_ref(),
                introspection::DEFAULT_CACHE_TTL,
                (Duration::from_secs(1), Duration::from_secs(3600)),
            );
            let negative_cache_ttl = self.bounded_duration(
                path.key("negative_cache_ttl"),
                entry.negative_cache_ttl.as_ref(),
                introspection::DEFAULT_NEGATIVE_CACHE_TTL,
                (Duration::from_secs(1), Duration::from_secs(600)),
            );
            let timeout = self.bounded_duration(
                path.key("timeout"),
                entry.timeout.as_ref(),
                introspection::DEFAULT_TIMEOUT,
                (Duration::from_millis(50), Duration::from_secs(10)),
            );
            let max_response_bytes = match entry.max_response_bytes {
                None => Some(introspection::DEFAULT_MAX_RESPONSE_BYTES),
                Some(bytes) if (1024..=1024 * 1024).contains(&bytes) => usize::try_from(bytes).ok(),
                Some(bytes) => {
                    self.value(
                        path.key("max_response_bytes"),
                        format!("{bytes} is outside the allowed range 1024 to 1048576"),
                    );
                    None
                }
            };
            let subject = match &entry.subject {
                None => Some("sub".to_owned()),
                Some(member) => self.get(path.key("subject"), member).map(|m| m.0.clone()),
            };
            let roles = match &entry.roles {
                None => Some(None),
                Some(member) => self
                    .get(path.key("roles"), member)
                    .map(|m| Some(m.0.clone())),
            };
            let opaque_tokens = entry.opaque_tokens.unwrap_or(true);
            if opaque_tokens {
                if let Some(first) = opaque_at {
                    self.value(
                        path.key("opaque_tokens"),
                        format!(
                            "introspection[{first}] already takes opaque tokens: set \
                             `opaque_tokens: false` on all but one entry (a token must never be \
                             sent to a provider that may not have issued it)"
                        ),
                    );
                } else {
                    opaque_at = Some(*index);
                }
            }
            entries.push((|| {
                Some(IntrospectionConfig {
                    issuer: issuer?,
                    endpoint: endpoint?,
                    client_id: client_id?,
                    secret_source: secret_source?,
                    client_secret: ClientSecret::default(),
                    auth_method: auth_method?,
                    cache_ttl: cache_ttl?,
                    negative_cache_ttl: negative_cache_ttl?,
                    timeout: timeout?,
                    max_response_bytes: max_response_bytes?,
                    subject: subject?,
                    roles: roles?,
                    opaque_tokens,
                    allow_insecure_http: entry.allow_insecure_http,
                })
            })());
        }
        if self.problems.len() > before {
            return None;
        }
        entries.into_iter().collect()
    }

    /// A duration leaf within `(min, max)`, `default` when absent.
    fn bounded_duration(
        &mut self,
        path: YamlPath,
        value: Option<&Checked<HumanDuration>>,
        default: Duration,
        (min, max): (Duration, Duration),
    ) -> Option<Duration> {
        let Some(value) = value else {
            return Some(default);
        };
        let duration = self.get(path.clone(), value)?.0;
        if duration < min || duration > max {
            self.value(
                path,
                format!(
                    "{} is outside the allowed range {} to {}",
                    format_duration(duration),
                    format_duration(min),
                    format_duration(max)
                ),
            );
            return None;
        }
        Some(duration)
    }

    /// `roles:` resolved into one permission set per role; `None` after recording why not.
    fn roles(&mut self, raw: &RawConfig) -> Option<Arc<RoleGrants>> {
        let roles_path = root().key("roles");
        let mut definitions = Vec::with_capacity(raw.roles.len());
        let mut valid = !raw.roles_incomplete;
        for (name, role) in &raw.roles {
            let role_path = roles_path.key(name);
            if let Err(message) = raw::parse_role_name(name) {
                self.problems.push(Problem::key(role_path.clone(), message));
                valid = false;
            }
            let permissions_path = if role.long_form {
                role_path.key("permissions")
            } else {
                role_path.clone()
            };
            let permissions = self.get_all(&permissions_path, &role.permissions);
            let includes = self.get_all(&role_path.key("includes"), &role.includes);
            let (Some(permissions), Some(includes)) = (permissions, includes) else {
                valid = false;
                continue;
            };
            definitions.push(RoleDefinition {
                name: name.clone(),
                permissions: permissions.into_iter().map(|p| p.0.clone()).collect(),
                includes: includes.into_iter().map(|r| r.0.clone()).collect(),
            });
        }
        if !valid {
            return None;
        }
        match RoleGrants::resolve(&definitions) {
            Ok(grants) => Some(Arc::new(grants)),
            Err(errors) => {
                for error in errors {
                    let (role, include, message) = match error {
                        RoleError::UndefinedInclude { role, include } => {
                            let name = &definitions
                                .iter()
                                .find(|d| d.name == role)
                                .and_then(|d| d.includes.get(include))
                                .cloned()
                                .unwrap_or_default();
                            let message = format!("role `{name}` is not defined in `roles`");
                            (role, include, message)
                        }
                        RoleError::Cycle {
                            role,
                            include,
                            path,
                        } => (
                            role,
                            include,
                            format!("roles include each other in a cycle: {}", path.join(" → ")),
                        ),
                    };
                    self.value(
                        roles_path.key(&role).key("includes").index(include),
                        message,
                    );
                }
                None
            }
        }
    }

    /// `require.roles` (any of) and `require.permissions` (all of): each listed role must be
    /// defined in `roles:`, and each permission granted by some role there (a permission no
    /// role grants would deny everyone, and is most likely a typo).
    fn rbac_requirements(
        &mut self,
        require_path: &YamlPath,
        require: &RawRequire,
    ) -> Option<(Vec<String>, Vec<String>)> {
        let grants = self.grants.clone();
        let roles = self.listed(
            require_path,
            "roles",
            "role",
            require.roles.as_deref(),
            |name| match &grants {
                Some(grants) if !grants.is_defined(name) => {
                    Some(format!("role `{name}` is not defined in `roles`"))
                }
                _ => None,
            },
        );
        let permissions = self.listed(
            require_path,
            "permissions",
            "permission",
            require.permissions.as_deref(),
            |name| match &grants {
                Some(grants) if !grants.any_grants(name) => {
                    Some(format!("no role in `roles` grants the permission `{name}`"))
                }
                _ => None,
            },
        );
        Some((roles?, permissions?))
    }

    /// The names listed at `require.<key>` (none when absent), each checked by `problem`;
    /// `None` after recording what is wrong (an empty list included).
    fn listed<T: AsRef<str>>(
        &mut self,
        require_path: &YamlPath,
        key: &str,
        what: &str,
        list: Option<&[Checked<T>]>,
        problem: impl Fn(&str) -> Option<String>,
    ) -> Option<Vec<String>> {
        let Some(list) = list else {
            return Some(Vec::new());
        };
        let list_path = require_path.key(key);
        let names = self.get_all(&list_path, list)?;
        if names.is_empty() {
            self.value(list_path, format!("`{key}` lists no {what}"));
            return None;
        }
        let mut valid = true;
        for (index, name) in names.iter().enumerate() {
            if let Some(message) = problem(name.as_ref()) {
                self.value(list_path.index(index), message);
                valid = false;
            }
        }
        valid.then(|| names.iter().map(|name| name.as_ref().to_owned()).collect())
    }

    /// `require.content_types` and `require.idempotency_key`.
    fn hygiene(&mut self, require_path: &YamlPath, require: &RawRequire) -> Option<Hygiene> {
        let before = self.problems.len();
        if require.idempotency_key == Some(false) {
            self.value(
                require_path.key("idempotency_key"),
                "`idempotency_key: false` demands nothing: leave `idempotency_key` out",
            );
        }
        let content_types = match &require.content_types {
            None => Some(Vec::new()),
            Some(types) => {
                let at = require_path.key("content_types");
                if types.is_empty() {
                    self.value(
                        at.clone(),
                        "`content_types` lists no media type: list the accepted ones (e.g. \
                         `[application/json]`), or leave `content_types` out",
                    );
                }
                self.get_all(&at, types)
                    .map(|types| types.into_iter().map(|t| t.0.clone()).collect::<Vec<_>>())
            }
        };
        if self.problems.len() > before {
            return None;
        }
        Some(Hygiene {
            content_types: content_types?,
            idempotency_key: require.idempotency_key == Some(true),
        })
    }

    /// `require.any_scopes`: at least one of them; an empty list is an error (it would read as
    /// a restriction and demand nothing).
    fn any_scopes(&mut self, require_path: &YamlPath, require: &RawRequire) -> Option<Vec<String>> {
        let Some(any_scopes) = &require.any_scopes else {
            return Some(Vec::new());
        };
        let at = require_path.key("any_scopes");
        if any_scopes.is_empty() {
            self.value(
                at,
                "`any_scopes` lists no scope: list the scopes of which one must be granted, or \
                 leave `any_scopes` out",
            );
            return None;
        }
        let any_scopes = self.get_all(&at, any_scopes)?;
        Some(any_scopes.into_iter().map(|s| s.0.clone()).collect())
    }

    /// `require.mfa`, `require.acr` and `require.max_auth_age` (RFC 9470 step-up).
    fn step_up(
        &mut self,
        require_path: &YamlPath,
        require: &RawRequire,
    ) -> Option<StepUpRequirement> {
        let before = self.problems.len();
        if require.mfa == Some(false) {
            self.value(
                require_path.key("mfa"),
                "`mfa: false` demands nothing: leave `mfa` out",
            );
        }
        let acr = match &require.acr {
            None => Some(Vec::new()),
            Some(values) => {
                if values.is_empty() {
                    self.value(
                        require_path.key("acr"),
                        "`acr` lists no value: list the acceptable `acr` values, or leave \
                         `acr` out",
                    );
                }
                self.get_all(&require_path.key("acr"), values)
                    .map(|values| values.into_iter().map(|v| v.0.clone()).collect::<Vec<_>>())
            }
        };
        let max_auth_age = match &require.max_auth_age {
            None => Some(None),
            Some(age) => self
                .get(require_path.key("max_auth_age"), age)
                .map(|age| Some(age.0.as_secs())),
        };
        if self.problems.len() > before {
            return None;
        }
        let acr = acr?;
        Some(StepUpRequirement {
            mfa: require.mfa == Some(true),
            acr_values: (!acr.is_empty()).then(|| Arc::from(acr.join(" "))),
            acr,
            max_auth_age: max_auth_age?,
        })
    }

    fn unique_routes(&mut self, routes: &[(usize, RawRoute)]) {
        let mut names: HashMap<&str, usize> = HashMap::new();
        for (index, route) in routes {
            let Ok(name) = &route.name.0 else { continue };
            if let Some(first) = earlier_use(&mut names, &name.0, *index) {
                self.value(
                    route_path(*index).key("name"),
                    format!("route name `{}` is already used by routes[{first}]", name.0),
                );
            }
        }
    }

    /// First match wins, so a route that an earlier route always matches first never applies;
    /// the operator who wrote it believes it does (a stricter `/admin` route listed after a
    /// catch-all would silently not protect anything). Only routes that compiled take part.
    fn reachable(&mut self, routes: &[(usize, Option<Route>)]) {
        let compiled: Vec<(usize, &Route)> = routes
            .iter()
            .filter_map(|(index, route)| route.as_ref().map(|route| (*index, route)))
            .collect();
        for (position, (later_index, later)) in compiled.iter().enumerate() {
            let shadow = compiled[..position]
                .iter()
                .find(|(_, earlier)| covers(&earlier.matcher, &later.matcher));
            if let Some((earlier_index, earlier)) = shadow {
                self.value(
                    route_path(*later_index).key("match"),
                    format!(
                        "this route can never match: routes[{earlier_index}] (`{}`) comes first \
                         and matches every request it would",
                        earlier.name
                    ),
                );
            }
        }
    }
}

/// The index that first used `key`, when `key` was seen before; otherwise records `index` as
/// its first use.
fn earlier_use<'a>(
    seen: &mut HashMap<&'a str, usize>,
    key: &'a str,
    index: usize,
) -> Option<usize> {
    match seen.entry(key) {
        std::collections::hash_map::Entry::Occupied(first) => Some(*first.get()),
        std::collections::hash_map::Entry::Vacant(slot) => {
            slot.insert(index);
            None
        }
    }
}

/// Whether every request `later` matches is matched by `earlier` (conservative: `false` when
/// unsure).
fn covers(earlier: &RouteMatch, later: &RouteMatch) -> bool {
    let methods = match (&earlier.methods, &later.methods) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(earlier), Some(later)) => later.iter().all(|m| earlier.contains(m)),
    };
    let host = match (&earlier.host, &later.host) {
        (None, _) => true,
        (Some(earlier), Some(later)) => earlier == later,
        (Some(_), None) => false,
    };
    let path = match (&earlier.path, &later.path) {
        (PathMatch::Any, _) => true,
        (PathMatch::Prefix(prefix), PathMatch::Exact(path) | PathMatch::Prefix(path)) => {
            prefix_matches(prefix, path)
        }
        (PathMatch::Prefix(prefix), PathMatch::Any) => prefix == "/",
        (PathMatch::Prefix(prefix), PathMatch::Template(_)) => prefix == "/",
        (PathMatch::Exact(a), PathMatch::Exact(b)) => a == b,
        (PathMatch::Template(a), PathMatch::Template(b)) => a.source == b.source,
        (PathMatch::Template(template), PathMatch::Exact(path)) => template.matches(path).is_some(),
        _ => false,
    };
    methods && host && path
}

/// Key and discovery URLs: the fetcher's own rule ([`fetch::checked_url`]), so a configuration
/// is refused exactly when its fetch would be: HTTPS, or plain HTTP to a loopback host, or plain
/// HTTP anywhere when the operator opted in (anyone on the path could otherwise swap the keys);
/// never credentials or a fragment.
fn check_fetch_url(text: &str, allow_insecure_http: bool) -> Result<(), String> {
    use fetch::UrlError;
    match fetch::checked_url(text, allow_insecure_http) {
        Ok(_) => Ok(()),
        Err(UrlError::Parse(error)) => Err(format!("invalid URL `{text}`: {error}")),
        Err(UrlError::Credentials(_)) => Err("the URL must not contain credentials".to_owned()),
        Err(UrlError::Fragment(_)) => Err(format!("`{text}`: the URL must not contain a fragment")),
        Err(UrlError::NoHost(_)) => Err(format!("`{text}`: the URL has no host")),
        Err(UrlError::InsecureHttp(_)) => Err(format!(
            "`{text}` uses plain http to a non-loopback host: anyone on the path could swap \
             the keys; use https, or set `allow_insecure_http: true`"
        )),
        Err(UrlError::Scheme(_)) => {
            let scheme = text.split(':').next().unwrap_or_default();
            Err(format!(
                "`{text}`: unsupported scheme `{scheme}`, use https"
            ))
        }
    }
}
