//! The serde types of `portcullis.yaml`, exactly as written, and their deserialization from a
//! `serde_yaml_ng::Value` with every error collected.
//!
//! Each value that has a syntax of its own (durations, algorithm names, header names, path
//! templates, listen addresses) is a newtype that parses while deserializing (parse, don't
//! validate). It is wrapped in [`Checked`], which keeps a parse failure instead of aborting the
//! item, so `compile` reports it at its exact path and still checks the rest of the item.
//! Structural mistakes (unknown keys, missing keys, a string where a list belongs) fail
//! deserialization itself and are collected by `deserialize_collecting`. Rules that involve
//! several fields (exactly one key source, HS* only with a shared secret, unique names) live
//! in `compile`.
//!
//! Keys design.md describes but this version does not implement are refused with "not
//! supported in this version", never silently ignored: an operator who writes
//! `require: {mfa: true}` must not get a route that does not demand MFA.
//!
//! A null is never a value: [`null_values`] refuses every one, whatever the key, before the
//! types below see it (serde would read it as absent, empty or default).
//!
//! This module must never accept an unknown key and never read files.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, DeserializeOwned, Deserializer, MapAccess, Visitor};
use serde_yaml_ng::Value;

use super::Problem;
use super::source::{Anchor, Segment, YamlPath};
use super::{OtlpProtocol, SamplerKind};
use crate::authn::Algorithm;
use crate::authz::condition::Condition;
use crate::authz::path::{normalize, normalize_authority};
use crate::authz::routes::{PathMatch, PathTemplate};

/// Message of every key this version refuses on purpose.
pub const UNSUPPORTED: &str = "not supported in this version";

/// Most errors reported for one list item or section before giving up on it.
const MAX_PROBLEMS_PER_ITEM: usize = 16;

// ---------------------------------------------------------------------------------------------
// The document

/// Top-level keys this version understands.
pub const TOP_LEVEL_KEYS: &[&str] = &[
    "server",
    "issuers",
    "limits",
    "response",
    "readiness",
    "routes",
    "roles",
    "mode",
    "api_keys",
    "introspection",
    "telemetry",
    "revocation",
];

/// Top-level keys design.md describes that this version refuses.
pub const UNSUPPORTED_TOP_LEVEL_KEYS: &[&str] = &[];

/// The whole file. List items keep their position in the file, because items that fail to
/// deserialize are left out and paths must still name the right index.
#[derive(Debug, Default)]
pub struct RawConfig {
    pub server: RawServer,
    pub issuers: Vec<(usize, RawIssuer)>,
    pub limits: RawLimits,
    pub response: RawResponse,
    pub readiness: RawReadiness,
    pub telemetry: RawTelemetry,
    pub routes: Vec<(usize, RawRoute)>,
    /// `revocation:`; `None` when absent (no revocation check at all).
    pub revocation: Option<RawRevocation>,
    /// `roles:`, in the file's order, by name.
    pub roles: Vec<(String, RawRole)>,
    /// `mode:`, every route's default `mode`.
    pub mode: Option<Checked<ModeName>>,
    /// The `roles` section had problems: some role may be missing, so checks that a route's
    /// role or permission is defined are skipped.
    pub roles_incomplete: bool,
    /// `api_keys:` (the keys file is read once the configuration is valid).
    pub api_keys: Option<super::keys_file::RawApiKeys>,
    /// `introspection:`, RFC 7662 endpoints by issuer.
    pub introspection: Vec<(usize, RawIntrospection)>,
    /// Some section or item could not be deserialized (its problems are already recorded);
    /// checks that need the complete picture are skipped.
    pub incomplete: bool,
}

