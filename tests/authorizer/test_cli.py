"""`churnops keys ...` and `churnops authorizer ...` through the real root CLI."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys

import pytest
import yaml
from typer.testing import CliRunner

from churn_authorizer.keys import KeysDocument, hash_key
from churnops.cli import app
from tests.support.services import REPO

KEY_LINE = re.compile(r"co_[0-9a-f]{12}_[A-Za-z0-9_-]{43}\n")


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def keys_in(path) -> KeysDocument:
    manifest = yaml.safe_load(path.read_text())
    return KeysDocument.from_json(manifest["stringData"]["keys.json"])


def test_keys_create_prints_only_the_key_and_stores_only_its_hash(runner, tmp_path):
    secret = tmp_path / "secrets" / "api-keys.yaml"
    result = runner.invoke(
        app, ["keys", "create", "--scope", "predict", "--name", "crm", "--secret-file", str(secret)]
    )
    assert result.exit_code == 0, result.output
    assert KEY_LINE.fullmatch(result.stdout)
    key = result.stdout.strip()
    text = secret.read_text()
    assert key not in text
    assert key.split("_", 2)[2] not in text
    manifest = yaml.safe_load(text)
    assert manifest["kind"] == "Secret"
    assert manifest["metadata"]["name"] == "churnops-api-keys"
    (entry,) = keys_in(secret).keys
    assert entry.hash == hash_key(key)
    assert entry.name == "crm"
    assert [s.value for s in entry.scopes] == ["predict"]
    assert entry.id in result.stderr


def test_keys_create_accepts_several_scopes_and_a_rate_limit(runner, tmp_path):
    secret = tmp_path / "api-keys.yaml"
    args = ["keys", "create", "-s", "predict", "--scope", "feedback", "--rate-limit", "7"]
    result = runner.invoke(app, [*args, "--secret-file", str(secret)])
    assert result.exit_code == 0, result.output
    (entry,) = keys_in(secret).keys
    assert [s.value for s in entry.scopes] == ["predict", "feedback"]
    assert entry.rate_limit == 7


def test_keys_create_rejects_unknown_scope(runner, tmp_path):
    result = runner.invoke(
        app, ["keys", "create", "--scope", "root", "--secret-file", str(tmp_path / "s.yaml")]
    )
    assert result.exit_code != 0
    assert not (tmp_path / "s.yaml").exists()


def test_keys_create_print_only_writes_nothing_and_prints_entry_on_stderr(runner, tmp_path):
    secret = tmp_path / "api-keys.yaml"
    result = runner.invoke(
        app, ["keys", "create", "--scope", "admin", "--print-only", "--secret-file", str(secret)]
    )
    assert result.exit_code == 0, result.output
    assert not secret.exists()
    assert KEY_LINE.fullmatch(result.stdout)
    key = result.stdout.strip()
    entry = json.loads(result.stderr[result.stderr.index("{") :])
    assert entry["hash"] == hash_key(key)
    assert entry["scopes"] == ["admin"]
    assert key not in result.stderr


def test_keys_create_appends_and_keeps_other_manifest_fields(runner, tmp_path):
    secret = tmp_path / "api-keys.yaml"
    runner.invoke(app, ["keys", "create", "--scope", "predict", "--secret-file", str(secret)])
    manifest = yaml.safe_load(secret.read_text())
    manifest["metadata"]["namespace"] = "churnops"
    manifest["metadata"]["annotations"] = {"team": "ml"}
    secret.write_text(yaml.safe_dump(manifest))
    runner.invoke(app, ["keys", "create", "--scope", "feedback", "--secret-file", str(secret)])
    manifest = yaml.safe_load(secret.read_text())
    assert manifest["metadata"]["namespace"] == "churnops"
    assert manifest["metadata"]["annotations"] == {"team": "ml"}
    assert len(keys_in(secret).keys) == 2


def test_keys_commands_read_base64_data_form(runner, tmp_path):
    runner.invoke(app, ["keys", "create", "--scope", "predict", "--secret-file", str(tmp_path / "a.yaml")])
    manifest = yaml.safe_load((tmp_path / "a.yaml").read_text())
    payload = manifest.pop("stringData")["keys.json"]
    manifest["data"] = {"keys.json": base64.b64encode(payload.encode()).decode()}
    converted = tmp_path / "b.yaml"
    converted.write_text(yaml.safe_dump(manifest))
    result = runner.invoke(app, ["keys", "create", "--scope", "admin", "--secret-file", str(converted)])
    assert result.exit_code == 0, result.output
    rewritten = yaml.safe_load(converted.read_text())
    assert "data" not in rewritten  # moved to stringData, not duplicated
    assert len(keys_in(converted).keys) == 2


def test_keys_list_shows_ids_names_scopes_but_never_hashes(runner, tmp_path):
    secret = tmp_path / "api-keys.yaml"
    runner.invoke(app, ["keys", "create", "-s", "predict", "--name", "crm", "--secret-file", str(secret)])
    runner.invoke(
        app,
        ["keys", "create", "-s", "admin", "--name", "ops", "--rate-limit", "5", "--secret-file", str(secret)],
    )
    document = keys_in(secret)
    table = runner.invoke(app, ["keys", "list", "--secret-file", str(secret)])
    assert table.exit_code == 0
    for entry in document.keys:
        assert entry.id in table.stdout
        assert entry.hash not in table.stdout
        assert entry.hash.split(":")[1][:16] not in table.stdout
    assert "crm" in table.stdout
    assert "ops" in table.stdout
    listed = runner.invoke(app, ["keys", "list", "--json", "--secret-file", str(secret)])
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [r["name"] for r in rows] == ["crm", "ops"]
    assert all("hash" not in r for r in rows)
    assert rows[1]["rate_limit"] == 5


def test_keys_list_of_missing_file_is_empty(runner, tmp_path):
    result = runner.invoke(app, ["keys", "list", "--json", "--secret-file", str(tmp_path / "none.yaml")])
    assert result.exit_code == 0
    assert result.stdout == ""


def test_keys_revoke_removes_the_entry(runner, tmp_path):
    secret = tmp_path / "api-keys.yaml"
    runner.invoke(app, ["keys", "create", "-s", "predict", "--secret-file", str(secret)])
    runner.invoke(app, ["keys", "create", "-s", "feedback", "--secret-file", str(secret)])
    first, second = keys_in(secret).keys
    result = runner.invoke(app, ["keys", "revoke", first.id, "--secret-file", str(secret)])
    assert result.exit_code == 0, result.output
    assert [k.id for k in keys_in(secret).keys] == [second.id]


def test_keys_revoke_unknown_id_fails_and_changes_nothing(runner, tmp_path):
    secret = tmp_path / "api-keys.yaml"
    runner.invoke(app, ["keys", "create", "-s", "predict", "--secret-file", str(secret)])
    before = secret.read_text()
    result = runner.invoke(app, ["keys", "revoke", "000000000000", "--secret-file", str(secret)])
    assert result.exit_code == 1
    assert "no key with id" in result.stderr
    assert secret.read_text() == before


def test_keys_secret_file_defaults_to_setting(runner, tmp_path, monkeypatch):
    from churn_authorizer.settings import get_settings

    target = tmp_path / "from-env.yaml"
    monkeypatch.setenv("CHURNOPS_AUTHORIZER_SECRET_MANIFEST", str(target))
    get_settings.cache_clear()
    try:
        result = runner.invoke(app, ["keys", "create", "-s", "predict"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert len(keys_in(target).keys) == 1


@pytest.mark.integration
def test_key_created_by_cli_is_accepted_by_running_authorizer(runner, tmp_path, start_authorizer, keys_file):
    """End to end: `keys create` → Secret manifest → mounted keys.json → a real authorizer says 200."""
    secret = tmp_path / "api-keys.yaml"
    result = runner.invoke(app, ["keys", "create", "-s", "predict", "--secret-file", str(secret)])
    key = result.stdout.strip()
    # As the kubelet mounts it from the applied Secret:
    keys_file.write_text(yaml.safe_load(secret.read_text())["stringData"]["keys.json"])
    authorizer = start_authorizer()
    response = authorizer.check("POST", "/v2/models/churn/infer", {"Authorization": f"Bearer {key}"})
    assert response.status_code == 200
    assert response.headers["x-churnops-key-id"] == key.split("_")[1]


def test_authorizer_module_entrypoint_offers_serve():
    result = subprocess.run(
        [sys.executable, "-m", "churn_authorizer", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0
    assert "serve" in result.stdout


def test_churnops_cli_mounts_authorizer_serve(runner):
    result = runner.invoke(app, ["authorizer", "serve", "--help"])
    assert result.exit_code == 0
    assert "--port" in result.stdout
