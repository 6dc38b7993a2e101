//! API keys in the configuration: the `api_keys:` section (`file`, `header`, `env`,
//! `authorization_scheme`) and the keys file it names, a YAML document
//!
//! ```yaml
//! keys:
//!   - id: 7Hq2xK9mPz4B
//!     hash: sha256:<64 hex digits>        # of the secret; never the key itself
//!     subject: billing-batch
//!     scopes: [read:documents]
//!     roles: [user]
//!     env: live
//!     not_before: 2026-01-01T00:00:00Z    # optional
//!     not_after: 2027-01-01T00:00:00Z     # optional
//!     description: nightly billing export, team billing   # optional
//! ```
//!
//! parsed into checked [`KeyEntry`]s, or every problem, each located (file:line:column) with
//! its path (`keys[3].hash`), by the same pre-scan (depth, aliases, repeated keys) as the
//! configuration. A plain-text key in `hash` is an error that never repeats the key.
//!
//! This module must never put a key, a secret or a hash value in an error.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_yaml_ng::Value;

use super::raw::{Checked, FilePath, NonEmpty, RoleName, ScopeToken, describe, list};
use super::source::YamlPath;
use super::{ConfigError, LocatedError, Problem, locate, parse_tree, read_capped};
use crate::authn::api_keys::{self, ApiKeySettings, KeyEntry, KeyEnv, SecretHash};

/// Largest keys file accepted (a few thousand entries).
pub const MAX_KEYS_FILE_BYTES: usize = 4 * 1024 * 1024;

/// The default key header.
pub const DEFAULT_HEADER: &str = "x-api-key";

// ---------------------------------------------------------------------------------------------
// The `api_keys:` section

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApiKeys {
    pub file: Checked<FilePath>,
    #[serde(default)]
    pub header: Option<Checked<KeyHeader>>,
    pub env: Checked<EnvName>,
    #[serde(default)]
    pub authorization_scheme: Option<Checked<SchemeName>>,
}

/// A request header that carries API keys: lower case, a token, never a header portcullis
/// owns or one that carries something else (`authorization` has `authorization_scheme`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct KeyHeader(pub String);

impl TryFrom<String> for KeyHeader {
    type Error = String;
    fn try_from(name: String) -> Result<Self, String> {
        let token = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !token {
            return Err(
                "a header name such as `x-api-key`: lower-case letters, digits and `-`".to_owned(),
            );
        }
        // `x-auth-*` is the identity headers' prefix (engine::IDENTITY_HEADER_PREFIX).
        if name.starts_with("x-auth-")
            || ["authorization", "cookie", "host", "x-request-id"].contains(&name.as_str())
        {
            return Err(format!(
                "`{name}` cannot carry API keys (use `authorization_scheme` for \
                 `Authorization: ApiKey <key>`)"
            ));
        }
        Ok(Self(name))
    }
}

/// `live` or `test`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct EnvName(pub KeyEnv);

impl TryFrom<String> for EnvName {
    type Error = String;
    fn try_from(name: String) -> Result<Self, String> {
        KeyEnv::from_name(&name)
            .map(Self)
            .ok_or_else(|| "an environment: `live` or `test`".to_owned())
    }
}

/// An `Authorization` scheme for API keys, such as `ApiKey` (never `Bearer`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct SchemeName(pub String);

impl TryFrom<String> for SchemeName {
    type Error = String;
    fn try_from(name: String) -> Result<Self, String> {
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err("a scheme such as `ApiKey`: letters, digits and `-`".to_owned());
        }
        if name.eq_ignore_ascii_case("bearer") {
            return Err(
                "`Bearer` is for tokens; choose another scheme such as `ApiKey`".to_owned(),
            );
        }
        Ok(Self(name))
    }
}