impl RawConfig {
    /// Deserializes the document root, recording every problem in `problems`.
    pub(crate) fn from_value(root: Value, problems: &mut Vec<Problem>) -> Self {
        let mut raw = Self::default();
        let root_path = YamlPath::root();
        let mapping = match root {
            // An empty file is far more likely a truncated write than a wish to deny everything.
            Value::Null => {
                problems.push(Problem::value(
                    root_path,
                    "the configuration is empty".to_owned(),
                ));
                raw.incomplete = true;
                return raw;
            }
            Value::Mapping(mapping) => mapping,
            other => {
                problems.push(Problem::value(
                    root_path,
                    format!(
                        "the configuration must be a mapping of top-level keys, found {}",
                        describe(&other)
                    ),
                ));
                raw.incomplete = true;
                return raw;
            }
        };
        for (key, value) in mapping {
            let Value::String(key) = key else {
                problems.push(Problem::value(
                    root_path.clone(),
                    format!("top-level keys must be strings, found {}", describe(&key)),
                ));
                raw.incomplete = true;
                continue;
            };
            let path = root_path.key(&key);
            let before = problems.len();
            match key.as_str() {
                "server" => raw.server = section(value, &path, problems),
                "limits" => raw.limits = section(value, &path, problems),
                "response" => raw.response = section(value, &path, problems),
                "readiness" => raw.readiness = section(value, &path, problems),
                "api_keys" => raw.api_keys = section(value, &path, problems),
                "telemetry" => raw.telemetry = section(value, &path, problems),
                "revocation" => raw.revocation = Some(section(value, &path, problems)),
                "issuers" => raw.issuers = list(value, &path, problems),
                "routes" => raw.routes = list(value, &path, problems),
                "introspection" => raw.introspection = list(value, &path, problems),
                "mode" => raw.mode = section(value, &path, problems),
                "roles" => {
                    raw.roles = roles(value, &path, problems);
                    raw.roles_incomplete = problems.len() > before;
                }
                unsupported if UNSUPPORTED_TOP_LEVEL_KEYS.contains(&unsupported) => {
                    problems.push(Problem::key(path, UNSUPPORTED.to_owned()));
                }
                unknown => problems.push(Problem::key(
                    path,
                    format!(
                        "unknown field `{unknown}`, expected one of {}",
                        TOP_LEVEL_KEYS
                            .iter()
                            .map(|k| format!("`{k}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )),
            }
            if problems.len() > before {
                raw.incomplete = true;
            }
        }
        raw
    }
}

/// `roles:`: each role name maps to a list of permissions, or to the long form
/// `{permissions: [...], includes: [...]}`. A role that cannot be read is left out (its
/// problems recorded).
fn roles(value: Value, path: &YamlPath, problems: &mut Vec<Problem>) -> Vec<(String, RawRole)> {
    let mapping = match value {
        Value::Null => return Vec::new(),
        Value::Mapping(mapping) => mapping,
        other => {
            problems.push(Problem::value(
                path.clone(),
                format!(
                    "expected a mapping of role names to permissions, found {}",
                    describe(&other)
                ),
            ));
            return Vec::new();
        }
    };
    let mut roles = Vec::with_capacity(mapping.len());
    for (name, definition) in mapping {
        let Value::String(name) = name else {
            problems.push(Problem::value(
                path.clone(),
                format!("role names must be strings, found {}", describe(&name)),
            ));
            continue;
        };
        let role_path = path.key(&name);
        let role = match definition {
            // Refused by `null_values`; kept so that routes naming it are not also reported.
            Value::Null => Some(RawRole::default()),
            Value::Sequence(_) => {
                deserialize_collecting(definition, &role_path, problems).map(|permissions| {
                    RawRole {
                        permissions,
                        includes: Vec::new(),
                        long_form: false,
                    }
                })
            }
            Value::Mapping(_) => deserialize_collecting::<RawRoleForm>(
                definition, &role_path, problems,
            )
            .map(|form| RawRole {
                permissions: form.permissions.unwrap_or_default(),
                includes: form.includes.unwrap_or_default(),
                long_form: true,
            }),
            other => {
                problems.push(Problem::value(
                    role_path,
                    format!(
                        "a role is a list of permissions or `{{permissions: [...], includes: \
                         [...]}}`, found {}",
                        describe(&other)
                    ),
                ));
                None
            }
        };
        if let Some(role) = role {
            roles.push((name, role));
        }
    }
    roles
}

/// Message of a null value, with a hint where one helps.
fn null_message(path: &YamlPath) -> String {
    let mut message = "null is not allowed: give a value or leave the key out (a key with \
                       nothing after it is often a file cut short)"
        .to_owned();
    let in_require = path
        .0
        .iter()
        .any(|segment| matches!(segment, Segment::Key(key) if key == "require"));
    if in_require {
        message.push_str(
            "; a route that any valid token may use says `allow: authenticated`, one that needs \
             scopes says `require: {scopes: [...]}`",
        );
    }
    message
}

/// Every null value below the document root (a key with nothing after it, `~`, `null`, an
/// empty list item), each as a problem at its path.
///
/// serde reads an explicit null as "absent" (`Option`), as an empty list or as an empty
/// mapping, so a file cut off after `scopes:` would load as a route open to any valid token.
/// A null never means anything in this schema: it is refused here, once, for every key,
/// including keys added later.
pub(crate) fn null_values(root: &Value) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut pending = vec![(YamlPath::root(), root)];
    while let Some((path, value)) = pending.pop() {
        match value {
            Value::Mapping(mapping) => {
                for (key, child) in mapping {
                    // Non-string keys are reported by deserialization.
                    let Value::String(key) = key else { continue };
                    let child_path = path.key(key);
                    if child.is_null() {
                        problems.push(Problem::key(child_path.clone(), null_message(&child_path)));
                    } else {
                        pending.push((child_path, child));
                    }
                }
            }
            Value::Sequence(items) => {
                for (index, child) in items.iter().enumerate() {
                    let child_path = path.index(index);
                    if child.is_null() {
                        problems.push(Problem::value(
                            child_path.clone(),
                            null_message(&child_path),
                        ));
                    } else {
                        pending.push((child_path, child));
                    }
                }
            }
            Value::Tagged(tagged) => pending.push((path, &tagged.value)),
            Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => {}
        }
    }
    problems
}

/// A mapping section; a `null` (refused by [`null_values`]) leaves the defaults, so the rest
/// of the file is still checked.
fn section<T: DeserializeOwned + Default>(
    value: Value,
    path: &YamlPath,
    problems: &mut Vec<Problem>,
) -> T {
    if value.is_null() {
        return T::default();
    }
    deserialize_collecting(value, path, problems).unwrap_or_default()
}

/// A list section; a `null` (refused by [`null_values`]) is left empty. Each item is
/// deserialized on its own, so one bad item does not hide the errors of the next.
pub(super) fn list<T: DeserializeOwned>(
    value: Value,
    path: &YamlPath,
    problems: &mut Vec<Problem>,
) -> Vec<(usize, T)> {
    let items = match value {
        Value::Null => return Vec::new(),
        Value::Sequence(items) => items,
        other => {
            problems.push(Problem::value(
                path.clone(),
                format!("expected a list, found {}", describe(&other)),
            ));
            return Vec::new();
        }
    };
    items
        .into_iter()
        .enumerate()
        .filter_map(|(index, item)| {
            deserialize_collecting(item, &path.index(index), problems).map(|parsed| (index, parsed))
        })
        .collect()
}

/// Deserializes one item, collecting up to [`MAX_PROBLEMS_PER_ITEM`] errors: after each error
/// the offending key is removed and deserialization retried, so an item with a typo in one
/// key and a wrong type in another reports both. Values with a syntax of their own are
/// [`Checked`] and never fail here; what fails here is structure (unknown keys, missing keys,
/// a string where a list belongs).
///
/// `Some` when the item parsed once unknown or unsupported keys were set aside (their errors
/// are recorded; the rest of the item can still be checked), `None` when a known key had to
/// go (checking the rest would report consequences of the removal, not the user's mistakes).
fn deserialize_collecting<T: DeserializeOwned>(
    mut value: Value,
    path: &YamlPath,
    problems: &mut Vec<Problem>,
) -> Option<T> {
    let mut removed: Vec<YamlPath> = Vec::new();
    let mut removed_known_key = false;
    for _ in 0..MAX_PROBLEMS_PER_ITEM {
        let error = match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(parsed) => return (!removed_known_key).then_some(parsed),
            Err(error) => error,
        };
        let relative = convert_path(error.path());
        let message = error.inner().to_string();
        // Removing a required key to look further makes serde complain that it is missing:
        // that complaint is ours, not the user's.
        let is_artifact = removed.iter().any(|gone| {
            gone.parent().as_ref() == Some(&relative)
                && gone
                    .last_key()
                    .is_some_and(|key| message == format!("missing field `{key}`"))
        });
        if is_artifact {
            return None;
        }
        let misplaced_key = message.starts_with("unknown field")
            || message == UNSUPPORTED
            || message == INLINE_SECRET;
        problems.push(Problem {
            path: path.join(&relative),
            anchor: if misplaced_key {
                Anchor::Key
            } else {
                Anchor::Value
            },
            message,
        });
        let gone = remove_deepest_key(&mut value, &relative)?;
        // Only a key whose own path failed is "misplaced"; an error deeper inside a known key
        // removes that known key.
        removed_known_key |= !(misplaced_key && gone == relative);
        removed.push(gone);
    }
    None
}

fn convert_path(path: &serde_path_to_error::Path) -> YamlPath {
    YamlPath(
        path.iter()
            .filter_map(|segment| match segment {
                serde_path_to_error::Segment::Seq { index } => Some(Segment::Index(*index)),
                serde_path_to_error::Segment::Map { key } => Some(Segment::Key(key.clone())),
                serde_path_to_error::Segment::Enum { .. } => None,
                serde_path_to_error::Segment::Unknown => Some(Segment::Key("?".to_owned())),
            })
            .collect(),
    )
}

/// Removes the deepest mapping key on `path` from `value`; the removed key's path.
fn remove_deepest_key(value: &mut Value, path: &YamlPath) -> Option<YamlPath> {
    let position = path
        .0
        .iter()
        .rposition(|segment| matches!(segment, Segment::Key(_)))?;
    let mut node = value;
    for segment in &path.0[..position] {
        node = match (segment, node) {
            (Segment::Index(index), Value::Sequence(items)) => items.get_mut(*index)?,
            (Segment::Key(key), Value::Mapping(mapping)) => mapping.get_mut(key.as_str())?,
            _ => return None,
        };
    }
    let (Segment::Key(key), Value::Mapping(mapping)) = (&path.0[position], node) else {
        return None;
    };
    mapping.shift_remove(key.as_str())?;
    Some(YamlPath(path.0[..=position].to_vec()))
}

pub(super) fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

// ---------------------------------------------------------------------------------------------
// Sections

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    #[serde(default = "default_grpc_listen")]
    pub grpc_listen: Checked<ListenAddr>,
    #[serde(default)]
    pub http_listen: Option<Checked<ListenAddr>>,
    #[serde(default = "default_admin_listen")]
    pub admin_listen: Checked<ListenAddr>,
    #[serde(default)]
    pub tls: Option<RawTls>,
    #[serde(default)]
    pub connections: RawConnections,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            grpc_listen: default_grpc_listen(),
            http_listen: None,
            admin_listen: default_admin_listen(),
            tls: None,
            connections: RawConnections::default(),
        }
    }
}

