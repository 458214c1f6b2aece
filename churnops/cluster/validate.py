"""Strict validation of rendered manifests: every resource against its schema, and checkov's policies.

- Custom resources (KServe, Knative, Istio, Prometheus operator) against the strict form of their
  published CRD (`churnops.cluster.schemas`), plus their `metadata` against ObjectMeta's fields (CRDs
  declare metadata as a bare object).
- Core resources with `kubernetes-validate --strict` for a pinned Kubernetes version: it ships the
  upstream OpenAPI schemas of every release, which a hand-kept copy would only trail.
- A kind with no schema at all is a problem too: nothing goes unchecked silently.
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from churnops.cluster.schemas import CrdSchemas, load_crd_schemas
from churnops.cluster.settings import ClusterSettings

# ObjectMeta fields a manifest may carry (the API server adds the rest).
OBJECT_META_FIELDS = frozenset(
    {
        "name",
        "generateName",
        "namespace",
        "labels",
        "annotations",
        "finalizers",
        "ownerReferences",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "managedFields",
        "selfLink",
    }
)
_KUBERNETES_VALIDATE_LINE = re.compile(r"^(ERROR|WARN)\s+\S+\s+(.*)$")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one resource, and which check found it."""

    resource: str
    message: str
    check: str

    def __str__(self) -> str:
        return f"{self.resource}: {self.message} [{self.check}]"


@dataclass
class ValidationReport:
    problems: list[Problem] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


def resource_id(document: Mapping[str, Any]) -> str:
    metadata = document.get("metadata") or {}
    namespace = metadata.get("namespace")
    name = metadata.get("name", "?")
    return (
        f"{document.get('kind', '?')}/{namespace}/{name}"
        if namespace
        else f"{document.get('kind', '?')}/{name}"
    )


def parse_documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if isinstance(doc, dict)]


def is_core(api_version: str) -> bool:
    """Kubernetes' own groups: the legacy core (`v1`), dotless groups (apps, policy) and *.k8s.io."""
    if "/" not in api_version:
        return True
    group = api_version.split("/", 1)[0]
    return "." not in group or group.endswith(".k8s.io")


