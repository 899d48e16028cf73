"""Lints and renders charts/authgate with Helm's own engine (helm-python-sdk, Helm v4 as a
library) and validates every rendered manifest against the Kubernetes API schemas
(kubernetes-validate, strict: unknown fields are errors). tests/deploy.rs runs it.

Usage: render.py CHART_DIR CASE_JSON
CASE_JSON: {"values": {...}}. Prints one JSON object:
  lint_errors       helm lint's messages of severity warning or error, with the values
  lint_messages     every helm lint message, as "severity path: error"
  error             null, or the message Helm failed the render with (schema or `fail`)
  manifests         [{"template", "kind", "name", "object", "validation": {version: "ok" | error}}]
  notes             the rendered NOTES.txt
"""

import json
import sys

import helm_python as helm
import kubernetes_validate
import yaml

# The oldest Kubernetes the chart declares (Chart.yaml kubeVersion) and the newest that
# kubernetes-validate knows: a manifest must pass both.
VERSIONS = ["1.25.0", kubernetes_validate.utils.latest_version()]


def validate(obj):
    results = {}
    for version in VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
            results[version] = "ok"
        except kubernetes_validate.SchemaNotFoundError:
            results[version] = "no schema"
        except kubernetes_validate.ValidationError as e:
            path = "/".join(str(p) for p in e.absolute_path)
            results[version] = f"{path}: {e.message}"
    return results


def main():
    chart_dir, case = sys.argv[1], json.loads(sys.argv[2])
    values = case.get("values", {})
    report = helm.lint(chart_dir, values, strict=True, namespace="auth")
    out = {
        "lint_messages": [f"{m['severity']} {m['path']}: {m['error'].strip()}" for m in report["messages"]],
        "lint_errors": [m["error"].strip() for m in report["messages"] if m["severity"] >= 2],
        "error": None,
        "manifests": [],
        "notes": "",
    }
    with helm.Chart.load(chart_dir) as chart:
        try:
            rendered = chart.render(values, name="authgate", namespace="auth", is_install=True)
        except helm.HelmError as e:
            out["error"] = str(e)
            rendered = {}
    for template, text in sorted(rendered.items()):
        if template.endswith("NOTES.txt"):
            out["notes"] = text
            continue
        for obj in yaml.safe_load_all(text):
            if not obj:
                continue
            out["manifests"].append({
                "template": template,
                "kind": obj.get("kind"),
                "name": obj.get("metadata", {}).get("name"),
                "object": obj,
                "validation": validate(obj),
            })
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