/// `server.connections`: bounds on every listener's connections (each key has a default).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConnections {
    #[serde(default)]
    pub max_per_listener: Option<u64>,
    #[serde(default)]
    pub header_read_timeout: Option<Checked<HumanDuration>>,
    #[serde(default)]
    pub idle_timeout: Option<Checked<HumanDuration>>,
}

fn default_grpc_listen() -> Checked<ListenAddr> {
    Checked::valid(ListenAddr(SocketAddr::from(([127, 0, 0, 1], 9191))))
}

fn default_admin_listen() -> Checked<ListenAddr> {
    Checked::valid(ListenAddr(SocketAddr::from(([127, 0, 0, 1], 9901))))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert_file: Checked<FilePath>,
    pub key_file: Checked<FilePath>,
    #[serde(default)]
    pub client_ca_file: Option<Checked<FilePath>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIssuer {
    pub name: Checked<Name>,
    pub issuer: Checked<NonEmpty>,
    pub audiences: Vec<Checked<NonEmpty>>,
    #[serde(default)]
    pub jwks_uri: Option<Checked<NonEmpty>>,
    #[serde(default)]
    pub discovery: Option<bool>,
    #[serde(default)]
    pub jwks_file: Option<Checked<FilePath>>,
    #[serde(default)]
    pub shared_secret_file: Option<Checked<FilePath>>,
    pub algorithms: Vec<Checked<AlgorithmName>>,
    #[serde(default)]
    pub clock_skew: Option<Checked<HumanDuration>>,
    #[serde(default)]
    pub claims: RawClaims,
    #[serde(default)]
    pub types: Option<Vec<Checked<TokenType>>>,
    #[serde(default)]
    pub max_lifetime: Option<Checked<HumanDuration>>,
    #[serde(default)]
    pub refresh: RawRefresh,
    #[serde(default)]
    pub allow_insecure_http: bool,
    #[serde(default)]
    pub claim_headers: OrderedMap<String, Checked<ClaimHeaderName>>,
    /// `amr` values that satisfy `require.mfa` (default `[mfa, otp, hwk, sms, swk]`).
    #[serde(default)]
    pub mfa_methods: Option<Vec<Checked<NonEmpty>>>,
    /// A granted `prefix:*` scope satisfies a required `prefix:...` scope (off by default).
    #[serde(default)]
    pub scope_wildcards: bool,
}

/// One `introspection:` entry: an issuer's RFC 7662 endpoint and how to call it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIntrospection {
    /// The `name` of an `issuers` entry.
    pub issuer: Checked<Name>,
    #[serde(default)]
    pub endpoint: Option<Checked<NonEmpty>>,
    /// Read `introspection_endpoint` from the issuer's discovery document.
    #[serde(default)]
    pub discovery: Option<bool>,
    pub client_id: Checked<NonEmpty>,
    #[serde(default)]
    pub client_secret_file: Option<Checked<FilePath>>,
    #[serde(default)]
    pub client_secret_env: Option<Checked<EnvVarName>>,
    /// Refused whatever its value: a secret is never written into the configuration.
    #[serde(default)]
    pub client_secret: InlineSecret,
    #[serde(default)]
    pub auth_method: Option<Checked<ClientAuthName>>,
    #[serde(default)]
    pub cache_ttl: Option<Checked<HumanDuration>>,
    #[serde(default)]
    pub negative_cache_ttl: Option<Checked<HumanDuration>>,
    #[serde(default)]
    pub timeout: Option<Checked<HumanDuration>>,
    #[serde(default)]
    pub max_response_bytes: Option<u64>,
    /// Response member holding the subject (default `sub`).
    #[serde(default)]
    pub subject: Option<Checked<ClaimPath>>,
    /// Response member holding the roles (default: the issuer's `claims.roles`).
    #[serde(default)]
    pub roles: Option<Checked<ClaimPath>>,
    #[serde(default)]
    pub opaque_tokens: Option<bool>,
    #[serde(default)]
    pub allow_insecure_http: bool,
}

