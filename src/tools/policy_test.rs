//! `portcullis test FILE...`: YAML policy test cases, each a request and a caller with the
//! answer expected, run through [`explain`](super::explain) (the real engine, offline), for
//! users' CI.
//!
//! ```yaml
//! config: portcullis.yaml            # relative to this file
//! cases:
//!   - name: a viewer can read
//!     request: {method: GET, path: /documents/7, host: api.example, headers: {accept: application/json}}
//!     identity: {claims: {iss: "https://idp.example", sub: alice, roles: [viewer]}}   # or: anonymous
//!     expect: {status: 200, reason: allowed, headers: {x-auth-subject: alice}}
//! ```
//!
//! Output like a test runner: `ok` or `FAIL` and the case's name, one line a case, each failure
//! followed by what differed and the explanation; then `N passed, M failed`. A file that cannot
//! be read (unknown keys included) is reported as `file:line:column: message`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Map, Value};

use super::explain::{self, Caller, Explanation, Request};
use crate::config::{self, Config};

/// Host of a request that names none.
pub const DEFAULT_HOST: &str = "localhost";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    /// The configuration under test, relative to the test file.
    config: PathBuf,
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    request: CaseRequest,
    /// Anonymous when left out.
    #[serde(default)]
    identity: Option<CaseIdentity>,
    expect: Expect,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseRequest {
    method: String,
    /// The request target: path and, optionally, the query string.
    path: String,
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "`anonymous` or `{claims: {...}}`")]
enum CaseIdentity {
    Named(Named),
    Claims(ClaimsIdentity),
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Named {
    Anonymous,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClaimsIdentity {
    claims: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    status: u16,
    /// The decision's reason label: `allowed`, `forbidden`, `insufficient_scope`... (a shadow
    /// route's would-be refusal for `shadow_deny`).
    #[serde(default)]
    reason: Option<String>,
    /// `allow`, `deny` or `shadow_deny`.
    #[serde(default)]
    outcome: Option<String>,
    /// Headers that must be returned with exactly these values: set on the upstream request
    /// when allowed, on the answer when denied.
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

/// What a run found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub passed: usize,
    pub failed: usize,
    /// Files (test or configuration) that could not be read.
    pub broken_files: usize,
}

impl Summary {
    /// 0 when every case passed, 1 on a mismatch, 2 when a file could not be read.
    pub fn exit_code(&self) -> u8 {
        if self.broken_files > 0 {
            2
        } else if self.failed > 0 {
            1
        } else {
            0
        }
    }
}

/// Runs every case of every file, writing the report to `out` and file problems to `err`.
pub fn run(
    files: &[PathBuf],
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> std::io::Result<Summary> {
    let mut summary = Summary::default();
    for file in files {
        let (test, config) = match load(file) {
            Ok(loaded) => loaded,
            Err(problems) => {
                for problem in problems {
                    writeln!(err, "{problem}")?;
                }
                summary.broken_files += 1;
                continue;
            }
        };
        writeln!(out, "{}", file.display())?;
        for case in &test.cases {
            let failures = match run_case(&config, case) {
                Ok((_, failures)) if failures.is_empty() => {
                    summary.passed += 1;
                    writeln!(out, "ok    {}", case.name)?;
                    continue;
                }
                Ok((explanation, mut failures)) => {
                    failures.push(String::new());
                    failures.extend(explanation.render().lines().map(str::to_owned));
                    failures
                }
                Err(error) => vec![error],
            };
            summary.failed += 1;
            writeln!(out, "FAIL  {}", case.name)?;
            for line in failures {
                if line.is_empty() {
                    writeln!(out)?;
                } else {
                    writeln!(out, "      {line}")?;
                }
            }
        }
    }
    writeln!(out, "{} passed, {} failed", summary.passed, summary.failed)?;
    Ok(summary)
}

/// The test file and the configuration it names; or every problem, located.
fn load(file: &Path) -> Result<(TestFile, Config), Vec<String>> {
    let text = std::fs::read_to_string(file)
        .map_err(|error| vec![format!("{}: cannot read: {error}", file.display())])?;
    let test: TestFile = serde_yaml_ng::from_str(&text).map_err(|error| {
        let message = error.to_string();
        // The location is given as `file:line:column`, not again in the message.
        let message = message
            .rfind(" at line ")
            .map_or(message.as_str(), |at| &message[..at]);
        vec![match error.location() {
            Some(at) => format!(
                "{}:{}:{}: {message}",
                file.display(),
                at.line(),
                at.column()
            ),
            None => format!("{}: {message}", file.display()),
        }]
    })?;
    if test.cases.is_empty() {
        return Err(vec![format!(
            "{}: `cases` is empty: a test file must hold at least one case",
            file.display()
        )]);
    }
    let config_path = file
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join(&test.config);
    let config = config::load(&config_path).map_err(|error| {
        error
            .errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
    })?;
    Ok((test, config))
}

/// Explains one case and compares it with what it expects: the explanation and every
/// difference (none: it passed).
fn run_case(config: &Config, case: &Case) -> Result<(Explanation, Vec<String>), String> {
    let request = Request {
        method: case.request.method.to_ascii_uppercase(),
        path: case.request.path.clone(),
        host: case
            .request
            .host
            .clone()
            .unwrap_or_else(|| DEFAULT_HOST.to_owned()),
        headers: case
            .request
            .headers
            .iter()
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect(),
    };
    let caller = match &case.identity {
        None | Some(CaseIdentity::Named(Named::Anonymous)) => Caller::Anonymous,
        Some(CaseIdentity::Claims(identity)) => Caller::Claims(identity.claims.clone()),
    };
    let explanation = explain::explain(config, &request, &caller).map_err(|e| e.to_string())?;
    let mut failures = Vec::new();
    let expect = &case.expect;
    let status = explanation.status();
    if status != expect.status {
        failures.push(format!("expected status {}, got {status}", expect.status));
    }
    let reason = explanation.decision.reason();
    if let Some(want) = &expect.reason
        && want != reason
    {
        failures.push(format!("expected reason {want}, got {reason}"));
    }
    let outcome = explanation.decision.outcome();
    if let Some(want) = &expect.outcome
        && want != outcome
    {
        failures.push(format!("expected outcome {want}, got {outcome}"));
    }
    let headers = explanation.headers();
    for (name, want) in &expect.headers {
        let name = name.to_ascii_lowercase();
        match headers.iter().find(|(have, _)| *have == name) {
            Some((_, value)) if value == want => {}
            Some((_, value)) => {
                failures.push(format!(
                    "expected header {name}: {want}, got {name}: {value}"
                ));
            }
            None => failures.push(format!("expected header {name}: {want}, not returned")),
        }
    }
    Ok((explanation, failures))
}
