//! The operator tools as users run them, through the built binary: `portcullis test` on every
//! shipped example's test file (each `deploy/examples/*.test.yaml`, so a file added later is
//! picked up), on a file with failing cases (exit 1, the runner's output shape) and on a file
//! it must refuse (exit 2, located error); and `portcullis explain`, human and JSON.

mod common;

use std::path::{Path, PathBuf};
use std::process::ExitStatus;

use common::agent::run_binary;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the binary with `args` (bounded), from the package root where cargo runs tests.
fn portcullis(args: &[&str]) -> (ExitStatus, String, String) {
    run_binary(args)
}

fn example_test_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("deploy/examples"))
        .expect("deploy/examples")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.ends_with(".test.yaml"))
        })
        .collect();
    files.sort();
    files
}

#[test]
fn every_shipped_example_passes_its_policy_tests() {
    let files = example_test_files();
    assert!(
        files.iter().any(|f| f.ends_with("portcullis.test.yaml")),
        "{files:?}"
    );
    for file in files {
        let path = file.to_str().expect("utf-8 path");
        let (status, stdout, stderr) = portcullis(&["test", path]);
        assert_eq!(status.code(), Some(0), "{path}:\n{stdout}\n{stderr}");
        let last = stdout.lines().last().unwrap_or_default();
        assert!(
            last.ends_with(" passed, 0 failed") && !last.starts_with("0 passed"),
            "{path}: {last}\n{stdout}"
        );
        assert!(!stdout.contains("FAIL"), "{path}:\n{stdout}");
    }
}

#[test]
fn a_mismatch_fails_the_run_and_explains_each_failing_case() {
    let (status, stdout, stderr) = portcullis(&["test", "tests/fixtures/policy/failing.test.yaml"]);
    assert_eq!(status.code(), Some(1), "{stdout}\n{stderr}");
    let verdicts: Vec<&str> = stdout
        .lines()
        .filter(|line| line.starts_with("ok ") || line.starts_with("FAIL "))
        .collect();
    assert_eq!(
        verdicts,
        [
            "ok    the health check needs no credential",
            "FAIL  a reader is wrongly expected to delete",
            "ok    a reader lists documents",
            "FAIL  the wrong reason is expected",
        ],
        "{stdout}"
    );
    assert_eq!(
        stdout.lines().last(),
        Some("2 passed, 2 failed"),
        "{stdout}"
    );
    // Under each failure: what differed, then the explanation (route, requirement, decision).
    let first = stdout
        .split("FAIL  a reader is wrongly expected to delete\n")
        .nth(1)
        .and_then(|rest| rest.split("\nok ").next())
        .unwrap_or_default();
    for expected in [
        "expected status 200, got 404",
        "expected header x-auth-subject: alice, not returned",
        "delete-document          MATCH [doc_id=7]",
        "FAIL  scopes           all of delete:documents: missing delete:documents",
        "decision     deny, status 404, reason insufficient_scope",
    ] {
        assert!(first.contains(expected), "{expected:?} not in:\n{first}");
    }
    assert!(
        stdout.contains("expected reason invalid_token, got missing_credential"),
        "{stdout}"
    );
}

#[test]
fn a_test_file_with_an_unknown_key_is_refused_at_its_line() {
    let file = "tests/fixtures/policy/unknown-key.test.yaml";
    let (status, stdout, stderr) = portcullis(&["test", file]);
    assert_eq!(status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "{file}:6:27: cases[0].expect: unknown field `reson`"
        )),
        "{stderr}"
    );
    // A broken file is not hidden by a passing one.
    let (status, _, _) = portcullis(&["test", "deploy/examples/portcullis.test.yaml", file]);
    assert_eq!(status.code(), Some(2));
}

#[test]
fn explain_names_every_route_tried_and_each_requirement() {
    let (status, stdout, stderr) = portcullis(&[
        "explain",
        "--config",
        "deploy/examples/portcullis.yaml",
        "--method",
        "get",
        "--path",
        "/admin/users?page=2",
        "--host",
        "API.example:443",
        "--claims",
        r#"{"iss": "https://idp.example.com", "sub": "alice", "scope": "read:documents"}"#,
    ]);
    assert_eq!(status.code(), Some(0), "{stderr}");
    for expected in [
        "normalized   path /admin/users, host api.example",
        "caller       claims of issuer corp (https://idp.example.com): subject alice",
        "nothing was verified",
        "1. health                   no match: path does not match",
        "3. create-document          no match: method not listed",
        "6. admin                    MATCH (mode enforce, on_deny forbidden)",
        "FAIL  scopes           all of admin: missing admin; granted [read:documents]",
        "decision     deny, status 403, reason insufficient_scope",
        r#"www-authenticate: Bearer realm="portcullis", error="insufficient_scope", scope="admin""#,
    ] {
        assert!(stdout.contains(expected), "{expected:?} not in:\n{stdout}");
    }
}

#[test]
fn explain_with_a_token_says_the_signature_was_not_verified() {
    use base64::Engine as _;
    let b64 = |json: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let claims = format!(
        r#"{{"iss":"https://idp.example.com","aud":"https://documents.example.com","sub":"alice","scope":"read:documents","iat":{now},"exp":{}}}"#,
        now + 300
    );
    let token = format!(
        "{}.{}.{}",
        b64(r#"{"alg":"RS256","typ":"at+jwt","kid":"k"}"#),
        b64(&claims),
        b64("not-a-signature")
    );
    let (status, stdout, stderr) = portcullis(&[
        "explain",
        "--config",
        "deploy/examples/portcullis.yaml",
        "--method",
        "GET",
        "--path",
        "/documents/7",
        "--token",
        &token,
        "--json",
    ]);
    assert_eq!(status.code(), Some(0), "{stderr}");
    let json: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert!(
        json["notes"][0]
            .as_str()
            .is_some_and(|note| note.contains("signature was NOT verified")),
        "{json:#}"
    );
    assert_eq!(json["route"], "get-document", "{json:#}");
    assert_eq!(json["decision"]["status"], 200, "{json:#}");
    assert_eq!(json["decision"]["headers"]["x-auth-subject"], "alice");
    assert_eq!(json["requirements"][0]["name"], "scopes");
    assert_eq!(json["requirements"][0]["passed"], true);
    // The token itself is never printed.
    assert!(!stdout.contains(&token));
}