/// Message of an inline `client_secret`.
pub const INLINE_SECRET: &str = "a client secret is never written into the configuration: use \
                                 `client_secret_file` or `client_secret_env`";

/// An inline secret: refused whatever its value (absent is fine), so it never sits in a
/// ConfigMap or a log of the configuration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InlineSecret;

impl<'de> Deserialize<'de> for InlineSecret {
    fn deserialize<D: Deserializer<'de>>(_deserializer: D) -> Result<Self, D::Error> {
        Err(de::Error::custom(INLINE_SECRET))
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClaims {
    #[serde(default)]
    pub subject: Option<Checked<ClaimPath>>,
    #[serde(default)]
    pub scopes: Option<Checked<ClaimPath>>,
    #[serde(default)]
    pub roles: Option<Checked<ClaimPath>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRefresh {
    #[serde(default)]
    pub min_interval: Option<Checked<HumanDuration>>,
    #[serde(default)]
    pub max_interval: Option<Checked<HumanDuration>>,
    #[serde(default)]
    pub timeout: Option<Checked<HumanDuration>>,
    #[serde(default)]
    pub max_document_bytes: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    #[serde(default)]
    pub max_token_bytes: Option<u64>,
    #[serde(default)]
    pub token_cache_entries: Option<u64>,
    #[serde(default)]
    pub failed_attempts: Option<RawFailedAttempts>,
}

/// `limits.failed_attempts`: absent or `off` (the default), or `{per_source, per,
/// client_address}` (each may be left to its default; `{}` and `null` mean the default quota).
#[derive(Debug, Clone)]
pub enum RawFailedAttempts {
    Off,
    Limit(RawAttemptLimit),
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAttemptLimit {
    #[serde(default)]
    pub per_source: Option<u64>,
    #[serde(default)]
    pub per: Option<Checked<HumanDuration>>,
    #[serde(default)]
    pub client_address: Option<RawClientAddress>,
}

/// `limits.failed_attempts.client_address`: the header proxies append client addresses to, and
/// how many of them are trusted. Both are required: naming a header without the hops would
/// trust whatever the client wrote into it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClientAddress {
    pub header: Checked<AddressHeaderName>,
    pub trusted_hops: u64,
}

impl<'de> Deserialize<'de> for RawFailedAttempts {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FailedAttemptsVisitor;
        impl<'de> Visitor<'de> for FailedAttemptsVisitor {
            type Value = RawFailedAttempts;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`off` or a mapping such as `{per_source: 20, per: 1m}`")
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
                if value == "off" {
                    Ok(RawFailedAttempts::Off)
                } else {
                    Err(E::invalid_value(de::Unexpected::Str(value), &self))
                }
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(RawFailedAttempts::Limit(RawAttemptLimit::default()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                // Straight on the caller's map, so errors inside keep their path.
                RawAttemptLimit::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(RawFailedAttempts::Limit)
            }
        }
        deserializer.deserialize_any(FailedAttemptsVisitor)
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawResponse {
    #[serde(default)]
    pub strip_credentials: Option<bool>,
    #[serde(default)]
    pub dynamic_metadata: Option<bool>,
    #[serde(default)]
    pub no_route_status: Option<Checked<NoRouteStatus>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReadiness {
    #[serde(default)]
    pub require_keys: Option<bool>,
}

/// `telemetry:`: today only `tracing`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTelemetry {
    #[serde(default)]
    pub tracing: Option<RawTracing>,
}

/// `telemetry.tracing`: OpenTelemetry traces over OTLP. Every key may be left out, and then the
/// standard `OTEL_*` environment variable (or the default) applies.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTracing {
    #[serde(default)]
    pub endpoint: Option<Checked<OtlpEndpoint>>,
    #[serde(default)]
    pub protocol: Option<Checked<OtlpProtocolName>>,
    #[serde(default)]
    pub sampler: Option<Checked<SamplerName>>,
    #[serde(default)]
    pub ratio: Option<Checked<SampleRatio>>,
    #[serde(default)]
    pub resource_attributes: OrderedMap<String, String>,
    #[serde(default)]
    pub include_subject: Option<bool>,
}

/// `revocation:` (design.md, "Revocation").
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRevocation {
    #[serde(default)]
    pub file: Option<Checked<FilePath>>,
    #[serde(default)]
    pub http: Option<RawFeed>,
    #[serde(default)]
    pub redis: Option<RawRedis>,
    #[serde(default)]
    pub max_entries: Option<u64>,
    #[serde(default)]
    pub require_sync: Option<bool>,
}

/// `revocation.http`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFeed {
    pub url: String,
    #[serde(default)]
    pub interval: Option<Checked<HumanDuration>>,
}

/// `revocation.redis`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedis {
    pub url: String,
    #[serde(default)]
    pub password_file: Option<Checked<FilePath>>,
    #[serde(default)]
    pub ca_file: Option<Checked<FilePath>>,
    #[serde(default)]
    pub channel: Option<String>,
    #[serde(default)]
    pub key_prefix: Option<String>,
}

impl fmt::Debug for RawRedis {
    // The URL may hold a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawRedis")
            .field("channel", &self.channel)
            .field("key_prefix", &self.key_prefix)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: Checked<Name>,
    #[serde(rename = "match")]
    pub matcher: RawMatch,
    #[serde(default)]
    pub allow: Option<Checked<AllowKind>>,
    #[serde(default)]
    pub require: Option<RawRequire>,
    #[serde(default)]
    pub on_deny: Option<Checked<OnDenyName>>,
    /// `enforce` or `shadow`; the top-level `mode` when left out.
    #[serde(default)]
    pub mode: Option<Checked<ModeName>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    #[serde(default)]
    pub methods: Option<Vec<Checked<Method>>>,
    #[serde(default)]
    pub host: Option<Checked<HostName>>,
    #[serde(default)]
    pub path: Option<Checked<RoutePath>>,
    #[serde(default)]
    pub path_prefix: Option<Checked<PathPrefix>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AllowKind {
    /// No credential needed.
    Anonymous,
    /// Any valid token, no particular scope: said in so many words, so that an empty or cut-off
    /// `require` can be refused instead of meaning the same.
    Authenticated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnDenyName {
    Forbidden,
    NotFound,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModeName {
    Enforce,
    Shadow,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRequire {
    #[serde(default)]
    pub scopes: Option<Vec<Checked<ScopeToken>>>,
    /// At least one of these must be granted.
    #[serde(default)]
    pub any_scopes: Option<Vec<Checked<ScopeToken>>>,
    #[serde(default)]
    pub permissions: Option<Vec<Checked<Permission>>>,
    #[serde(default)]
    pub roles: Option<Vec<Checked<RoleName>>>,
    /// A CEL condition, compiled as it is read.
    #[serde(default)]
    pub when: Option<Checked<WhenCondition>>,
    /// `amr` must name one of the issuer's `mfa_methods` (RFC 9470 step-up).
    #[serde(default)]
    pub mfa: Option<bool>,
    /// `acr` must be one of these.
    #[serde(default)]
    pub acr: Option<Vec<Checked<AcrValue>>>,
    /// Longest time since `auth_time`.
    #[serde(default)]
    pub max_auth_age: Option<Checked<HumanDuration>>,
    /// Media types a POST, PUT or PATCH may declare.
    #[serde(default)]
    pub content_types: Option<Vec<Checked<MediaType>>>,
    /// POST and PATCH must carry `Idempotency-Key`.
    #[serde(default)]
    pub idempotency_key: Option<bool>,
    /// The token must also be active at its issuer's introspection endpoint.
    #[serde(default)]
    pub introspect: Option<bool>,
}

/// One entry of `roles:`, short form (a list of permissions) or long form.
#[derive(Debug, Clone, Default)]
pub struct RawRole {
    pub permissions: Vec<Checked<Permission>>,
    pub includes: Vec<Checked<RoleName>>,
    /// Written `{permissions: [...], ...}` rather than as the list of permissions itself.
    pub long_form: bool,
}

/// The long form of a role: `{permissions: [...], includes: [other roles]}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoleForm {
    #[serde(default)]
    permissions: Option<Vec<Checked<Permission>>>,
    #[serde(default)]
    includes: Option<Vec<Checked<RoleName>>>,
}

/// A key this version refuses whatever its value (absent is fine).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Unsupported;

impl<'de> Deserialize<'de> for Unsupported {
    fn deserialize<D: Deserializer<'de>>(_deserializer: D) -> Result<Self, D::Error> {
        Err(de::Error::custom(UNSUPPORTED))
    }
}

/// A leaf value that keeps its own parse error instead of failing the item around it, so that
/// `compile` can report it at its path and still check everything else in the item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked<T>(pub Result<T, String>);

impl<T> Checked<T> {
    pub fn valid(value: T) -> Self {
        Self(Ok(value))
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Checked<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Ok(Self(
            T::deserialize(value).map_err(|error| error.to_string()),
        ))
    }
}

/// A mapping that keeps the file's order (claim-to-header mappings are applied in order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderedMap<K, V>(pub Vec<(K, V)>);

impl<K, V> Default for OrderedMap<K, V> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<'de, K: Deserialize<'de>, V: Deserialize<'de>> Deserialize<'de> for OrderedMap<K, V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OrderedVisitor<K, V>(std::marker::PhantomData<(K, V)>);
        impl<'de, K: Deserialize<'de>, V: Deserialize<'de>> Visitor<'de> for OrderedVisitor<K, V> {
            type Value = OrderedMap<K, V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(OrderedMap(Vec::new()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(OrderedMap(entries))
            }
        }
        deserializer.deserialize_any(OrderedVisitor(std::marker::PhantomData))
    }
}

// ---------------------------------------------------------------------------------------------
// Values that parse while deserializing

/// Defines a newtype deserialized from a YAML string through `$parse`, so an invalid value is
/// an error at its own path; `$expecting` completes serde's "invalid type: ..., expected ...".
macro_rules! string_newtype {
    ($(#[$meta:meta])* $name:ident($inner:ty), $expecting:literal, $parse:expr) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name(pub $inner);

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct StrVisitor;
                impl Visitor<'_> for StrVisitor {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: de::Error>(self, value: &str) -> Result<$name, E> {
                        let parse: fn(&str) -> Result<$inner, String> = $parse;
                        parse(value).map($name).map_err(E::custom)
                    }
                }
                deserializer.deserialize_str(StrVisitor)
            }
        }
    };
}

