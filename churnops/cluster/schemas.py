"""The published CustomResourceDefinitions the manifests are checked against, and their strict form.

No API server runs where the manifests are checked, so each custom resource is validated against the
`openAPIV3Schema` of its project's own CRD, pinned to a commit (the same files as ../shared/schemas/).
CRD schemas accept unknown fields, which would let `canaryTrafficPercnt` or `minReplica` through: the
strict form adds `additionalProperties: false` wherever a schema lists `properties` and does not preserve
unknown fields, as kubeconform's -strict does. (kubeconform itself is a Go binary no package registry here
carries; the kserve SDK's models and the @kubernetes-models packages accept misspelt optional fields.)
"""

from __future__ import annotations

import copy
import hashlib
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class SchemaSource:
    """One upstream file: where it lives, at which commit, and what it must hash to."""

    folder: str
    repository: str
    commit: str
    path: str
    sha256: str

    @property
    def file_name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def local_name(self) -> str:
        # KServe's runtime sits beside its CRDs under a clearer name (as in ../shared/schemas/kserve).
        return "runtime-kserve-mlserver.yaml" if self.path.startswith("config/runtimes/") else self.file_name

    def url(self, base_url: str) -> str:
        return f"{base_url.rstrip('/')}/{self.repository}/{self.commit}/{self.path}"


KSERVE = "aaac4e294dae2c7b1aa1886447793f3aa1c30912"  # v0.20 line
ISTIO = "86c9f01fd735fb01d8192f5bcaf0d424afb7f14c"  # 1.30 line (TrafficExtension is new in 1.30)
KNATIVE = "98e5ef90aa7033797aa0a61ef97f3ff7e49a3944"
PROMETHEUS_OPERATOR = "6adcebc5076c34f4f55f8f5f7b1e528929373ac7"  # v0.93.0 CRDs

SOURCES: tuple[SchemaSource, ...] = (
    SchemaSource(
        "kserve",
        "kserve/kserve",
        KSERVE,
        "config/crd/full/serving.kserve.io_inferenceservices.yaml",
        "57c3bf13f77de94678bf2ae3748056ec071ad2b9e88d6a28f44fb4710758fcff",
    ),
    SchemaSource(
        "kserve",
        "kserve/kserve",
        KSERVE,
        "config/crd/full/serving.kserve.io_servingruntimes.yaml",
        "5a262831474e7bd23e7c4f76556d84e1a11fb3ad74a78a6d18cfc71fd8fca7a2",
    ),
    SchemaSource(
        "kserve",
        "kserve/kserve",
        KSERVE,
        "config/crd/full/serving.kserve.io_clusterservingruntimes.yaml",
        "f721d19516670d4a81181e231b1e58cbc32c36435969182ae457fad537151cc8",
    ),
    SchemaSource(
        "kserve",
        "kserve/kserve",
        KSERVE,
        "config/runtimes/kserve-mlserver.yaml",
        "163224dcc5dadd32e335710dd8d3de3d0af3600096681814045601eefc30a121",
    ),
    SchemaSource(
        "istio",
        "istio/istio",
        ISTIO,
        "manifests/charts/base/files/crd-all.gen.yaml",
        "0ea765a267c9cc96fae6c29f42566fbc31110de5abecc3d7c57210ad2a787013",
    ),
    *(
        SchemaSource("knative", "knative/serving", KNATIVE, f"config/core/300-resources/{name}.yaml", digest)
        for name, digest in (
            ("service", "2df2faa748f4d8e9470a2a5e9f208d7310aa89fc8cad1f2b1b9941fefe3def33"),
            ("configuration", "8ea24d5175e596cedc6df222759f86f1981b768ce9bc031a7af79a78f97195f5"),
            ("revision", "5072995ed77223ae5c4b8e47a418c77e51a123c01643d2a0e91d164b5918febc"),
            ("route", "782a5a6f2a69c9e33b6be8fb7b6ba0acad1283365fa63eb64512a78a716219a7"),
        )
    ),
    *(
        SchemaSource(
            "prometheus-operator",
            "prometheus-operator/prometheus-operator",
            PROMETHEUS_OPERATOR,
            f"example/prometheus-operator-crd/monitoring.coreos.com_{name}.yaml",
            digest,
        )
        for name, digest in (
            ("podmonitors", "45a93443daa687d3654f7e9631909ff7edcdf3ec09c5e60251b74aa2722aee5d"),
            ("prometheusrules", "78be98554b9c8506ab2b4f4feb91c5f3a56e536a0a510f3a8e876a459970d56d"),
            ("servicemonitors", "a99047972c9dd7679ce2050b9968e8a08773492e671b3e17abd476d42aa78a32"),
        )
    ),
)


