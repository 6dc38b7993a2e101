//! The Helm chart (`charts/portcullis`), rendered by the real Helm (v4, embedded in the PyPI
//! package `helm-python-sdk`) through `tests/helm/render.py`: every mode and optional feature
//! renders, lints clean and passes `kubernetes-validate` (strict) for the newest Kubernetes it
//! knows and the one four minor versions older; the schema and the templates refuse bad values;
//! every container is hardened; the rendered portcullis configuration passes `check-config`
//! and the rendered Envoy bootstrap `envoy --mode validate`, with the ext_authz filter that
//! `portcullis envoy-filter` prints. Then the rendered pod runs for real on loopback: Envoy
//! and portcullis with exactly the rendered files, a real OpenID Provider, an echoing
//! application, and a policy change delivered the way the kubelet updates a ConfigMap.
//!
//! `make test` installs the Python packages into `.venv` (the Makefile's `helm` target).
//! Without them, Envoy or Node.js these tests skip loudly; under `CI=true` they fail.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::agent::{BinaryAgent, admin_get, run_binary, wait_ready, write_config};
use common::envoy::{Envoy, cluster, ext_authz_filter, free_port, missing_tool, repo_root};
use common::idp::Idp;
use common::upstream::{Echo, Upstream};
use serde_json::{Value, json};

const RELEASE: &str = "demo";
const NAMESPACE: &str = "apps";
/// The resource indicator the run-for-real test asks the provider for: the tokens' `aud`.
const AUDIENCE: &str = "https://documents.example";
/// Longest a render of every case may take (Helm is in-process; validation is the slow part).
const RENDER_TIMEOUT: Duration = Duration::from_secs(300);
/// Custom resources the Kubernetes schemas cannot know; checked by hand below.
const CUSTOM_KINDS: [&str; 2] = ["ServiceMonitor", "AuthorizationPolicy"];

// ---------------------------------------------------------------------------------------------
// Rendering through tests/helm/render.py

/// One set of values to render; `parent` renders the sidecar example chart instead.
struct Case {
    name: &'static str,
    values: Value,
    parent: Option<&'static str>,
}

fn case(name: &'static str, values: Value) -> Case {
    Case {
        name,
        values,
        parent: None,
    }
}