/// Compiles the section; its keys file is read later ([`load`]), once the whole configuration
/// is valid. `None` after recording the problems.
pub(super) fn compile(
    raw: &RawApiKeys,
    base_dir: &Path,
    problems: &mut Vec<Problem>,
) -> Option<ApiKeySettings> {
    let path = YamlPath::root().key("api_keys");
    let before = problems.len();
    let mut get = |key: &str, error: Option<&String>| leaf_error(problems, &path, key, error);
    get("file", raw.file.0.as_ref().err());
    get("env", raw.env.0.as_ref().err());
    if let Some(header) = &raw.header {
        get("header", header.0.as_ref().err());
    }
    if let Some(scheme) = &raw.authorization_scheme {
        get("authorization_scheme", scheme.0.as_ref().err());
    }
    let file = raw.file.0.as_ref().ok().map(|file| {
        let given = Path::new(&file.0);
        if given.is_absolute() {
            given.to_owned()
        } else {
            base_dir.join(given)
        }
    });
    if let Some(file) = &file
        && !file.is_file()
    {
        problems.push(Problem::value(
            path.key("file"),
            format!("`{}` does not exist or is not a file", file.display()),
        ));
    }
    if problems.len() > before {
        return None;
    }
    Some(ApiKeySettings {
        file: file?,
        header: raw
            .header
            .as_ref()
            .and_then(|h| h.0.as_ref().ok())
            .map_or_else(|| DEFAULT_HEADER.to_owned(), |h| h.0.clone()),
        env: raw.env.0.as_ref().ok()?.0,
        authorization_scheme: raw
            .authorization_scheme
            .as_ref()
            .and_then(|s| s.0.as_ref().ok())
            .map(|s| s.0.clone()),
        entries: Arc::default(),
    })
}

// ---------------------------------------------------------------------------------------------
// The keys file

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKeyEntry {
    id: Checked<KeyIdText>,
    hash: Checked<HashText>,
    subject: Checked<Subject>,
    #[serde(default)]
    scopes: Vec<Checked<ScopeToken>>,
    #[serde(default)]
    roles: Vec<Checked<RoleName>>,
    env: Checked<EnvName>,
    #[serde(default)]
    not_before: Option<Checked<Timestamp>>,
    #[serde(default)]
    not_after: Option<Checked<Timestamp>>,
    #[serde(default)]
    description: Option<Checked<NonEmpty>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
struct KeyIdText(String);

impl TryFrom<String> for KeyIdText {
    type Error = String;
    fn try_from(id: String) -> Result<Self, String> {
        if api_keys::is_key_id(&id) {
            Ok(Self(id))
        } else {
            Err(format!(
                "a key id: {} letters and digits, as `portcullis keys generate` makes them",
                api_keys::ID_LEN
            ))
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "String")]
struct HashText(SecretHash);

impl TryFrom<String> for HashText {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        SecretHash::parse(&text).map(Self)
    }
}

/// The `x-auth-subject` of the key's requests: no control characters, no surrounding spaces.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
struct Subject(String);

impl TryFrom<String> for Subject {
    type Error = String;
    fn try_from(subject: String) -> Result<Self, String> {
        if subject.is_empty() || subject.trim() != subject || subject.chars().any(char::is_control)
        {
            Err("a subject: not empty, no control characters or surrounding spaces".to_owned())
        } else {
            Ok(Self(subject))
        }
    }
}

/// An RFC 3339 instant in UTC (`2027-01-01T00:00:00Z`), as Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
struct Timestamp(u64);

impl TryFrom<String> for Timestamp {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        humantime::parse_rfc3339(&text)
            .ok()
            .and_then(|at| at.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|since| Self(since.as_secs()))
            .ok_or_else(|| "an RFC 3339 UTC time such as `2027-01-01T00:00:00Z`".to_owned())
    }
}

/// Reads and checks the keys file at `path`.
pub fn load(path: &Path) -> Result<Vec<KeyEntry>, ConfigError> {
    let text =
        read_capped(path, MAX_KEYS_FILE_BYTES, "keys file").map_err(|message| ConfigError {
            errors: vec![LocatedError::whole_file(path, message)],
        })?;
    load_str(&text, path)
}

/// [`load`] for the keys file watcher: the problems as located lines.
pub fn load_entries(path: &Path) -> Result<Vec<KeyEntry>, Vec<String>> {
    load(path).map_err(|error| error.errors.iter().map(ToString::to_string).collect())
}

