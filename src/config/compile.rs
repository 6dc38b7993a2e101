//! Raw configuration → checked [`Config`]: defaults, bounds, and every rule that involves more
//! than one field, each failure recorded with its path (vector's `config/compiler.rs` is the
//! model: collect everything, then fail once).
//!
//! Security rules enforced here: an issuer has exactly one key source; `HS*` only with a
//! shared secret and a shared secret only with `HS*` (an HMAC key next to public keys is the
//! classic algorithm-confusion hole); key URLs are HTTPS unless loopback or explicitly
//! allowed; every route says `allow: anonymous` or `require` (no implicit allow); a route that
//! an earlier route always shadows is an error (the operator believes it applies).
//!
//! This module must never read file contents (it only checks that referenced files exist)
//! and never put a secret into a message.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::raw::{
    self, AllowKind, FilePath, OnDenyName, RawConfig, RawIssuer, RawRoute, RawServer,
    algorithm_name,
};
use super::source::YamlPath;
use super::{Config, Problem, Readiness, ResponseSettings, ServerConfig, TlsConfig};
use crate::authn::{Algorithm, AuthnSettings, ClaimPaths, IssuerConfig, KeySource, RefreshPolicy};
use crate::authz::routes::{PathMatch, RouteMatch};
use crate::authz::{OnDeny, Policy, Requirements, Route};

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

/// Compiles `raw`; `None` when anything was wrong (all of it recorded in `problems`).
/// Relative file paths resolve against `base_dir`.
pub(crate) fn compile(
    raw: RawConfig,
    base_dir: &Path,
    problems: &mut Vec<Problem>,
) -> Option<Config> {
    let mut ctx = Ctx { base_dir, problems };
    let server = ctx.server(&raw.server);
    let issuers: Vec<IssuerConfig> = raw
        .issuers
        .iter()
        .filter_map(|(index, issuer)| {
            ctx.issuer(&YamlPath::root().key("issuers").index(*index), issuer)
        })
        .collect();
    ctx.unique_issuers(&raw.issuers);
    let authn = ctx.limits(&raw.limits);
    let have_issuers = !raw.issuers.is_empty() || raw.incomplete;
    let routes: Vec<(usize, Route)> = raw
        .routes
        .iter()
        .filter_map(|(index, route)| {
            ctx.route(
                &YamlPath::root().key("routes").index(*index),
                route,
                have_issuers,
            )
            .map(|compiled| (*index, compiled))
        })
        .collect();
    ctx.unique_routes(&raw.routes);
    ctx.reachable(&routes);
    let response = ResponseSettings {
        strip_credentials: raw.response.strip_credentials.unwrap_or(true),
        no_route_status: raw.response.no_route_status.map_or(404, |s| s.0),
    };
    let readiness = Readiness {
        require_keys: raw.readiness.require_keys.unwrap_or(true),
    };
    if !ctx.problems.is_empty() || raw.incomplete {
        return None;
    }
    Some(Config {
        server,
        issuers,
        authn,
        routes: routes.into_iter().map(|(_, route)| route).collect(),
        response,
        readiness,
    })
}

struct Ctx<'a> {
    base_dir: &'a Path,
    problems: &'a mut Vec<Problem>,
}