string_newtype!(
    /// `30s`, `10m`, `500ms`, `1h 30m` (humantime).
    HumanDuration(Duration),
    "a duration such as `30s`, `10m` or `500ms`",
    parse_duration
);

string_newtype!(
    /// `127.0.0.1:9191`, `[::1]:9191`, `0.0.0.0:9191`.
    ListenAddr(SocketAddr),
    "a listen address such as `127.0.0.1:9191`",
    parse_listen_addr
);

string_newtype!(
    /// A JOSE algorithm name, exactly as RFC 7518 spells it.
    AlgorithmName(Algorithm),
    "an algorithm name such as `RS256`",
    parse_algorithm
);

string_newtype!(
    /// A non-empty string.
    NonEmpty(String),
    "a non-empty string",
    parse_non_empty
);

string_newtype!(
    /// A file path (relative paths resolve against the configuration file's directory).
    FilePath(String),
    "a file path",
    parse_non_empty
);

string_newtype!(
    /// An issuer or route name: used in metrics labels and logs.
    Name(String),
    "a name (letters, digits, `-`, `_`, `.`, `:`)",
    parse_name
);

string_newtype!(
    /// An environment variable name: letters, digits and `_`, not starting with a digit.
    EnvVarName(String),
    "an environment variable name such as `PORTCULLIS_INTROSPECTION_SECRET`",
    parse_env_var
);