/// The project venv's Python with helm-python-sdk and kubernetes-validate, or `None` (a loud
/// skip; a failure under CI).
fn python() -> Option<PathBuf> {
    let python = repo_root().join(".venv/bin/python");
    let installed = python.is_file()
        && Command::new(&python)
            .args(["-c", "import dockerfile, helm_python, kubernetes_validate"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if installed {
        Some(python)
    } else {
        missing_tool(
            "helm-python-sdk, kubernetes-validate and dockerfile (PyPI, in .venv)",
            "`make deps` (its `helm` target)",
        )
    }
}

/// Renders every case; the answer is render.py's JSON (see its docstring).
fn render(cases: &[Case]) -> Option<Value> {
    run_render_py(cases, None)
}

/// render.py with `cases` and, when given, a Dockerfile to parse.
fn run_render_py(cases: &[Case], dockerfile: Option<&Path>) -> Option<Value> {
    let python = python()?;
    let request = json!({
        "dockerfile": dockerfile,
        "chart": repo_root().join("charts/portcullis"),
        "release": RELEASE,
        "namespace": NAMESPACE,
        "kube_versions": ["latest", "latest-4"],
        "cases": cases.iter().map(|c| json!({
            "name": c.name,
            "values": c.values,
            "parent": c.parent.map(|p| repo_root().join(p)),
        })).collect::<Vec<_>>(),
    });
    let mut child = Command::new(python)
        .arg(repo_root().join("tests/helm/render.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("render.py starts");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(request.to_string().as_bytes())
        .expect("request written");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + RENDER_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("render.py did not finish within {RENDER_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = out.join().expect("stdout reader");
    let err = err.join().expect("stderr reader");
    assert!(status.success(), "render.py failed ({status}):\n{err}");
    Some(serde_json::from_str(&out).expect("render.py answers JSON"))
}

/// Renders `(name, values, expected message)` cases that the chart must refuse.
fn render_refused(bad: &[(&'static str, Value, &str)]) -> Option<Value> {
    let cases: Vec<Case> = bad
        .iter()
        .map(|(name, values, _)| case(name, values.clone()))
        .collect();
    render(&cases)
}

/// Helm's message for a case that must not render.
fn refusal<'a>(answer: &'a Value, name: &str) -> &'a str {
    answer["cases"][name]["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{name}: rendered although the chart should refuse it"))
}

fn documents(answer: &Value, name: &str) -> Vec<Value> {
    let case = &answer["cases"][name];
    assert!(
        case["error"].is_null(),
        "{name}: the chart does not render: {}",
        case["error"]
    );
    case["documents"].as_array().cloned().unwrap_or_default()
}

fn of_kind<'a>(documents: &'a [Value], kind: &str) -> Vec<&'a Value> {
    documents.iter().filter(|d| d["kind"] == kind).collect()
}

/// `data[key]` of the ConfigMap whose name ends with `suffix`.
fn config_map(documents: &[Value], suffix: &str, key: &str) -> String {
    of_kind(documents, "ConfigMap")
        .into_iter()
        .find(|d| {
            d["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.ends_with(suffix))
        })
        .and_then(|d| d["data"][key].as_str())
        .unwrap_or_else(|| panic!("no ConfigMap *{suffix} with {key}"))
        .to_owned()
}

/// Every pod spec of the rendered workloads.
fn pod_specs(documents: &[Value]) -> Vec<&Value> {
    documents
        .iter()
        .filter(|d| matches!(d["kind"].as_str(), Some("Deployment" | "StatefulSet")))
        .map(|d| &d["spec"]["template"]["spec"])
        .collect()
}

fn containers(pod: &Value) -> Vec<&Value> {
    ["initContainers", "containers"]
        .iter()
        .flat_map(|list| pod[list].as_array().into_iter().flatten())
        .collect()
}

fn container<'a>(pod: &'a Value, name: &str) -> &'a Value {
    containers(pod)
        .into_iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

/// Non-root, read-only root filesystem, every capability dropped, no privilege escalation,
/// seccomp RuntimeDefault: on the container itself (the pod's settings may be the user's).
fn assert_hardened(context: &str, container: &Value) {
    let name = &container["name"];
    let sc = &container["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true, "{context} {name}: runAsNonRoot");
    assert!(
        sc["runAsUser"].as_u64().is_some_and(|uid| uid > 0),
        "{context} {name}: a numeric non-root runAsUser"
    );
    assert_eq!(
        sc["allowPrivilegeEscalation"], false,
        "{context} {name}: allowPrivilegeEscalation"
    );
    assert_eq!(
        sc["readOnlyRootFilesystem"], true,
        "{context} {name}: readOnlyRootFilesystem"
    );
    assert_ne!(sc["privileged"], true, "{context} {name}: privileged");
    assert_eq!(
        sc["capabilities"]["drop"],
        json!(["ALL"]),
        "{context} {name}: capabilities dropped"
    );
    assert!(
        sc["capabilities"]["add"].is_null(),
        "{context} {name}: no capability added"
    );
    assert_eq!(
        sc["seccompProfile"]["type"], "RuntimeDefault",
        "{context} {name}: seccomp"
    );
}

fn env_value<'a>(container: &'a Value, name: &str) -> Option<&'a Value> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
}

/// Values every configuration test starts from: an issuer and routes that need tokens.
fn policy() -> Value {
    json!({
        "issuers": [{
            "name": "corp",
            "issuer": "https://idp.example.com",
            "audiences": ["https://documents.example.com"],
            "discovery": true,
            "algorithms": ["RS256", "ES256"],
        }],
        "roles": {"admin": ["read", "write"]},
        "routes": [
            {"name": "health", "match": {"path": "/healthz"}, "allow": "anonymous"},
            {"name": "get-document", "match": {"methods": ["GET"], "path": "/documents/{doc_id}"},
             "require": {"scopes": ["read:documents"]}},
            {"name": "admin", "match": {"path_prefix": "/admin"}, "require": {"permissions": ["write"]}},
        ],
    })
}

fn standalone_app() -> Value {
    json!({"app": {"image": {"repository": "example/documents", "tag": "1.0.0"}}})
}

/// The cases whose rendered configuration portcullis can run today: no key that another
/// issue is still implementing (`api_keys`, `revocation`) is set.
fn runnable_cases() -> Vec<Case> {
    vec![
        case("default", json!({})),
        Case {
            name: "sidecar-example",
            values: json!({}),
            parent: Some("deploy/helm/sidecar-example"),
        },
        case(
            "standalone",
            json!({"mode": "standalone", "standalone": standalone_app(),
                   "config": {"issuers": policy()["issuers"], "roles": policy()["roles"],
                              "routes": policy()["routes"], "reload": "rollout",
                              "server": {"connections": {"max_per_listener": 512}},
                              "settings": {"response": {"no_route_status": 403}}}}),
        ),
        case(
            "istio",
            json!({"mode": "istio", "config": policy(),
                   "istio": {"authorizationPolicy": {"enabled": true,
                             "selector": {"app": "documents"}}}}),
        ),
    ]
}

/// Every optional feature, each on.
fn feature_cases() -> Vec<Case> {
    let scrapers = json!([{"namespaceSelector": {"matchLabels":
        {"kubernetes.io/metadata.name": "monitoring"}}}]);
    let clients = json!([{"podSelector": {"matchLabels": {"role": "frontend"}}}]);
    vec![
        case(
            "standalone-features",
            json!({
                "mode": "standalone", "config": policy(), "standalone": standalone_app(),
                "podDisruptionBudget": {"enabled": true},
                "autoscaling": {"enabled": true, "maxReplicas": 6},
                "serviceMonitor": {"enabled": true, "labels": {"release": "prometheus"}},
                "networkPolicy": {"enabled": true, "ingressFrom": clients, "scrapeFrom": scrapers},
                "otlp": {"endpoint": "http://otel-collector.observability:4317"},
                "revocation": {"redis": {"url": "redis://redis.revocation:6379/0"}},
                "secrets": {"data": {"hmac-secret": "s3cr3t-never-in-a-configmap"}},
                "apiKeys": {"existingSecret": "documents-api-keys", "env": "live"},
            }),
        ),
        case(
            "sidecar-features",
            json!({
                "config": policy(),
                "sidecar": {"podSelector": {"app": "documents"}},
                "serviceMonitor": {"enabled": true},
                "networkPolicy": {"enabled": true, "scrapeFrom": scrapers},
                "secrets": {"existingSecret": "documents-portcullis"},
                "revocation": {"redis": {"url": "rediss://redis.revocation:6380/0",
                    "existingSecret": "documents-redis"}},
            }),
        ),
        case(
            "istio-features",
            json!({
                "mode": "istio", "config": policy(),
                "podDisruptionBudget": {"enabled": true, "maxUnavailable": 1},
                "networkPolicy": {"enabled": true},
                "istio": {"authorizationPolicy": {"enabled": true,
                          "selector": {"app": "documents"},
                          "rules": [{"to": [{"operation": {"paths": ["/documents/*"]}}]}]}},
            }),
        ),
        case(
            "existing-config-maps",
            json!({"mode": "standalone", "standalone": standalone_app(),
                   "config": {"existingConfigMap": "documents-portcullis"},
                   "envoy": {"existingConfigMap": "documents-envoy"}}),
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// Render, lint, validate

#[test]
fn every_mode_and_feature_renders_lints_clean_and_validates_against_kubernetes() {
    let cases: Vec<Case> = runnable_cases()
        .into_iter()
        .chain(feature_cases())
        .collect();
    let Some(answer) = render(&cases) else { return };
    let versions = answer["kube_versions"].as_array().expect("versions");
    assert_eq!(versions.len(), 2, "{versions:?}");
    let minor = |v: &Value| -> u64 {
        v.as_str()
            .and_then(|v| v.split('.').nth(1)?.parse().ok())
            .expect("major.minor")
    };
    assert_eq!(minor(&versions[0]), minor(&versions[1]) + 4, "{versions:?}");

    for case in &cases {
        let name = case.name;
        let docs = documents(&answer, name);
        let rendered = &answer["cases"][name];
        let lint: Vec<&Value> = rendered["lint"]
            .as_array()
            .expect("lint messages")
            .iter()
            .filter(|m| m["severity"].as_u64().is_some_and(|s| s >= 2))
            .collect();
        assert!(lint.is_empty(), "{name}: helm lint --strict: {lint:?}");
        assert_eq!(
            rendered["invalid"],
            json!([]),
            "{name}: objects Kubernetes would refuse"
        );
        for unvalidated in rendered["unvalidated"].as_array().expect("list") {
            let kind = unvalidated.as_str().and_then(|u| u.split('/').next());
            assert!(
                kind.is_some_and(|k| CUSTOM_KINDS.contains(&k)),
                "{name}: {unvalidated} has no Kubernetes schema"
            );
        }
        assert!(!docs.is_empty(), "{name}: nothing rendered");
        for pod in pod_specs(&docs) {
            assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}: pod");
            assert_eq!(pod["automountServiceAccountToken"], false, "{name}: pod");
            for container in containers(pod) {
                assert_hardened(name, container);
            }
        }
        // Nothing of a Secret ends up in a ConfigMap.
        for config_map in of_kind(&docs, "ConfigMap") {
            assert!(
                !config_map.to_string().contains("s3cr3t"),
                "{name}: a secret value in a ConfigMap"
            );
        }
    }

    // What each mode renders.
    let kinds = |name: &str| -> Vec<String> {
        let mut kinds: Vec<String> = documents(&answer, name)
            .iter()
            .map(|d| d["kind"].as_str().unwrap_or("?").to_owned())
            .collect();
        kinds.sort();
        kinds
    };
    assert_eq!(kinds("default"), ["ConfigMap", "ConfigMap"]);
    assert_eq!(
        kinds("standalone-features"),
        [
            "ConfigMap",
            "ConfigMap",
            "Deployment",
            "HorizontalPodAutoscaler",
            "NetworkPolicy",
            "PodDisruptionBudget",
            "Secret",
            "Service",
            "Service",
            "ServiceAccount",
            "ServiceMonitor",
        ]
    );
    assert_eq!(
        kinds("istio-features"),
        [
            "AuthorizationPolicy",
            "ConfigMap",
            "Deployment",
            "NetworkPolicy",
            "PodDisruptionBudget",
            "Service",
            "ServiceAccount",
        ]
    );
    assert_eq!(
        kinds("existing-config-maps"),
        ["Deployment", "Service", "ServiceAccount"]
    );

    // Standalone: the application, Envoy and portcullis; the Service reaches Envoy only.
    let docs = documents(&answer, "standalone-features");
    let pods = pod_specs(&docs);
    let names: Vec<&Value> = containers(pods[0]).iter().map(|c| &c["name"]).collect();
    assert_eq!(
        names,
        [&json!("app"), &json!("envoy"), &json!("portcullis")]
    );
    let service = of_kind(&docs, "Service")
        .into_iter()
        .find(|s| s["metadata"]["name"] == "demo-portcullis")
        .expect("the application's Service");
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "http");
    let envoy = container(pods[0], "envoy");
    assert_eq!(envoy["ports"][0]["name"], "http");
    assert_eq!(envoy["ports"][0]["containerPort"], 10000);
    // OTLP with the pod's name and namespace from the downward API.
    let portcullis = container(pods[0], "portcullis");
    assert_eq!(
        env_value(portcullis, "OTEL_RESOURCE_ATTRIBUTES").map(|e| &e["value"]),
        Some(&json!(
            "k8s.pod.name=$(POD_NAME),k8s.namespace.name=$(POD_NAMESPACE)"
        ))
    );
    assert_eq!(
        env_value(portcullis, "POD_NAME").map(|e| &e["valueFrom"]["fieldRef"]["fieldPath"]),
        Some(&json!("metadata.name"))
    );
    assert_eq!(
        env_value(portcullis, "POD_NAMESPACE").map(|e| &e["valueFrom"]["fieldRef"]["fieldPath"]),
        Some(&json!("metadata.namespace"))
    );
    // The configuration directory is mounted whole (a subPath mount never sees an update).
    let mount = portcullis["volumeMounts"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["name"] == "portcullis-config"))
        .expect("config mount");
    assert_eq!(mount["mountPath"], "/etc/portcullis/config");
    assert!(mount["subPath"].is_null());
    // The Redis URL and the keys file are in the configuration only because they were set.
    let config = config_map(&docs, "-config", "portcullis.yaml");
    assert!(
        config.contains("url: redis://redis.revocation:6379/0"),
        "{config}"
    );
    assert!(
        config.contains("file: /etc/portcullis/api-keys/api-keys.yaml"),
        "{config}"
    );
    assert!(config.contains("env: live"), "{config}");
    let default_config = config_map(&documents(&answer, "default"), "-config", "portcullis.yaml");
    for key in ["api_keys", "revocation", "telemetry", "introspection"] {
        assert!(!default_config.contains(key), "{key} in {default_config}");
    }

    // NetworkPolicy: only Envoy's port from the clients, the admin port from the scrapers.
    let policy = &of_kind(&docs, "NetworkPolicy")[0]["spec"];
    assert_eq!(policy["policyTypes"], json!(["Ingress"]));
    let ingress = policy["ingress"].as_array().expect("ingress rules");
    assert_eq!(ingress.len(), 2, "{ingress:?}");
    assert_eq!(
        ingress[0]["ports"],
        json!([{"port": 10000, "protocol": "TCP"}])
    );
    assert_eq!(
        ingress[0]["from"][0]["podSelector"]["matchLabels"]["role"],
        "frontend"
    );
    assert_eq!(
        ingress[1]["ports"],
        json!([{"port": 9901, "protocol": "TCP"}])
    );
    assert_eq!(
        ingress[1]["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "monitoring"
    );
    let sidecar_docs = documents(&answer, "sidecar-features");
    // Redis's password comes from the Secret as revocation.redis.password_file.
    let sidecar_config = config_map(&sidecar_docs, "-config", "portcullis.yaml");
    assert!(
        sidecar_config.contains("password_file: /etc/portcullis/redis/redis-password"),
        "{sidecar_config}"
    );
    let sidecar_policy = &of_kind(&sidecar_docs, "NetworkPolicy")[0];
    assert_eq!(
        sidecar_policy["spec"]["podSelector"]["matchLabels"],
        json!({"app": "documents"})
    );

    // ServiceMonitor (a custom resource: checked here) scrapes the admin port's /metrics.
    let monitor = &of_kind(&docs, "ServiceMonitor")[0];
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "authz-admin");
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
    let metrics = of_kind(&docs, "Service")
        .into_iter()
        .find(|s| s["metadata"]["name"] == "demo-portcullis-metrics")
        .expect("the metrics Service");
    for (key, value) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("selector")
    {
        assert_eq!(&metrics["metadata"]["labels"][key], value, "selects {key}");
    }
    assert_eq!(metrics["spec"]["ports"][0]["port"], 9901);

    // Istio: portcullis alone, gRPC on every address, the CUSTOM AuthorizationPolicy.
    let docs = documents(&answer, "istio-features");
    let pods = pod_specs(&docs);
    assert_eq!(containers(pods[0]).len(), 1);
    let config = config_map(&docs, "-config", "portcullis.yaml");
    assert!(config.contains("grpc_listen: 0.0.0.0:9191"), "{config}");
    let authz = &of_kind(&docs, "AuthorizationPolicy")[0];
    assert_eq!(authz["apiVersion"], "security.istio.io/v1");
    assert_eq!(authz["spec"]["action"], "CUSTOM");
    assert_eq!(authz["spec"]["provider"]["name"], "portcullis");
    assert_eq!(authz["spec"]["selector"]["matchLabels"]["app"], "documents");
    assert_eq!(
        authz["spec"]["rules"][0]["to"][0]["operation"]["paths"],
        json!(["/documents/*"])
    );
    let notes = answer["cases"]["istio-features"]["manifests"]["portcullis/templates/NOTES.txt"]
        .as_str()
        .expect("NOTES");
    assert!(notes.contains("extensionProviders"), "{notes}");
    assert!(notes.contains("envoyExtAuthzGrpc"), "{notes}");
    assert!(
        notes.contains("demo-portcullis.apps.svc.cluster.local"),
        "{notes}"
    );

    // Hot reload by default: no checksum of the portcullis configuration on the pods; with
    // `config.reload: rollout`, one. Envoy's bootstrap always rolls the pods.
    let annotations = |name: &str| -> Value {
        documents(&answer, name)
            .iter()
            .find(|d| d["kind"] == "Deployment")
            .map(|d| d["spec"]["template"]["metadata"]["annotations"].clone())
            .expect("a Deployment")
    };
    let hot = annotations("standalone-features");
    assert!(hot["checksum/portcullis-config"].is_null(), "{hot}");
    assert!(hot["checksum/envoy"].is_string(), "{hot}");
    let rollout = annotations("standalone");
    assert!(
        rollout["checksum/portcullis-config"].is_string(),
        "{rollout}"
    );
    let example = annotations("sidecar-example");
    assert!(example["checksum/envoy"].is_string(), "{example}");

    // The sidecar example: the application and the pair, from the named templates.
    let docs = documents(&answer, "sidecar-example");
    let pods = pod_specs(&docs);
    let names: Vec<&Value> = containers(pods[0]).iter().map(|c| &c["name"]).collect();
    assert_eq!(
        names,
        [&json!("orders"), &json!("envoy"), &json!("portcullis")]
    );
}

#[test]
fn values_schema_rejects_wrong_types_unknown_keys_and_bad_enums() {
    let bad = [
        (
            "port-as-string",
            json!({"ports": {"grpc": "9191"}}),
            "/ports/grpc",
        ),
        (
            "unknown-top-level-key",
            json!({"replicaCount": 2}),
            "replicaCount",
        ),
        (
            "typo-in-a-nested-key",
            json!({"ports": {"grcp": 9191}}),
            "grcp",
        ),
        ("bad-mode", json!({"mode": "daemonset"}), "/mode"),
        (
            "bad-reload",
            json!({"config": {"reload": "sometimes"}}),
            "/config/reload",
        ),
        (
            "bad-log-format",
            json!({"log": {"format": "xml"}}),
            "/log/format",
        ),
        ("root-user", json!({"runAsUser": 0}), "/runAsUser"),
        (
            "credentials-in-the-redis-url",
            json!({"revocation": {"redis": {"url": "redis://user:pw@redis:6379"}}}),
            "/revocation/redis/url",
        ),
        (
            "server-keys-through-settings",
            json!({"config": {"settings": {"routes": []}}}),
            "invalid propertyName 'routes'",
        ),
        (
            "issuer-without-audience",
            json!({"config": {"issuers": [{"name": "corp", "issuer": "https://idp.example.com",
                   "audiences": [], "discovery": true}]}}),
            "/config/issuers/0/audiences",
        ),
        (
            "route-without-match",
            json!({"config": {"routes": [{"name": "x", "allow": "anonymous"}]}}),
            "/config/routes/0",
        ),
        (
            "string-for-a-boolean",
            json!({"serviceMonitor": {"enabled": "yes"}}),
            "/serviceMonitor/enabled",
        ),
        (
            "unknown-route-allow",
            json!({"config": {"routes": [{"name": "x", "match": {"path": "/"}, "allow": "everyone"}]}}),
            "/config/routes/0/allow",
        ),
    ];
    let Some(answer) = render_refused(&bad) else {
        return;
    };
    for (name, _, path) in bad {
        let error = refusal(&answer, name);
        assert!(
            error.contains("values don't meet the specifications of the schema"),
            "{name}: {error}"
        );
        assert!(error.contains(path), "{name}: {path} not in {error}");
        let lint_errors = answer["cases"][name]["lint"]
            .as_array()
            .expect("lint")
            .iter()
            .filter(|m| m["severity"] == 3)
            .count();
        assert!(lint_errors > 0, "{name}: helm lint passes");
    }
}

#[test]
fn templates_refuse_a_policy_that_helm_can_see_is_wrong() {
    let anonymous = json!({"name": "health", "match": {"path": "/healthz"}, "allow": "anonymous"});
    let needs_token =
        json!({"name": "docs", "match": {"path": "/docs"}, "require": {"scopes": ["read"]}});
    let bad = [
        (
            "no-routes",
            json!({"config": {"routes": []}}),
            "config.routes: no routes",
        ),
        (
            "route-without-a-rule",
            json!({"config": {"routes": [{"name": "x", "match": {"path": "/x"}}]}}),
            "config.routes[0]: say who may use this route: `allow: anonymous`",
        ),
        (
            "token-route-without-issuer",
            json!({"config": {"routes": [anonymous, needs_token]}}),
            "config.routes[1]: this route needs a token, but no `issuers` are configured",
        ),
        (
            "two-key-sources",
            json!({"config": {"routes": [needs_token], "issuers": [{"name": "corp",
                   "issuer": "https://idp.example.com", "audiences": ["api"],
                   "discovery": true, "jwks_uri": "https://idp.example.com/jwks"}]}}),
            "config.issuers[0]: `jwks_uri` and `discovery` are all set: an issuer has exactly one key source",
        ),
        (
            "issuer-without-key-source",
            json!({"config": {"routes": [needs_token], "issuers": [{"name": "corp",
                   "issuer": "https://idp.example.com", "audiences": ["api"]}]}}),
            "config.issuers[0]: no key source: set exactly one of",
        ),
        (
            "standalone-without-application",
            json!({"mode": "standalone"}),
            "standalone.app.image.repository",
        ),
    ];
    let Some(answer) = render_refused(&bad) else {
        return;
    };
    for (name, _, message) in bad {
        let error = refusal(&answer, name);
        assert!(
            error.contains(message),
            "{name}: {message:?} not in {error}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// portcullis and Envoy accept what the chart renders

#[test]
fn rendered_configuration_passes_check_config_and_the_bootstrap_passes_envoy_validate() {
    let cases = runnable_cases();
    let Some(answer) = render(&cases) else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    for case in &cases {
        let name = case.name;
        let docs = documents(&answer, name);
        let config = config_map(&docs, "-config", "portcullis.yaml");
        let path = write_config(dir.path(), &format!("{name}.yaml"), &config);
        let path = path.to_str().expect("utf-8 path");
        let (status, stdout, stderr) = run_binary(&["check-config", path]);
        assert!(
            status.success(),
            "{name}: check-config refuses the rendered configuration:\n{stdout}{stderr}\n{config}"
        );
        if name == "istio" {
            continue;
        }
        let bootstrap = config_map(&docs, "-envoy", "envoy.yaml");
        if let Some(result) = Envoy::validate(&bootstrap) {
            result.unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        // The ext_authz filter and the cluster are what portcullis prints for this
        // configuration, so the two sides cannot drift apart.
        let (status, generated, stderr) =
            run_binary(&["envoy-filter", "--mode", "grpc", "--config", path]);
        assert!(status.success(), "{name}: envoy-filter: {stderr}");
        let generated: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(&generated).expect("envoy-filter prints YAML");
        assert_eq!(
            ext_authz_filter(&bootstrap),
            generated["http_filters"][0],
            "{name}: the rendered ext_authz filter differs from `portcullis envoy-filter`"
        );
        assert_eq!(
            cluster(&bootstrap, "portcullis"),
            generated["clusters"][0],
            "{name}: the rendered portcullis cluster differs from `portcullis envoy-filter`"
        );
    }
}

/// One Dockerfile instruction as BuildKit's parser reads it.
struct Instruction {
    cmd: String,
    flags: Vec<String>,
    value: Vec<String>,
}

fn strings(list: &Value) -> Vec<String> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect()
}

#[test]
fn dockerfile_builds_the_locked_release_binary_that_the_chart_runs() {
    let path = repo_root().join("deploy/docker/Dockerfile");
    let istio = case("istio", json!({"mode": "istio", "config": policy()}));
    let Some(answer) = run_render_py(&[istio], Some(&path)) else {
        return;
    };
    let instructions: Vec<Instruction> = answer["dockerfile"]
        .as_array()
        .expect("the parsed Dockerfile")
        .iter()
        .map(|i| Instruction {
            cmd: i["cmd"].as_str().unwrap_or_default().to_owned(),
            flags: strings(&i["flags"]),
            value: strings(&i["value"]),
        })
        .collect();
    let stages: Vec<usize> = (0..instructions.len())
        .filter(|&i| instructions[i].cmd == "FROM")
        .collect();
    assert_eq!(stages.len(), 2, "a build stage and a runtime stage");
    let (build, runtime) = (
        &instructions[stages[0]..stages[1]],
        &instructions[stages[1]..],
    );
    let find = |stage: &'_ [Instruction], cmd: &str| -> Vec<Vec<String>> {
        stage
            .iter()
            .filter(|i| i.cmd == cmd)
            .map(|i| i.value.clone())
            .collect()
    };

    // Build: the official Rust image, at least the crate's rust-version, named `build`.
    let from = &build[0].value;
    assert_eq!(
        from.get(1..),
        Some(&["AS".to_owned(), "build".to_owned()][..]),
        "{from:?}"
    );
    let manifest = std::fs::read_to_string(repo_root().join("Cargo.toml")).expect("Cargo.toml");
    let field = |name: &str| -> String {
        manifest
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} = ")))
            .map(|v| v.trim_matches('"').to_owned())
            .unwrap_or_else(|| panic!("Cargo.toml {name}"))
    };
    let image_rust = from[0]
        .strip_prefix("docker.io/library/rust:")
        .and_then(|tag| tag.split('-').next())
        .unwrap_or_else(|| panic!("the build stage is the official rust image: {}", from[0]));
    let parse = |v: &str| -> Vec<u32> { v.split('.').filter_map(|p| p.parse().ok()).collect() };
    assert!(
        parse(image_rust) >= parse(&field("rust-version")),
        "rust {image_rust} is older than the crate's rust-version"
    );
    // The locked dependencies, the release profile, the portcullis binary.
    let runs = find(build, "RUN").concat().join(" ");
    for flag in ["cargo build", "--release", "--locked", "--bin portcullis"] {
        assert!(runs.contains(flag), "{flag:?} missing in the build: {runs}");
    }

    // Runtime: distroless (glibc, CA certificates, no shell) with only the release binary.
    assert!(
        runtime[0].value[0].starts_with("gcr.io/distroless/cc-"),
        "{:?}",
        runtime[0].value
    );
    let copies: Vec<&Instruction> = runtime.iter().filter(|i| i.cmd == "COPY").collect();
    assert_eq!(copies.len(), 1, "the runtime stage copies the binary only");
    assert_eq!(copies[0].flags, ["--from=build"]);
    assert!(
        copies[0].value[0].ends_with("/target/release/portcullis"),
        "the release build: {:?}",
        copies[0].value
    );
    assert!(
        runs.contains(&copies[0].value[0]),
        "the file the build wrote"
    );
    assert_eq!(copies[0].value[1], "/usr/local/bin/portcullis");
    assert!(
        find(runtime, "RUN").is_empty(),
        "no shell in the runtime stage"
    );
    // A numeric non-root user, the one the chart runs every container as.
    let user = find(runtime, "USER").concat();
    assert_eq!(user.len(), 1, "{user:?}");
    let ids: Vec<u32> = user[0]
        .split(':')
        .filter_map(|id| id.parse().ok())
        .collect();
    assert_eq!(ids.len(), 2, "USER {} is uid:gid, numeric", user[0]);
    assert!(ids.iter().all(|&id| id > 0), "USER {} is root", user[0]);
    let values = std::fs::read_to_string(repo_root().join("charts/portcullis/values.yaml"))
        .expect("values.yaml");
    assert!(
        values.contains(&format!("\nrunAsUser: {}\n", ids[0])),
        "chart user"
    );
    assert!(
        values.contains(&format!("\nrunAsGroup: {}\n", ids[1])),
        "chart group"
    );
    // The chart runs the image's entrypoint with the image's own command line.
    assert_eq!(find(runtime, "ENTRYPOINT"), [["/usr/local/bin/portcullis"]]);
    let command = find(runtime, "CMD").concat();
    let docs = documents(&answer, "istio");
    let portcullis = container(pod_specs(&docs)[0], "portcullis");
    assert_eq!(strings(&portcullis["args"]), command);
    assert!(
        portcullis["command"].is_null(),
        "the image's entrypoint runs"
    );
    // OCI labels, the version being the crate's (the chart's appVersion).
    let labels = find(runtime, "LABEL").concat();
    for label in [
        "org.opencontainers.image.title",
        "org.opencontainers.image.source",
        "org.opencontainers.image.licenses",
        "org.opencontainers.image.version",
        "org.opencontainers.image.revision",
    ] {
        assert!(labels.iter().any(|l| l == label), "OCI label {label}");
    }
    let version = field("version");
    assert!(
        find(runtime, "ARG")
            .concat()
            .contains(&format!("VERSION={version}")),
        "the image's VERSION is {version}"
    );
    let chart = std::fs::read_to_string(repo_root().join("charts/portcullis/Chart.yaml"))
        .expect("Chart.yaml");
    assert!(
        chart.contains(&format!("\nappVersion: \"{version}\"\n")),
        "Chart.yaml appVersion is not {version}"
    );
    // The build context: no build output, no venv, no node_modules, no git history.
    let ignore = std::fs::read_to_string(repo_root().join(".dockerignore")).expect(".dockerignore");
    for path in ["target", ".venv", "tests/idp/node_modules", ".git"] {
        assert!(
            ignore.lines().any(|l| l.trim_start_matches('/') == path),
            ".dockerignore keeps {path} out of the build context"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The rendered pod, run for real

/// A directory laid out as the kubelet mounts a ConfigMap: the files are symlinks through
/// `..data`, itself a symlink to a timestamped directory; an update writes a new directory and
/// renames a new `..data` over the old one (one atomic swap), then removes the old directory.
struct ConfigMapMount {
    dir: PathBuf,
    generation: u32,
}

impl ConfigMapMount {
    fn new(dir: &Path, files: &[(&str, &str)]) -> Self {
        std::fs::create_dir_all(dir).expect("mount dir");
        let mut mount = Self {
            dir: dir.to_owned(),
            generation: 0,
        };
        mount.update(files);
        for (name, _) in files {
            std::os::unix::fs::symlink(format!("..data/{name}"), dir.join(name))
                .expect("file symlink");
        }
        mount
    }

    fn update(&mut self, files: &[(&str, &str)]) {
        self.generation += 1;
        let old = std::fs::read_link(self.dir.join("..data")).ok();
        let timestamped = format!(
            "..2026_12_01_00_00_0{}.{}",
            self.generation,
            1000 + self.generation
        );
        std::fs::create_dir(self.dir.join(&timestamped)).expect("timestamped dir");
        for (name, content) in files {
            std::fs::write(self.dir.join(&timestamped).join(name), content).expect("file");
        }
        std::os::unix::fs::symlink(&timestamped, self.dir.join("..data_tmp")).expect("..data_tmp");
        std::fs::rename(self.dir.join("..data_tmp"), self.dir.join("..data")).expect("swap");
        if let Some(old) = old {
            std::fs::remove_dir_all(self.dir.join(old)).expect("old dir removed");
        }
    }
}

/// The rendered files on loopback: the only change is the listen address `0.0.0.0` (every
/// interface of the pod) to `127.0.0.1`, as the tests talk to loopback only.
fn on_loopback(text: &str, pattern: &str, replacement: &str, count: usize) -> String {
    assert_eq!(
        text.matches(pattern).count(),
        count,
        "{pattern:?} in the rendered file:\n{text}"
    );
    text.replace(pattern, replacement)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rendered_pod_serves_through_envoy_and_hot_reloads_a_configmap_update() {
    let Some(idp) = Idp::start().await else {
        return;
    };
    let upstream = Upstream::start().await;
    let ports = json!({
        "grpc": free_port(), "admin": free_port(), "envoy": free_port(),
        "envoyAdmin": free_port(), "envoyHealth": free_port(), "app": upstream.port(),
    });
    let values = |list_scope: &str| {
        json!({
            "ports": ports,
            "config": {
                "issuers": [{
                    "name": "test-idp", "issuer": idp.issuer(), "audiences": [AUDIENCE],
                    "discovery": true, "algorithms": ["RS256", "ES256"], "types": ["at+jwt"],
                }],
                "routes": [
                    {"name": "health", "match": {"path": "/healthz"}, "allow": "anonymous"},
                    {"name": "list-documents", "match": {"methods": ["GET"], "path": "/documents"},
                     "require": {"scopes": [list_scope]}},
                ],
            },
        })
    };
    let Some(answer) = render(&[
        case("before", values("read:documents")),
        case("after", values("write:documents")),
    ]) else {
        return;
    };
    let files = |name: &str| {
        let docs = documents(&answer, name);
        let config = config_map(&docs, "-config", "portcullis.yaml");
        let bootstrap = config_map(&docs, "-envoy", "envoy.yaml");
        (config, bootstrap)
    };
    let admin = |text: &str| {
        on_loopback(
            text,
            &format!("admin_listen: 0.0.0.0:{}", ports["admin"]),
            &format!("admin_listen: 127.0.0.1:{}", ports["admin"]),
            1,
        )
    };
    let (config, bootstrap) = files("before");
    let (new_config, new_bootstrap) = files("after");
    assert_eq!(
        bootstrap, new_bootstrap,
        "a policy change leaves Envoy alone"
    );
    let config = admin(&config);
    let new_config = admin(&new_config);
    let bootstrap = on_loopback(
        &bootstrap,
        "{address: 0.0.0.0, ",
        "{address: 127.0.0.1, ",
        2,
    );

    // portcullis reads the file where the pod mounts it: a ConfigMap directory.
    let dir = tempfile::tempdir().expect("temp dir");
    let mut mount = ConfigMapMount::new(
        &dir.path().join("etc/portcullis/config"),
        &[("portcullis.yaml", &config)],
    );
    let agent = BinaryAgent::start(&dir.path().join("etc/portcullis/config/portcullis.yaml"));
    assert_eq!(u64::from(agent.addrs.grpc.port()), ports["grpc"]);
    assert_eq!(u64::from(agent.addrs.admin.port()), ports["admin"]);
    wait_ready(&agent.addrs, Duration::from_secs(20)).await;
    let Some(envoy) = Envoy::start(&bootstrap).await else {
        return;
    };
    assert_eq!(u64::from(envoy.listener.port()), ports["envoy"]);

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    // Envoy's probe endpoint answers through the health listener.
    let ready = http
        .get(format!("http://127.0.0.1:{}/ready", ports["envoyHealth"]))
        .send()
        .await
        .expect("GET /ready");
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.text().await.expect("body").trim(), "LIVE");
    // Only /ready: the rest of the admin interface is not behind the health listener.
    let stats = http
        .get(format!("http://127.0.0.1:{}/stats", ports["envoyHealth"]))
        .send()
        .await
        .expect("GET /stats");
    assert_eq!(stats.status(), 404);
    // And portcullis's probes answer on its admin port.
    assert_eq!(admin_get(&agent.addrs, "/healthz").await.0, 200);

    let token = idp.token(&["read:documents"], AUDIENCE).await;
    let allowed = http
        .get(envoy.url("/documents"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("request through Envoy");
    assert_eq!(allowed.status(), 200, "{}", envoy.logs());
    let echo: Echo = allowed.json().await.expect("echo");
    assert_eq!(echo.header("x-auth-method"), Some("jwt"));
    assert_eq!(echo.header("x-auth-issuer"), Some(idp.issuer()));
    assert!(echo.header("x-auth-subject").is_some_and(|s| !s.is_empty()));
    assert_eq!(echo.header("x-auth-scopes"), Some("read:documents"));
    assert_eq!(
        echo.header("authorization"),
        None,
        "the credential is stripped"
    );

    let hits = upstream.hits();
    let refused = http
        .get(envoy.url("/documents"))
        .send()
        .await
        .expect("request through Envoy");
    assert_eq!(refused.status(), 401);
    assert_eq!(
        upstream.hits(),
        hits,
        "a refused request never reaches the application"
    );

    // The policy value changes; the kubelet swaps `..data`; portcullis applies it without a
    // restart (same process), and the same token now lacks the route's scope.
    let pid = agent.pid();
    mount.update(&[("portcullis.yaml", &new_config)]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        let status = http
            .get(envoy.url("/documents"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("request through Envoy")
            .status();
        if status != 200 || Instant::now() > deadline {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status, 403, "the new policy was not applied within 20 s");
    assert_eq!(agent.pid(), pid);
    let status = common::agent::status(&agent.addrs).await;
    assert_eq!(status["config"]["generation"], 2, "{status}");
    // The anonymous route still answers.
    let health = http
        .get(envoy.url("/healthz"))
        .send()
        .await
        .expect("request through Envoy");
    assert_eq!(health.status(), 200);
}
