"""Renders, lints and validates the Helm chart for tests/helm.rs, with the real Helm (the PyPI
package helm-python-sdk embeds Helm v4's Go SDK) and kubernetes-validate (the Kubernetes
OpenAPI schemas, strict: unknown fields are errors); parses the image's Dockerfile with
BuildKit's own parser (the PyPI package dockerfile).

Reads one JSON request on stdin and writes one JSON answer on stdout:

  request  {"chart": PATH, "release": NAME, "namespace": NS, "kube_versions": ["1.37", ...],
            "dockerfile": null | PATH,
            "cases": [{"name": ..., "values": {...}, "parent": null | PATH}]}
           A case with a `parent` renders that application chart with the chart under test
           copied into its charts/ (as `helm dependency update` puts it): the sidecar example.
  answer   {"helm": VERSION, "kube_versions": [...],
            "dockerfile": [{"cmd": "FROM", "flags": [...], "value": [...]}, ...] (when asked),
            "cases": {NAME: {
              "error": null | "helm's message" (a failed render: schema or template `fail`),
              "lint": [{"severity", "path", "error"}],
              "manifests": {"portcullis/templates/x.yaml": TEXT, ...},
              "documents": [{...}, ...],           (every rendered object, parsed)
              "invalid": ["Kind/name (1.37): message", ...],
              "unvalidated": ["Kind/name", ...]}}}  (kinds the Kubernetes schemas do not know:
                                                    custom resources such as ServiceMonitor)

`kube_versions` may hold "latest" and "latest-4": the newest Kubernetes version
kubernetes-validate knows, and the one four minor versions older.
"""

import json
import os
import shutil
import sys
import tempfile

import dockerfile
import helm_python as helm
import kubernetes_validate
import yaml


def resolve_versions(requested):
    latest = kubernetes_validate.utils.latest_version()
    major, minor = (int(part) for part in latest.split(".")[:2])
    resolved = []
    for version in requested:
        if version == "latest":
            resolved.append(f"{major}.{minor}")
        elif version.startswith("latest-"):
            resolved.append(f"{major}.{minor - int(version[len('latest-'):])}")
        else:
            resolved.append(version)
    return resolved


def name_of(document):
    return f"{document.get('kind')}/{document.get('metadata', {}).get('name')}"


def with_parent(request, case, workdir):
    """The chart path to render for `case`: the chart itself, or its parent with the chart
    copied into the parent's charts/."""
    if not case.get("parent"):
        return request["chart"]
    parent = os.path.join(workdir, case["name"])
    shutil.copytree(case["parent"], parent)
    shutil.copytree(request["chart"], os.path.join(parent, "charts", "portcullis"))
    return parent


def run_case(path, request, case, versions):
    answer = {
        "error": None,
        "lint": [],
        "manifests": {},
        "documents": [],
        "invalid": [],
        "unvalidated": [],
    }
    values = case.get("values", {})
    report = helm.lint(path, values, strict=True, namespace=request["namespace"])
    answer["lint"] = report.get("messages", [])
    try:
        with helm.Chart.load(path) as chart:
            manifests = chart.render(
                values,
                name=request["release"],
                namespace=request["namespace"],
                is_install=True,
            )
    except helm.HelmError as error:
        answer["error"] = str(error)
        return answer
    answer["manifests"] = manifests
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt") or not text.strip():
            continue
        for document in yaml.safe_load_all(text):
            if document is None:
                continue
            answer["documents"].append(document)
            for version in versions:
                try:
                    kubernetes_validate.validate(document, version, strict=True)
                except kubernetes_validate.utils.SchemaNotFoundError:
                    if name_of(document) not in answer["unvalidated"]:
                        answer["unvalidated"].append(name_of(document))
                except kubernetes_validate.utils.ValidationError as error:
                    answer["invalid"].append(f"{name_of(document)} ({version}): {error.message}")
    return answer


def main():
    request = json.load(sys.stdin)
    versions = resolve_versions(request.get("kube_versions", ["latest"]))
    answer = {"helm": helm.helm_sdk_version(), "kube_versions": versions, "cases": {}}
    if request.get("dockerfile"):
        answer["dockerfile"] = [
            {"cmd": c.cmd.upper(), "flags": list(c.flags), "value": list(c.value)}
            for c in dockerfile.parse_file(request["dockerfile"])
        ]
    with tempfile.TemporaryDirectory() as workdir:
        for case in request["cases"]:
            path = with_parent(request, case, workdir)
            answer["cases"][case["name"]] = run_case(path, request, case, versions)
    json.dump(answer, sys.stdout)


if __name__ == "__main__":
    main()