string_newtype!(
    /// `client_secret_basic` or `client_secret_post` (RFC 6749 §2.3.1).
    ClientAuthName(crate::authn::introspection::ClientAuth),
    "`client_secret_basic` or `client_secret_post`",
    parse_client_auth
);

string_newtype!(
    /// A dotted claim path such as `realm_access.roles`.
    ClaimPath(String),
    "a claim path such as `sub` or `realm_access.roles`",
    parse_claim_path
);

string_newtype!(
    /// A lower-case header name that portcullis may set from a claim.
    ClaimHeaderName(String),
    "a header name such as `x-user-email`",
    parse_claim_header
);

string_newtype!(
    /// A request header carrying client addresses, such as `x-forwarded-for`; lower case.
    AddressHeaderName(String),
    "a header name such as `x-forwarded-for`",
    parse_address_header
);

string_newtype!(
    /// An accepted `typ` header value such as `at+jwt` (RFC 9068).
    TokenType(String),
    "a token type such as `at+jwt`",
    parse_token_type
);

string_newtype!(
    /// An HTTP method, upper case.
    Method(String),
    "an HTTP method such as `GET`",
    parse_method
);

string_newtype!(
    /// A host name or IP literal, lower case, without port.
    HostName(String),
    "a host name such as `api.example.com`",
    parse_host
);

string_newtype!(
    /// `match.path`: an exact normalized path, or a template when it has `{...}`.
    RoutePath(PathMatch),
    "a path such as `/documents` or `/documents/{id}`",
    parse_route_path
);

string_newtype!(
    /// `match.path_prefix`: a normalized path, matched on segment boundaries.
    PathPrefix(String),
    "a path prefix such as `/admin`",
    parse_path_prefix
);

string_newtype!(
    /// A role (`roles:` keys, `includes`, `require.roles`).
    RoleName(String),
    "a role name such as `admin`",
    parse_role
);

string_newtype!(
    /// A permission a role grants (`roles:`, `require.permissions`).
    Permission(String),
    "a permission such as `read` or `documents:delete`",
    parse_permission
);

impl AsRef<str> for RoleName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Permission {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

string_newtype!(
    /// A media type for `require.content_types`: `type/subtype` (RFC 9110 §8.3.1 tokens), no
    /// parameters and no wildcard; kept in lower case.
    MediaType(String),
    "a media type such as `application/json`",
    parse_media_type
);

string_newtype!(
    /// An authentication context class reference for `require.acr`: sent space separated in
    /// the step-up challenge's `acr_values`, so one token, no spaces, quotes or backslashes.
    AcrValue(String),
    "an `acr` value such as `phrh` or `urn:mace:incommon:iap:silver`",
    parse_acr
);

string_newtype!(
    /// `require.when`: a CEL expression, compiled (and checked) as it is read.
    WhenCondition(Condition),
    "a CEL expression such as `resource.owner_id == subject.sub`",
    parse_condition
);

string_newtype!(
    /// An OAuth scope token (RFC 6749 §3.3).
    ScopeToken(String),
    "a scope such as `read:documents`",
    parse_scope
);

string_newtype!(
    /// `telemetry.tracing.endpoint`: the OTLP collector's `http://` or `https://` URL.
    OtlpEndpoint(String),
    "a collector URL such as `http://otel-collector:4317`",
    parse_otlp_endpoint
);

string_newtype!(
    /// `telemetry.tracing.protocol`: `grpc` or `http/protobuf`.
    OtlpProtocolName(OtlpProtocol),
    "`grpc` or `http/protobuf`",
    parse_otlp_protocol
);

string_newtype!(
    /// `telemetry.tracing.sampler`: a sampler name as `OTEL_TRACES_SAMPLER` spells it.
    SamplerName(SamplerKind),
    "a sampler such as `parentbased_traceidratio`",
    parse_sampler
);

/// `telemetry.tracing.ratio`: the share of traces sampled, 0.0 to 1.0.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(try_from = "f64")]
pub struct SampleRatio(pub f64);

impl TryFrom<f64> for SampleRatio {
    type Error = String;
    fn try_from(ratio: f64) -> Result<Self, String> {
        if (0.0..=1.0).contains(&ratio) {
            Ok(Self(ratio))
        } else {
            Err(format!(
                "must be between 0.0 and 1.0 (the share of traces sampled), not {ratio}"
            ))
        }
    }
}

/// `response.no_route_status`: 404 or 403.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "u16")]
pub struct NoRouteStatus(pub u16);

impl TryFrom<u16> for NoRouteStatus {
    type Error = String;
    fn try_from(status: u16) -> Result<Self, String> {
        match status {
            403 | 404 => Ok(Self(status)),
            other => Err(format!("must be 404 or 403, not {other}")),
        }
    }
}

/// A collector URL: `http` or `https`, a host, no credentials (they would end up in logs; use
/// `OTEL_EXPORTER_OTLP_HEADERS`), no query or fragment.
fn parse_otlp_endpoint(text: &str) -> Result<String, String> {
    let url = url::Url::parse(text).map_err(|error| {
        format!("invalid URL `{text}`: {error} (write e.g. `http://otel-collector:4317`)")
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "`{text}`: unsupported scheme `{}`, use http or https",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("`{text}`: the URL has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "the URL must not contain credentials (set OTEL_EXPORTER_OTLP_HEADERS instead)"
                .to_owned(),
        );
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "`{text}`: the URL must not contain a query or a fragment"
        ));
    }
    Ok(text.to_owned())
}