class SchemaError(RuntimeError):
    """Schemas that cannot be had: missing folder, failed download, or a file that is not what was pinned."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def download(to: Path, base_url: str, *, timeout_s: float = 60.0) -> list[Path]:
    """Fetch every pinned file into `to/<folder>/`, refusing any whose checksum differs from the pin."""
    import httpx

    written: list[Path] = []
    with httpx.Client(timeout=timeout_s, follow_redirects=True) as client:
        for source in SOURCES:
            url = source.url(base_url)
            try:
                response = client.get(url)
                response.raise_for_status()
            except httpx.HTTPError as error:
                raise SchemaError(f"{url}: {error}") from error
            digest = _sha256(response.content)
            if digest != source.sha256:
                raise SchemaError(f"{url}: sha256 {digest} is not the pinned {source.sha256}")
            target = to / source.folder / source.local_name
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, scratch = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
            with os.fdopen(fd, "wb") as handle:
                handle.write(response.content)
            os.replace(scratch, target)
            written.append(target)
    return written


# --- strict schemas -----------------------------------------------------------------------------------

# Every object has these, but some CRDs (Istio's) list only spec and status.
_OBJECT_ROOT = {
    "apiVersion": {"type": "string"},
    "kind": {"type": "string"},
    "metadata": {"type": "object"},
}


def strict_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a CRD's openAPIV3Schema that rejects unknown fields, in JSON Schema draft 4 terms.

    Structural schemas define their fields through `properties`, `items` and `additionalProperties`;
    `allOf`/`anyOf`/`oneOf`/`not` may only constrain fields defined there, so they are left as they are
    (closing them would reject the very fields their parent defines). Kubernetes extensions: fields under
    `x-kubernetes-preserve-unknown-fields` stay open, `x-kubernetes-int-or-string` accepts both,
    `x-kubernetes-embedded-resource` implies apiVersion/kind/metadata, `nullable` admits null. CEL rules
    (`x-kubernetes-validations`) are not evaluated: the API server does that.
    """
    root = copy.deepcopy(dict(schema))
    properties = root.setdefault("properties", {})
    for name, field in _OBJECT_ROOT.items():
        properties.setdefault(name, field)
    strict: dict[str, Any] = _strict(root)
    return strict


def _strict(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    out = {key: _strict_child(key, value) for key, value in node.items()}
    if node.get("x-kubernetes-embedded-resource"):
        embedded = out.setdefault("properties", {})
        for name, field in _OBJECT_ROOT.items():
            embedded.setdefault(name, field)
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    if node.get("x-kubernetes-int-or-string") and "type" not in node and "anyOf" not in node:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable"):
        _allow_null(out)
    return out


def _strict_child(key: str, value: Any) -> Any:
    """One member of a schema node, with every schema below it made strict."""
    if key == "properties" and isinstance(value, dict):
        return {name: _strict(child) for name, child in value.items()}
    if key == "items":
        return [_strict(item) for item in value] if isinstance(value, list) else _strict(value)
    if key == "additionalProperties" and isinstance(value, dict):
        return _strict(value)
    return value


def _allow_null(out: dict[str, Any]) -> None:
    """OpenAPI's `nullable: true` in JSON Schema terms: null joins the type and the enum."""
    kind = out.get("type")
    if isinstance(kind, str):
        out["type"] = [kind, "null"]
    if isinstance(out.get("enum"), list) and None not in out["enum"]:
        out["enum"] = [*out["enum"], None]


# --- the index of published kinds ---------------------------------------------------------------------


@dataclass(frozen=True)
class CrdSchemas:
    """Strict schemas of every served CRD version found in a folder, by (apiVersion, kind)."""

    directory: Path
    schemas: Mapping[tuple[str, str], Mapping[str, Any]]

    @property
    def groups(self) -> frozenset[str]:
        return frozenset(api_version.split("/", 1)[0] for api_version, _ in self.schemas)

    def get(self, api_version: str, kind: str) -> Mapping[str, Any] | None:
        return self.schemas.get((api_version, kind))


def _crds(documents: Iterable[Any]) -> Iterable[dict[str, Any]]:
    for document in documents:
        if isinstance(document, dict) and document.get("kind") == "CustomResourceDefinition":
            yield document


def load_crd_schemas(directory: Path) -> CrdSchemas:
    """Read (once per folder and file state) every CRD under `directory`."""
    if not directory.is_dir():
        raise SchemaError(
            f"no CRD schemas at {directory}: run `churnops schemas download --to {directory}` "
            "or set CHURNOPS_CLUSTER_SCHEMAS_DIR"
        )
    files = sorted(directory.rglob("*.yaml"))
    stamp = tuple((str(path), path.stat().st_mtime_ns) for path in files)
    return _load(directory.resolve(), stamp)


@lru_cache(maxsize=4)
def _load(directory: Path, stamp: tuple[tuple[str, int], ...]) -> CrdSchemas:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    schemas: dict[tuple[str, str], Mapping[str, Any]] = {}
    for name, _ in stamp:
        with open(name, encoding="utf-8") as handle:
            for crd in _crds(yaml.load_all(handle, Loader=loader)):
                group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
                for version in crd["spec"]["versions"]:
                    schema = (version.get("schema") or {}).get("openAPIV3Schema")
                    if version.get("served", True) and schema:
                        schemas[(f"{group}/{version['name']}", kind)] = strict_schema(schema)
    if not schemas:
        raise SchemaError(f"no CustomResourceDefinition found under {directory}")
    return CrdSchemas(directory=directory, schemas=schemas)