def _format_path(path: Iterable[Any]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(root)"


def validate_custom_resource(document: Mapping[str, Any], crds: CrdSchemas) -> list[Problem]:
    # CRD schemas are OpenAPI 3.0 schema objects: JSON Schema draft 4 semantics (boolean exclusiveMinimum).
    from jsonschema import Draft4Validator

    resource = resource_id(document)
    api_version, kind = str(document.get("apiVersion", "")), str(document.get("kind", ""))
    schema = crds.get(api_version, kind)
    if schema is None:
        return [Problem(resource, f"no published schema for {api_version} {kind} in {crds.directory}", "crd")]
    problems = [
        Problem(resource, f"{_format_path(error.absolute_path)}: {error.message}", "crd")
        for error in sorted(
            Draft4Validator(schema).iter_errors(document), key=lambda e: list(e.absolute_path)
        )
    ]
    return problems + _metadata_problems(document, resource)


def _metadata_problems(document: Mapping[str, Any], resource: str) -> list[Problem]:
    metadata = document.get("metadata")
    if not isinstance(metadata, dict):
        return [Problem(resource, "metadata: must be an object", "metadata")]
    problems = [
        Problem(resource, f"metadata: unknown field {name!r}", "metadata")
        for name in sorted(set(metadata) - OBJECT_META_FIELDS)
    ]
    for name in ("labels", "annotations"):
        values = metadata.get(name, {})
        if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
            problems.append(Problem(resource, f"metadata.{name}: values must be strings", "metadata"))
    return problems


def validate_core_resources(
    documents: Sequence[Mapping[str, Any]], kubernetes_validate: Path, kubernetes_version: str
) -> list[Problem]:
    """`kubernetes-validate --strict` over all core resources at once (one process, one schema load)."""
    if not documents:
        return []
    with tempfile.TemporaryDirectory(prefix="churnops-validate-") as scratch:
        path = Path(scratch) / "core.yaml"
        path.write_text(yaml.safe_dump_all(documents, sort_keys=False))
        result = subprocess.run(
            [str(kubernetes_validate), "--strict", "--quiet", "-k", kubernetes_version, str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
    problems: list[Problem] = []
    for line in (result.stdout + result.stderr).splitlines():
        match = _KUBERNETES_VALIDATE_LINE.match(line.strip())
        if match:
            problems.append(Problem("core", match.group(2), "kubernetes-validate"))
    if result.returncode != 0 and not problems:
        problems.append(
            Problem(
                "core", f"kubernetes-validate exited {result.returncode}: {result.stderr.strip()}", "tool"
            )
        )
    return problems


def validate_documents(
    documents: Sequence[Mapping[str, Any]],
    crds: CrdSchemas,
    kubernetes_validate: Path,
    kubernetes_version: str,
) -> ValidationReport:
    report = ValidationReport()
    core: list[Mapping[str, Any]] = []
    for document in documents:
        api_version = str(document.get("apiVersion", ""))
        key = f"{api_version} {document.get('kind')}"
        report.checked[key] = report.checked.get(key, 0) + 1
        if is_core(api_version):
            core.append(document)
        else:
            report.problems.extend(validate_custom_resource(document, crds))
    report.problems.extend(validate_core_resources(core, kubernetes_validate, kubernetes_version))
    return report


def run_checkov(files: Sequence[Path], checkov: Path, config_file: Path) -> list[Problem]:
    """checkov's Kubernetes policies over rendered manifests (offline: --skip-download)."""
    command = [str(checkov), "--framework", "kubernetes", "--skip-download", "--quiet", "--compact"]
    command += ["--config-file", str(config_file), "--output", "json"]
    for path in files:
        command += ["--file", str(path)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    try:
        reports = json.loads(result.stdout) if result.stdout.strip() else []
    except json.JSONDecodeError:
        return [
            Problem(
                "checkov", f"unreadable output (exit {result.returncode}): {result.stderr[-500:]}", "tool"
            )
        ]
    if isinstance(reports, dict):
        reports = [reports]
    problems: list[Problem] = []
    for report in reports:
        for failed in (report.get("results") or {}).get("failed_checks", []):
            where = f"{Path(failed.get('file_path', '?')).name}:{failed.get('resource', '?')}"
            problems.append(Problem(where, f"{failed.get('check_id')} {failed.get('check_name')}", "checkov"))
    if result.returncode != 0 and not problems:
        problems.append(Problem("checkov", f"exited {result.returncode}: {result.stderr[-500:]}", "tool"))
    return problems


def image_problems(documents: Sequence[Mapping[str, Any]]) -> list[Problem]:
    """Our images named by a tag a later build can move (churnops.cluster.images)."""
    from churnops.cluster.images import mutable_images

    return [
        Problem(where.split(" ", 1)[0], f"mutable image reference {where.split(' ', 1)[1]}", "image")
        for where in mutable_images(documents)
    ]


def check_overlays(
    settings: ClusterSettings, overlays: Sequence[str], *, checkov: bool = True
) -> dict[str, ValidationReport]:
    """Render each overlay and check every resource strictly; checkov runs once over all of them."""
    from churnops.cluster.render import render

    crds = load_crd_schemas(settings.resolved_schemas_dir())
    kubernetes_validate = settings.tool("kubernetes-validate")
    reports: dict[str, ValidationReport] = {}
    with tempfile.TemporaryDirectory(prefix="churnops-rendered-") as scratch:
        files: dict[str, Path] = {}
        for overlay in overlays:
            text = render(settings, overlay)
            files[overlay] = Path(scratch) / f"{overlay}.yaml"
            files[overlay].write_text(text)
            documents = parse_documents(text)
            reports[overlay] = validate_documents(
                documents, crds, kubernetes_validate, settings.kubernetes_version
            )
            reports[overlay].problems.extend(image_problems(documents))
        if checkov and files:
            for problem in run_checkov(
                list(files.values()), settings.tool("checkov"), settings.checkov_config
            ):
                overlay = problem.resource.split(".yaml:", 1)[0]
                reports.get(overlay, next(iter(reports.values()))).problems.append(problem)
    return reports