fn parse_otlp_protocol(text: &str) -> Result<OtlpProtocol, String> {
    OtlpProtocol::from_name(text)
        .ok_or_else(|| format!("unknown protocol `{text}`: expected `grpc` or `http/protobuf`"))
}

fn parse_sampler(text: &str) -> Result<SamplerKind, String> {
    SamplerKind::from_name(text).ok_or_else(|| {
        format!(
            "unknown sampler `{text}`: expected one of {}",
            SamplerKind::ALL
                .iter()
                .map(|s| format!("`{}`", s.name()))
                .collect::<Vec<_>>()
                .join(", ")
        )
    })
}

fn parse_condition(text: &str) -> Result<Condition, String> {
    Condition::compile(text).map_err(|error| format!("the condition does not compile: {error}"))
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|error| {
        format!("invalid duration `{text}`: {error} (write e.g. `30s`, `10m`, `500ms`)")
    })
}

fn parse_listen_addr(text: &str) -> Result<SocketAddr, String> {
    text.parse().map_err(|_| {
        format!(
            "invalid listen address `{text}`: expected IP:port such as `127.0.0.1:9191` or \
             `[::1]:9191` (host names are not resolved)"
        )
    })
}

fn parse_algorithm(text: &str) -> Result<Algorithm, String> {
    if let Some(algorithm) = Algorithm::from_name(text) {
        return Ok(algorithm);
    }
    if text.eq_ignore_ascii_case("none") {
        return Err(
            "`none` is never accepted: it marks an unsigned token that anyone can forge".to_owned(),
        );
    }
    match Algorithm::ALL
        .iter()
        .find(|known| known.name().eq_ignore_ascii_case(text))
    {
        Some(known) => Err(format!(
            "unknown algorithm `{text}`: names are case-sensitive, write `{}`",
            known.name()
        )),
        None => {
            let known: Vec<&str> = Algorithm::ALL.iter().map(|alg| alg.name()).collect();
            Err(format!(
                "unknown algorithm `{text}`, expected one of {}",
                known.join(", ")
            ))
        }
    }
}

fn parse_non_empty(text: &str) -> Result<String, String> {
    if text.trim().is_empty() {
        Err("must not be empty".to_owned())
    } else {
        Ok(text.to_owned())
    }
}

fn parse_name(text: &str) -> Result<String, String> {
    let valid_chars = text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    if text.is_empty() || text.len() > 64 || !valid_chars {
        return Err(format!(
            "invalid name `{text}`: use 1 to 64 letters, digits, `-`, `_`, `.` or `:`"
        ));
    }
    Ok(text.to_owned())
}

fn parse_env_var(text: &str) -> Result<String, String> {
    let valid = !text.is_empty()
        && text.len() <= 128
        && !text.starts_with(|c: char| c.is_ascii_digit())
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if valid {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "invalid environment variable name `{text}`: letters, digits and `_`, not starting \
             with a digit"
        ))
    }
}

fn parse_client_auth(text: &str) -> Result<crate::authn::introspection::ClientAuth, String> {
    crate::authn::introspection::ClientAuth::from_name(text).ok_or_else(|| {
        format!("unknown client authentication `{text}`: use `client_secret_basic` or `client_secret_post`")
    })
}

pub(crate) fn parse_claim_path(text: &str) -> Result<String, String> {
    if text.is_empty() || text.split('.').any(str::is_empty) {
        return Err(format!(
            "invalid claim path `{text}`: dotted names such as `realm_access.roles`, no empty parts"
        ));
    }
    if text.chars().any(char::is_whitespace) || text.len() > 256 {
        return Err(format!("invalid claim path `{text}`"));
    }
    Ok(text.to_owned())
}

/// Headers a claim mapping may never set: portcullis's own identity headers, the credential,
/// and hop-by-hop or framing headers that Envoy or the upstream interpret themselves.
const RESERVED_HEADERS: &[&str] = &[
    "x-auth-subject",
    "x-auth-issuer",
    "x-auth-method",
    "x-auth-scopes",
    "x-auth-roles",
    "authorization",
    "proxy-authorization",
    "proxy-authenticate",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
];