impl Ctx<'_> {
    fn value(&mut self, path: YamlPath, message: impl Into<String>) {
        self.problems.push(Problem::value(path, message.into()));
    }

    /// Resolves `file` against the configuration's directory and checks that it exists.
    fn file(&mut self, path: YamlPath, file: &FilePath) -> PathBuf {
        let given = Path::new(&file.0);
        let resolved = if given.is_absolute() {
            given.to_owned()
        } else {
            self.base_dir.join(given)
        };
        if !resolved.is_file() {
            self.value(
                path,
                format!("`{}` does not exist or is not a file", resolved.display()),
            );
        }
        resolved
    }

    fn server(&mut self, raw: &RawServer) -> ServerConfig {
        let path = YamlPath::root().key("server");
        let grpc = raw.grpc_listen.0;
        let admin = raw.admin_listen.0;
        if admin == grpc {
            self.value(
                path.key("admin_listen"),
                format!("`{admin}` is also `grpc_listen`; the listeners need distinct addresses"),
            );
        }
        if let Some(http) = &raw.http_listen
            && (http.0 == grpc || http.0 == admin)
        {
            self.value(
                path.key("http_listen"),
                format!("`{}` is already used by another listener", http.0),
            );
        }
        let tls = raw.tls.as_ref().map(|tls| {
            let tls_path = path.key("tls");
            TlsConfig {
                cert_file: self.file(tls_path.key("cert_file"), &tls.cert_file),
                key_file: self.file(tls_path.key("key_file"), &tls.key_file),
                client_ca_file: tls
                    .client_ca_file
                    .as_ref()
                    .map(|ca| self.file(tls_path.key("client_ca_file"), ca)),
            }
        });
        ServerConfig {
            grpc_listen: grpc,
            http_listen: raw.http_listen.as_ref().map(|a| a.0),
            admin_listen: admin,
            tls,
        }
    }

    fn issuer(&mut self, path: &YamlPath, raw: &RawIssuer) -> Option<IssuerConfig> {
        let before = self.problems.len();

        if raw.audiences.is_empty() {
            self.value(
                path.key("audiences"),
                "list at least one audience: a token for another API must not be accepted",
            );
        }

        let source = self.key_source(path, raw);
        self.algorithms(path, raw);

        let clock_skew = raw.clock_skew.as_ref().map_or(DEFAULT_CLOCK_SKEW, |d| d.0);
        if clock_skew > MAX_CLOCK_SKEW {
            self.value(
                path.key("clock_skew"),
                format!(
                    "{} is more than the maximum of {}",
                    humantime::format_duration(clock_skew),
                    humantime::format_duration(MAX_CLOCK_SKEW)
                ),
            );
        }

        if raw.max_lifetime.as_ref().is_some_and(|d| d.0.is_zero()) {
            self.value(path.key("max_lifetime"), "must be longer than zero");
        }

        if raw.types.as_ref().is_some_and(Vec::is_empty) {
            self.value(
                path.key("types"),
                "list at least one accepted `typ` (e.g. `at+jwt`), or leave `types` out to accept any",
            );
        }

        let refresh = self.refresh(path, raw);

        let mut claim_headers: Vec<(String, String)> = Vec::new();
        for (claim, header) in &raw.claim_headers.0 {
            if let Some((other, _)) = claim_headers.iter().find(|(_, h)| *h == header.0) {
                self.value(
                    path.key("claim_headers").key(&claim.0),
                    format!("header `{}` is already set from claim `{other}`", header.0),
                );
            }
            claim_headers.push((claim.0.clone(), header.0.clone()));
        }

        let claims = ClaimPaths {
            subject: raw
                .claims
                .subject
                .as_ref()
                .map_or_else(|| ClaimPaths::default().subject, |c| c.0.clone()),
            scopes: raw.claims.scopes.as_ref().map(|c| c.0.clone()),
            roles: raw
                .claims
                .roles
                .as_ref()
                .map_or_else(|| ClaimPaths::default().roles, |c| Some(c.0.clone())),
        };

        if self.problems.len() > before {
            return None;
        }
        Some(IssuerConfig {
            name: raw.name.0.clone(),
            issuer: raw.issuer.0.clone(),
            audiences: raw.audiences.iter().map(|a| a.0.clone()).collect(),
            algorithms: raw.algorithms.iter().map(|a| a.0).collect(),
            clock_skew,
            claims,
            allowed_types: raw
                .types
                .as_ref()
                .map(|types| types.iter().map(|t| t.0.clone()).collect()),
            max_lifetime: raw.max_lifetime.as_ref().map(|d| d.0),
            source: source?,
            refresh,
            claim_headers,
        })
    }

    fn key_source(&mut self, path: &YamlPath, raw: &RawIssuer) -> Option<KeySource> {
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
        match given.as_slice() {
            [] => {
                self.value(
                    path.clone(),
                    "no key source: set exactly one of `jwks_uri`, `discovery: true`, \
                     `jwks_file` or `shared_secret_file`",
                );
                None
            }
            [_] => {
                if let Some(uri) = &raw.jwks_uri {
                    if let Err(message) = check_fetch_url(&uri.0, raw.allow_insecure_http) {
                        self.value(path.key("jwks_uri"), message);
                    }
                    Some(KeySource::JwksUri(uri.0.clone()))
                } else if raw.discovery == Some(true) {
                    // Discovery fetches `{issuer}/.well-known/openid-configuration`.
                    if let Err(message) = check_fetch_url(&raw.issuer.0, raw.allow_insecure_http) {
                        self.value(
                            path.key("issuer"),
                            format!("with `discovery: true` the issuer must be a URL: {message}"),
                        );
                    }
                    Some(KeySource::Discovery)
                } else if let Some(file) = &raw.jwks_file {
                    Some(KeySource::JwksFile(self.file(path.key("jwks_file"), file)))
                } else {
                    raw.shared_secret_file.as_ref().map(|file| {
                        KeySource::SharedSecretFile(self.file(path.key("shared_secret_file"), file))
                    })
                }
            }
            several => {
                let listed = several
                    .iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(" and ");
                self.value(
                    path.clone(),
                    format!("{listed} are all set: an issuer has exactly one key source"),
                );
                None
            }
        }
    }

    fn algorithms(&mut self, path: &YamlPath, raw: &RawIssuer) {
        let algorithms_path = path.key("algorithms");
        if raw.algorithms.is_empty() {
            self.value(
                algorithms_path.clone(),
                "list the accepted algorithms (e.g. `[RS256]`); there is no default",
            );
        }
        let shared_secret = raw.shared_secret_file.is_some();
        let mut seen: Vec<Algorithm> = Vec::new();
        for (index, algorithm) in raw.algorithms.iter().enumerate() {
            let algorithm = algorithm.0;
            let name = algorithm_name(algorithm);
            let item = algorithms_path.index(index);
            if seen.contains(&algorithm) {
                self.value(item.clone(), format!("`{name}` is listed twice"));
            }
            seen.push(algorithm);
            let hmac = is_hmac(algorithm);
            if hmac && !shared_secret {
                self.value(
                    item,
                    format!(
                        "`{name}` is an HMAC algorithm: it is only allowed with \
                         `shared_secret_file`, never with public keys (algorithm confusion)"
                    ),
                );
            } else if !hmac && shared_secret {
                self.value(
                    item,
                    format!(
                        "`{name}` needs a public key: with `shared_secret_file` only HS256, \
                         HS384 and HS512 are allowed"
                    ),
                );
            }
        }
    }

    fn refresh(&mut self, path: &YamlPath, raw: &RawIssuer) -> RefreshPolicy {
        let defaults = RefreshPolicy::default();
        let refresh_path = path.key("refresh");
        let min = raw
            .refresh
            .min_interval
            .as_ref()
            .map_or(defaults.min_refresh_interval, |d| d.0);
        let max = raw
            .refresh
            .max_interval
            .as_ref()
            .map_or(defaults.max_refresh_interval, |d| d.0);
        let timeout = raw
            .refresh
            .timeout
            .as_ref()
            .map_or(defaults.fetch_timeout, |d| d.0);
        let max_document_bytes = raw
            .refresh
            .max_document_bytes
            .unwrap_or(defaults.max_document_bytes as u64);

        if min < MIN_REFRESH_INTERVAL_FLOOR {
            self.value(
                refresh_path.key("min_interval"),
                format!(
                    "must be at least {}: it also limits how often an unknown `kid` can make \
                     portcullis fetch keys",
                    humantime::format_duration(MIN_REFRESH_INTERVAL_FLOOR)
                ),
            );
        }
        if max < min {
            self.value(
                refresh_path.key("max_interval"),
                format!(
                    "{} is shorter than `min_interval` ({})",
                    humantime::format_duration(max),
                    humantime::format_duration(min)
                ),
            );
        } else if max > MAX_REFRESH_INTERVAL_CEILING {
            self.value(
                refresh_path.key("max_interval"),
                format!(
                    "must be at most {}",
                    humantime::format_duration(MAX_REFRESH_INTERVAL_CEILING)
                ),
            );
        }
        if !(MIN_FETCH_TIMEOUT..=MAX_FETCH_TIMEOUT).contains(&timeout) {
            self.value(
                refresh_path.key("timeout"),
                format!(
                    "must be between {} and {}",
                    humantime::format_duration(MIN_FETCH_TIMEOUT),
                    humantime::format_duration(MAX_FETCH_TIMEOUT)
                ),
            );
        }
        if !(MIN_DOCUMENT_BYTES..=MAX_DOCUMENT_BYTES).contains(&max_document_bytes) {
            self.value(
                refresh_path.key("max_document_bytes"),
                format!("must be between {MIN_DOCUMENT_BYTES} and {MAX_DOCUMENT_BYTES}"),
            );
        }
        RefreshPolicy {
            min_refresh_interval: min,
            max_refresh_interval: max,
            fetch_timeout: timeout,
            max_document_bytes: usize::try_from(max_document_bytes).unwrap_or(usize::MAX),
            allow_insecure_http: raw.allow_insecure_http,
        }
    }

    fn unique_issuers(&mut self, issuers: &[(usize, RawIssuer)]) {
        let mut names: HashMap<&str, usize> = HashMap::new();
        let mut iss: HashMap<&str, usize> = HashMap::new();
        for (index, issuer) in issuers {
            let path = YamlPath::root().key("issuers").index(*index);
            if let Some(&first) = names.get(issuer.name.0.as_str()) {
                self.value(
                    path.key("name"),
                    format!(
                        "issuer name `{}` is already used by issuers[{first}]",
                        issuer.name.0
                    ),
                );
            } else {
                names.insert(&issuer.name.0, *index);
            }
            if let Some(&first) = iss.get(issuer.issuer.0.as_str()) {
                self.value(
                    path.key("issuer"),
                    format!(
                        "`{}` is already configured by issuers[{first}]: a token's `iss` must pick \
                         exactly one issuer",
                        issuer.issuer.0
                    ),
                );
            } else {
                iss.insert(&issuer.issuer.0, *index);
            }
        }
    }

    fn limits(&mut self, raw: &raw::RawLimits) -> AuthnSettings {
        let defaults = AuthnSettings::default();
        let path = YamlPath::root().key("limits");
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
        }
    }

    fn route(&mut self, path: &YamlPath, raw: &RawRoute, have_issuers: bool) -> Option<Route> {
        let before = self.problems.len();
        let match_path = path.key("match");

        let path_match = match (&raw.matcher.path, &raw.matcher.path_prefix) {
            (Some(_), Some(_)) => {
                self.value(
                    match_path.clone(),
                    "set either `path` or `path_prefix`, not both",
                );
                PathMatch::Any
            }
            (Some(exact), None) => exact.0.clone(),
            (None, Some(prefix)) => PathMatch::Prefix(prefix.0.clone()),
            (None, None) => PathMatch::Any,
        };

        let methods = raw.matcher.methods.as_ref().map(|methods| {
            if methods.is_empty() {
                self.value(
                    match_path.key("methods"),
                    "list at least one method, or leave `methods` out to match any",
                );
            }
            let mut seen: Vec<String> = Vec::new();
            for (index, method) in methods.iter().enumerate() {
                if seen.contains(&method.0) {
                    self.value(
                        match_path.key("methods").index(index),
                        format!("`{}` is listed twice", method.0),
                    );
                } else {
                    seen.push(method.0.clone());
                }
            }
            seen
        });

        let policy = match (&raw.allow, &raw.require) {
            (Some(AllowKind::Anonymous), None) => Some(Policy::Anonymous),
            (None, Some(require)) => {
                if !have_issuers {
                    self.value(
                        path.key("require"),
                        "this route needs a token, but no `issuers` are configured",
                    );
                }
                Some(Policy::Require(Requirements {
                    scopes: require.scopes.iter().map(|s| s.0.clone()).collect(),
                }))
            }
            (Some(_), Some(_)) => {
                self.value(
                    path.clone(),
                    "set either `allow: anonymous` or `require`, not both",
                );
                None
            }
            (None, None) => {
                self.value(
                    path.clone(),
                    "say who may use this route: `allow: anonymous` or `require: {scopes: [...]}` \
                     (there is no implicit allow)",
                );
                None
            }
        };

        let on_deny = match raw.on_deny {
            None | Some(OnDenyName::Forbidden) => OnDeny::Forbidden,
            Some(OnDenyName::NotFound) => OnDeny::NotFound,
        };

        if self.problems.len() > before {
            return None;
        }
        Some(Route {
            name: Arc::from(raw.name.0.as_str()),
            matcher: RouteMatch {
                methods,
                host: raw.matcher.host.as_ref().map(|h| h.0.clone()),
                path: path_match,
            },
            policy: policy?,
            on_deny,
        })
    }

    fn unique_routes(&mut self, routes: &[(usize, RawRoute)]) {
        let mut names: HashMap<&str, usize> = HashMap::new();
        for (index, route) in routes {
            if let Some(&first) = names.get(route.name.0.as_str()) {
                self.value(
                    YamlPath::root().key("routes").index(*index).key("name"),
                    format!(
                        "route name `{}` is already used by routes[{first}]",
                        route.name.0
                    ),
                );
            } else {
                names.insert(&route.name.0, *index);
            }
        }
    }

    /// First match wins, so a route that an earlier route always matches first never applies;
    /// the operator who wrote it believes it does (a stricter `/admin` route listed after a
    /// catch-all would silently not protect anything).
    fn reachable(&mut self, routes: &[(usize, Route)]) {
        for (later_position, (later_index, later)) in routes.iter().enumerate() {
            let shadow = routes[..later_position]
                .iter()
                .find(|(_, earlier)| covers(&earlier.matcher, &later.matcher));
            if let Some((earlier_index, earlier)) = shadow {
                self.value(
                    YamlPath::root()
                        .key("routes")
                        .index(*later_index)
                        .key("match"),
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

fn is_hmac(algorithm: Algorithm) -> bool {
    matches!(
        algorithm,
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
    )
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
            PathMatch::Prefix(prefix.clone()).matches(path).is_some()
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

/// Key and discovery URLs: HTTPS, or plain HTTP to a loopback host, or plain HTTP anywhere
/// when the operator opted in (anyone on the path could otherwise swap the keys).
fn check_fetch_url(text: &str, allow_insecure_http: bool) -> Result<(), String> {
    let url =
        reqwest::Url::parse(text).map_err(|error| format!("invalid URL `{text}`: {error}"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err("the URL must not contain credentials".to_owned());
    }
    if url.fragment().is_some() {
        return Err(format!("`{text}`: the URL must not contain a fragment"));
    }
    let Some(host) = url.host_str() else {
        return Err(format!("`{text}`: the URL has no host"));
    };
    let host = host.to_owned();
    match url.scheme() {
        "https" => Ok(()),
        "http" if allow_insecure_http || is_loopback(&host) => Ok(()),
        "http" => Err(format!(
            "`{text}` uses plain http to a non-loopback host: anyone on the path could swap \
             the keys; use https, or set `allow_insecure_http: true`"
        )),
        other => Err(format!("`{text}`: unsupported scheme `{other}`, use https")),
    }
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}
