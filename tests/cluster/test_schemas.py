"""The strict CRD schemas and the pinned download of the published CRDs."""

from __future__ import annotations

import functools
import shutil
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft4Validator

from churnops.cluster.schemas import SOURCES, CrdSchemas, SchemaError, download, strict_schema
from churnops.cluster.settings import ClusterSettings
from churnops.cluster.validate import validate_custom_resource
from tests.support.services import unavailable

SCHEMA = {
    "type": "object",
    "properties": {
        "spec": {
            "type": "object",
            "properties": {
                "port": {"x-kubernetes-int-or-string": True},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "config": {"type": "object", "x-kubernetes-preserve-unknown-fields": True, "properties": {}},
                "template": {"type": "object", "x-kubernetes-embedded-resource": True, "properties": {}},
                "note": {"type": "string", "nullable": True},
                "ports": {
                    "type": "array",
                    "items": {"type": "object", "properties": {"name": {"type": "string"}}},
                },
                "mode": {
                    "type": "object",
                    "oneOf": [{"required": ["a"]}, {"required": ["b"]}],
                    "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
                },
            },
        }
    },
}


def errors(instance: dict) -> list[str]:
    return [error.message for error in Draft4Validator(strict_schema(SCHEMA)).iter_errors(instance)]


def test_strict_schema_rejects_unknown_fields_at_every_listed_level():
    assert errors({"spec": {"prot": 80}}) == ["Additional properties are not allowed ('prot' was unexpected)"]
    assert errors({"spec": {"ports": [{"nmae": "http"}]}})
    assert errors({"sepc": {}})
    assert errors({"spec": {"mode": {"a": "x", "c": "y"}}})


def test_strict_schema_keeps_kubernetes_extensions_open_where_they_say_so():
    valid = {
        "apiVersion": "example.com/v1",
        "kind": "Thing",
        "metadata": {"name": "x"},
        "spec": {
            "port": "http",
            "labels": {"any": "key"},
            "config": {"whatever": {"nested": 1}},
            "template": {"apiVersion": "v1", "kind": "Pod", "metadata": {}},
            "note": None,
            "mode": {"b": "only"},
        },
    }
    assert errors(valid) == []
    assert errors({"spec": {"port": 8080}}) == []
    assert errors({"spec": {"port": [8080]}})


def test_published_crds_cover_every_custom_kind_the_project_uses(crds: CrdSchemas):
    for api_version, kind in [
        ("serving.kserve.io/v1beta1", "InferenceService"),
        ("serving.knative.dev/v1", "Service"),
        ("security.istio.io/v1", "AuthorizationPolicy"),
        ("networking.istio.io/v1alpha3", "EnvoyFilter"),
        ("monitoring.coreos.com/v1", "PrometheusRule"),
        ("monitoring.coreos.com/v1", "ServiceMonitor"),
        ("monitoring.coreos.com/v1", "PodMonitor"),
    ]:
        assert crds.get(api_version, kind) is not None, f"{api_version} {kind}"


def test_kserve_published_mlserver_runtime_passes_the_strict_check(crds: CrdSchemas):
    """The strict form must not reject what upstream itself ships (else it would only test itself)."""
    runtime_file = crds.directory / "kserve" / "runtime-kserve-mlserver.yaml"
    if not runtime_file.is_file():
        unavailable(f"{runtime_file} missing")
    runtime = yaml.safe_load(runtime_file.read_text())
    assert validate_custom_resource(runtime, crds) == []
    runtime["spec"]["supportedModelFormat"] = runtime["spec"].pop("supportedModelFormats")
    assert validate_custom_resource(runtime, crds)


def test_schemas_dir_defaults_to_the_shared_copy_then_the_downloaded_one(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("CHURNOPS_CLUSTER_SCHEMAS_DIR", raising=False)
    project = tmp_path / "main"
    project.mkdir()
    assert ClusterSettings(project_dir=project).resolved_schemas_dir() == project / ".churnops" / "schemas"
    (tmp_path / "shared" / "schemas").mkdir(parents=True)
    assert ClusterSettings(project_dir=project).resolved_schemas_dir() == project / "../shared/schemas"
    monkeypatch.setenv("CHURNOPS_CLUSTER_SCHEMAS_DIR", str(tmp_path / "elsewhere"))
    assert ClusterSettings(project_dir=project).resolved_schemas_dir() == tmp_path / "elsewhere"


@pytest.fixture
def upstream(tmp_path: Path, crds: CrdSchemas) -> Iterator[tuple[str, Path]]:
    """A stand-in for the upstream repositories on 127.0.0.1: <repository>/<commit>/<path>."""
    root = tmp_path / "upstream"
    for source in SOURCES:
        copy = crds.directory / source.folder / source.local_name
        if not copy.is_file():
            unavailable(f"{copy} missing")
        target = root / source.repository / source.commit / source.path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(copy, target)
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()


def test_schemas_download_fetches_every_pinned_file_by_commit(upstream, crds: CrdSchemas, tmp_path: Path):
    base_url, _ = upstream
    written = download(tmp_path / "schemas", base_url)
    assert len(written) == len(SOURCES)
    for source in SOURCES:
        fetched = tmp_path / "schemas" / source.folder / source.local_name
        assert fetched.read_bytes() == (crds.directory / source.folder / source.local_name).read_bytes()


def test_schemas_download_refuses_a_file_that_differs_from_its_pin(upstream, tmp_path: Path):
    base_url, root = upstream
    source = SOURCES[0]
    served = root / source.repository / source.commit / source.path
    served.write_text(served.read_text().replace("additionalProperties", "additionalPropertie", 1))
    with pytest.raises(SchemaError, match="sha256"):
        download(tmp_path / "schemas", base_url)