fn is_tchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric()
        || matches!(
            byte,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

/// A header name as HTTP/2 writes it (a lower-case token), not a pseudo-header. `pseudo` ends
/// the pseudo-header error; `example` is a valid name to suggest.
fn check_header_name(text: &str, pseudo: &str, example: &str) -> Result<(), String> {
    if text.starts_with(':') {
        return Err(format!("`{text}` is a pseudo-header{pseudo}"));
    }
    if text.is_empty() || text.len() > 128 || !text.bytes().all(is_tchar) {
        return Err(format!(
            "invalid header name `{text}`: use a header token such as `{example}`"
        ));
    }
    if text.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(format!(
            "header names must be lower case (HTTP/2): write `{}`",
            text.to_ascii_lowercase()
        ));
    }
    Ok(())
}

fn parse_claim_header(text: &str) -> Result<String, String> {
    check_header_name(text, "; claim mappings cannot set it", "x-user-email")?;
    if RESERVED_HEADERS.contains(&text) || text.starts_with("x-envoy-") {
        return Err(format!(
            "`{text}` is reserved: portcullis, Envoy or the HTTP framing own it"
        ));
    }
    Ok(text.to_owned())
}

fn parse_address_header(text: &str) -> Result<String, String> {
    check_header_name(text, ", not a header carrying addresses", "x-forwarded-for")?;
    if ["authorization", "proxy-authorization", "cookie"].contains(&text) {
        return Err(format!("`{text}` carries credentials, not addresses"));
    }
    Ok(text.to_owned())
}

fn parse_token_type(text: &str) -> Result<String, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!("invalid token type `{text}`"));
    }
    Ok(text.to_owned())
}

fn parse_method(text: &str) -> Result<String, String> {
    if text.is_empty() || text.len() > 32 || !text.bytes().all(is_tchar) {
        return Err(format!("invalid HTTP method `{text}`"));
    }
    if text.bytes().any(|b| b.is_ascii_lowercase()) {
        return Err(format!(
            "HTTP methods are case-sensitive: write `{}`",
            text.to_ascii_uppercase()
        ));
    }
    Ok(text.to_owned())
}

fn parse_host(text: &str) -> Result<String, String> {
    if text.contains('*') {
        return Err(format!("`{text}`: wildcard hosts are not supported"));
    }
    let bracketed = text.starts_with('[') && text.ends_with(']');
    if !bracketed && text.contains(':') {
        return Err(format!(
            "`{text}`: write the host without a port (the port is ignored when matching)"
        ));
    }
    // The same canonical form requests are matched in (lower case, no trailing dot, IPv6 in
    // RFC 5952 form), so a configured host can only ever match its own spellings.
    match normalize_authority(text) {
        Ok(host) if host.len() <= 253 => Ok(host.into_owned()),
        _ => Err(format!(
            "invalid host `{text}`: expected a DNS name, an IPv4 address or `[IPv6]`"
        )),
    }
}

/// A configured path must already be in the form [`normalize`] produces, or it could never
/// match; saying so beats a route that silently never applies.
fn check_normalized(text: &str) -> Result<(), String> {
    if text.contains('?') {
        return Err(format!(
            "`{text}`: a route path cannot contain `?`; query strings never take part in matching"
        ));
    }
    match normalize(text) {
        Ok(normalized) if normalized.path == text => Ok(()),
        Ok(normalized) => Err(format!(
            "`{text}` is not in normalized form and would never match; write `{}`",
            normalized.path
        )),
        Err(error) => Err(format!("invalid path `{text}`: {error}")),
    }
}

fn parse_route_path(text: &str) -> Result<PathMatch, String> {
    if text.contains(['{', '}']) {
        PathTemplate::parse(text)
            .map(PathMatch::Template)
            .map_err(|error| format!("invalid path template `{text}`: {error}"))
    } else {
        check_normalized(text)?;
        Ok(PathMatch::Exact(text.to_owned()))
    }
}

fn parse_path_prefix(text: &str) -> Result<String, String> {
    if text.contains(['{', '}']) {
        return Err(format!(
            "`{text}`: templates are not allowed in `path_prefix`; use `path` with `{{name...}}`"
        ));
    }
    check_normalized(text)?;
    Ok(text.to_owned())
}

/// Checks a role name given as a `roles:` key.
pub fn parse_role_name(text: &str) -> Result<(), String> {
    parse_role(text).map(drop)
}

/// A role name as `x-auth-roles` can carry it: no comma (the separator), no control character,
/// no surrounding whitespace.
fn parse_role(text: &str) -> Result<String, String> {
    let valid = !text.is_empty()
        && !text.contains(',')
        && !text.chars().any(char::is_control)
        && text.trim() == text;
    if valid {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "invalid role `{text}`: no commas, control characters or surrounding spaces"
        ))
    }
}

/// A permission: one token, like a scope (`read`, `documents:delete`).
fn parse_permission(text: &str) -> Result<String, String> {
    parse_scope(text).map_err(|_| {
        format!("invalid permission `{text}`: one token, no spaces, quotes or backslashes")
    })
}

fn parse_media_type(text: &str) -> Result<String, String> {
    // RFC 9110 §5.6.2: tchar.
    let token = |part: &str| {
        !part.is_empty()
            && part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'+-.^_`|~".contains(&b))
    };
    match text.split_once('/') {
        Some((kind, subtype)) if token(kind) && token(subtype) => Ok(text.to_ascii_lowercase()),
        _ => Err(format!(
            "invalid media type `{text}`: write `type/subtype` such as `application/json`, \
             without parameters or `*`"
        )),
    }
}

fn parse_acr(text: &str) -> Result<String, String> {
    parse_scope(text).map_err(|_| {
        format!("invalid `acr` value `{text}`: one token, no spaces, quotes or backslashes")
    })
}

fn parse_scope(text: &str) -> Result<String, String> {
    // RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
    let valid = !text.is_empty()
        && text
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b));
    if valid {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "invalid scope `{text}`: one scope token, no spaces, quotes or backslashes"
        ))
    }
}