/// Checks `text` as the keys file read from `path`.
pub fn load_str(text: &str, path: &Path) -> Result<Vec<KeyEntry>, ConfigError> {
    let (scan, root) = parse_tree(text, path)?;
    let mut problems = super::raw::null_values(&root);
    let root_path = YamlPath::root();
    let items = match root {
        // An empty file is far more likely a truncated write than a wish to refuse every key
        // (`keys: []` says that).
        Value::Null => {
            problems.push(Problem::value(
                root_path.clone(),
                "the keys file is empty".to_owned(),
            ));
            Vec::new()
        }
        Value::Mapping(mapping) => {
            let mut items = Vec::new();
            let mut seen_keys = false;
            for (key, value) in mapping {
                match key.as_str() {
                    Some("keys") => {
                        seen_keys = true;
                        items = list::<RawKeyEntry>(value, &root_path.key("keys"), &mut problems);
                    }
                    Some(other) => problems.push(Problem::key(
                        root_path.key(other),
                        format!("unknown field `{other}`, expected `keys`"),
                    )),
                    None => problems.push(Problem::value(
                        root_path.clone(),
                        format!("top-level keys must be strings, found {}", describe(&key)),
                    )),
                }
            }
            if !seen_keys {
                problems.push(Problem::value(
                    root_path.clone(),
                    "missing field `keys`".to_owned(),
                ));
            }
            items
        }
        other => {
            problems.push(Problem::value(
                root_path.clone(),
                format!(
                    "the keys file must be a mapping with `keys`, found {}",
                    describe(&other)
                ),
            ));
            Vec::new()
        }
    };
    let mut entries = Vec::with_capacity(items.len());
    let mut first_use: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (index, raw) in &items {
        let path = root_path.key("keys").index(*index);
        if let Ok(id) = &raw.id.0
            && let Some(first) = first_use.insert(&id.0, *index)
        {
            first_use.insert(&id.0, first);
            problems.push(Problem::value(
                path.key("id"),
                format!("duplicate id, first used at keys[{first}]"),
            ));
        }
        entries.extend(entry(&path, raw, &mut problems));
    }
    if problems.is_empty() {
        return Ok(entries);
    }
    let mut errors = locate(problems, &scan.index, path);
    if errors.is_empty() {
        errors.push(LocatedError::whole_file(
            path,
            "the keys file is invalid".to_owned(),
        ));
    }
    Err(ConfigError { errors })
}

/// Records the parse error of the leaf `key` under `path`, if it has one.
fn leaf_error(problems: &mut Vec<Problem>, path: &YamlPath, key: &str, error: Option<&String>) {
    if let Some(message) = error {
        problems.push(Problem::value(path.key(key), message.clone()));
    }
}

/// One entry, checked; `None` after recording its problems.
fn entry(path: &YamlPath, raw: &RawKeyEntry, problems: &mut Vec<Problem>) -> Option<KeyEntry> {
    let before = problems.len();
    let mut get = |key: &str, error: Option<&String>| leaf_error(problems, path, key, error);
    get("id", raw.id.0.as_ref().err());
    get("hash", raw.hash.0.as_ref().err());
    get("subject", raw.subject.0.as_ref().err());
    get("env", raw.env.0.as_ref().err());
    for (key, value) in [
        ("not_before", &raw.not_before),
        ("not_after", &raw.not_after),
    ] {
        get(key, value.as_ref().and_then(|v| v.0.as_ref().err()));
    }
    get(
        "description",
        raw.description.as_ref().and_then(|d| d.0.as_ref().err()),
    );
    let scopes = strings(&path.key("scopes"), &raw.scopes, |s| &s.0, problems);
    let roles = strings(&path.key("roles"), &raw.roles, |r| &r.0, problems);
    let instant = |value: &Option<Checked<Timestamp>>| {
        value.as_ref().and_then(|v| v.0.as_ref().ok()).map(|t| t.0)
    };
    let (not_before, not_after) = (instant(&raw.not_before), instant(&raw.not_after));
    if let (Some(start), Some(end)) = (not_before, not_after)
        && start >= end
    {
        problems.push(Problem::value(
            path.key("not_after"),
            "must be later than `not_before`".to_owned(),
        ));
    }
    if problems.len() > before {
        return None;
    }
    Some(KeyEntry {
        id: raw.id.0.as_ref().ok()?.0.clone(),
        hash: raw.hash.0.as_ref().ok()?.0,
        subject: raw.subject.0.as_ref().ok()?.0.clone(),
        scopes,
        roles,
        env: raw.env.0.as_ref().ok()?.0,
        not_before,
        not_after,
        description: raw
            .description
            .as_ref()
            .and_then(|d| d.0.as_ref().ok())
            .map(|d| d.0.clone()),
    })
}

/// The valid strings of a list of checked leaves, recording the invalid ones.
fn strings<T>(
    path: &YamlPath,
    list: &[Checked<T>],
    text: impl Fn(&T) -> &String,
    problems: &mut Vec<Problem>,
) -> Vec<String> {
    let mut out = Vec::with_capacity(list.len());
    for (index, item) in list.iter().enumerate() {
        match &item.0 {
            Ok(value) => out.push(text(value).clone()),
            Err(message) => problems.push(Problem::value(path.index(index), message.clone())),
        }
    }
    out
}

/// `entry` as a list item of the keys file, indented to go under `keys:` (what `portcullis keys
/// generate` and `keys hash` print). It holds the hash, never a key.
pub fn render_entry(entry: &KeyEntry) -> Result<String, serde_yaml_ng::Error> {
    #[derive(serde::Serialize)]
    struct Out<'a> {
        id: &'a str,
        hash: String,
        subject: &'a str,
        scopes: &'a [String],
        roles: &'a [String],
        env: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        not_before: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        not_after: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        description: Option<&'a str>,
    }
    let time = |at: u64| {
        humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(at))
            .to_string()
    };
    let yaml = serde_yaml_ng::to_string(&[Out {
        id: &entry.id,
        hash: entry.hash.to_string(),
        subject: &entry.subject,
        scopes: &entry.scopes,
        roles: &entry.roles,
        env: entry.env.as_str(),
        not_before: entry.not_before.map(time),
        not_after: entry.not_after.map(time),
        description: entry.description.as_deref(),
    }])?;
    Ok(yaml.lines().map(|line| format!("  {line}\n")).collect())
}

/// What `portcullis keys check` reports beyond the file's errors: entries already expired at
/// `now` (Unix seconds), and entries of an environment other than `env` when one is given.
pub fn warnings(entries: &[KeyEntry], now: u64, env: Option<KeyEnv>) -> Vec<String> {
    let mut warnings = Vec::new();
    for entry in entries {
        if entry.not_after.is_some_and(|end| end <= now) {
            warnings.push(format!(
                "key `{}` ({}) has expired: remove it from the file",
                entry.id, entry.subject
            ));
        }
        if let Some(env) = env
            && entry.env != env
        {
            warnings.push(format!(
                "key `{}` ({}) is a `{}` key; this deployment accepts `{}` keys only",
                entry.id,
                entry.subject,
                entry.env.as_str(),
                env.as_str()
            ));
        }
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "sha256:5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8";

    fn load_text(text: &str) -> Result<Vec<KeyEntry>, ConfigError> {
        load_str(text, Path::new("keys.yaml"))
    }

    fn errors(text: &str) -> Vec<String> {
        load_text(text)
            .expect_err("invalid keys file")
            .errors
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn reads_every_field_of_an_entry() {
        let text = format!(
            "keys:\n  - id: AbCdEf012345\n    hash: {HASH}\n    subject: billing\n    \
             scopes: [read:documents]\n    roles: [user]\n    env: live\n    \
             not_before: 2026-01-01T00:00:00Z\n    not_after: 2027-01-01T00:00:00Z\n    \
             description: nightly export\n"
        );
        let entries = load_text(&text).expect("valid");
        let entry = &entries[0];
        assert_eq!(entry.id, "AbCdEf012345");
        assert!(entry.hash.matches("password"));
        assert_eq!(
            (entry.subject.as_str(), entry.env),
            ("billing", KeyEnv::Live)
        );
        assert_eq!(entry.scopes, ["read:documents"]);
        assert_eq!(entry.roles, ["user"]);
        assert_eq!(entry.not_before, Some(1_767_225_600));
        assert_eq!(entry.not_after, Some(1_798_761_600));
        assert_eq!(entry.description.as_deref(), Some("nightly export"));
        assert!(load_text("keys: []\n").expect("empty list").is_empty());
    }

    #[test]
    fn a_plain_text_key_in_hash_is_a_located_error_that_never_repeats_it() {
        let generated = api_keys::generate(KeyEnv::Live).expect("random");
        let text = format!(
            "keys:\n  - id: {}\n    hash: {}\n    subject: billing\n    env: live\n",
            generated.id, generated.key
        );
        let errors = errors(&text);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with("keys.yaml:3:11: keys[0].hash: this is a plain-text API key"),
            "{errors:?}"
        );
        assert!(!errors[0].contains(&generated.key), "{errors:?}");
    }

    #[test]
    fn reports_every_bad_entry_with_its_line() {
        let text = format!(
            "keys:\n  - id: short\n    hash: {HASH}\n    subject: a\n    env: prod\n  \
             - id: AbCdEf012345\n    hash: md5:00\n    subject: b\n    env: live\n    \
             colour: blue\n  - id: AbCdEf012345\n    hash: {HASH}\n    subject: c\n    env: live\n  \
             - id: ZZZZZZZZZZZZ\n    hash: {HASH}\n    subject: d\n    env: test\n    \
             not_before: 2027-01-01T00:00:00Z\n    not_after: 2026-01-01T00:00:00Z\n"
        );
        let errors = errors(&text);
        let joined = errors.join("\n");
        for expected in [
            "keys.yaml:2:9: keys[0].id: a key id",
            "keys.yaml:5:10: keys[0].env: an environment",
            "keys.yaml:10:5: keys[1].colour: unknown field `colour`",
            "keys.yaml:7:11: keys[1].hash: must be `sha256:` followed by 64",
            "keys.yaml:11:9: keys[2].id: duplicate id, first used at keys[1]",
            "keys.yaml:20:16: keys[3].not_after: must be later than `not_before`",
        ] {
            assert!(
                errors.iter().any(|e| e.starts_with(expected)),
                "missing {expected:?} in:\n{joined}"
            );
        }
    }

    #[test]
    fn a_rendered_entry_reads_back_as_the_same_entry() {
        let generated = api_keys::generate(KeyEnv::Test).expect("random");
        let entry = KeyEntry {
            id: generated.id.clone(),
            hash: generated.hash,
            subject: "svc: billing # batch".to_owned(),
            scopes: vec!["read:documents".to_owned(), "write:documents".to_owned()],
            roles: Vec::new(),
            env: KeyEnv::Test,
            not_before: None,
            not_after: Some(1_798_761_600),
            description: Some("owner: team-billing".to_owned()),
        };
        let rendered = render_entry(&entry).expect("yaml");
        assert!(!rendered.contains(&generated.key), "{rendered}");
        let read = load_text(&format!("keys:\n{rendered}")).expect("reads back");
        assert_eq!(read.len(), 1, "{rendered}");
        let back = &read[0];
        assert_eq!(back.id, entry.id);
        assert_eq!(back.subject, entry.subject);
        assert_eq!(back.scopes, entry.scopes);
        assert_eq!(back.env, KeyEnv::Test);
        assert_eq!(back.not_after, entry.not_after);
        assert_eq!(back.description, entry.description);
        let secret = api_keys::parse(&generated.key).expect("valid").secret();
        assert!(back.hash.matches(secret));
    }

    #[test]
    fn the_api_keys_section_is_checked_with_located_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("portcullis.yaml");
        let route = "routes:\n  - {name: a, match: {path: /a}, require: {scopes: [x]}}\n";
        let text = format!(
            "api_keys:\n  file: missing.yaml\n  header: Authorization\n  env: prod\n  \
             authorization_scheme: Bearer\n{route}"
        );
        let errors: Vec<String> = super::super::load_str(&text, &config)
            .expect_err("invalid section")
            .errors
            .iter()
            .map(ToString::to_string)
            .collect();
        let joined = errors.join("\n");
        for expected in [
            ":2:9: api_keys.file: `",
            ":3:11: api_keys.header: a header name",
            ":4:8: api_keys.env: an environment",
            ":5:25: api_keys.authorization_scheme: `Bearer` is for tokens",
        ] {
            assert!(joined.contains(expected), "{expected:?} not in:\n{joined}");
        }

        // A valid section: defaults, the keys file read, and a route needs no issuer.
        std::fs::write(
            dir.path().join("keys.yaml"),
            format!("keys:\n  - {{id: AbCdEf012345, hash: {HASH}, subject: a, env: live}}\n"),
        )
        .expect("write keys");
        let loaded = super::super::load_str(
            &format!("api_keys: {{file: keys.yaml, env: live}}\n{route}"),
            &config,
        )
        .expect("valid");
        let settings = loaded.api_keys.expect("api_keys");
        assert_eq!(settings.header, "x-api-key");
        assert_eq!(settings.authorization_scheme, None);
        assert_eq!(settings.entries.len(), 1);

        // The keys file's own errors fail the configuration, located in the keys file.
        std::fs::write(dir.path().join("keys.yaml"), "keys:\n  - {id: x}\n").expect("write");
        let error = super::super::load_str(
            &format!("api_keys: {{file: keys.yaml, env: live}}\n{route}"),
            &config,
        )
        .expect_err("bad keys file");
        assert!(
            error.errors.iter().all(|e| e.file.ends_with("keys.yaml")),
            "{error}"
        );
    }

    #[test]
    fn garbage_and_empty_files_are_refused() {
        for text in ["", "keys: [\n", "- a\n- b\n", "other: 1\n", "keys: 5\n"] {
            assert!(load_text(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn expired_and_foreign_entries_are_warned_about() {
        let text = format!(
            "keys:\n  - {{id: AbCdEf012345, hash: {HASH}, subject: a, env: live, \
             not_after: 2020-01-01T00:00:00Z}}\n  - {{id: ZZZZZZZZZZZZ, hash: {HASH}, subject: b, \
             env: test}}\n"
        );
        let entries = load_text(&text).expect("valid");
        let warnings = warnings(&entries, 1_800_000_000, Some(KeyEnv::Live));
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("`AbCdEf012345` (a) has expired"));
        assert!(warnings[1].contains("`ZZZZZZZZZZZZ` (b) is a `test` key"));
    }
}
