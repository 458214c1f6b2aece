from __future__ import annotations

import hashlib
import os
import re

import pytest

from churn_authorizer.keys import (
    KeysDocument,
    KeysFile,
    KeysFileError,
    KeyStore,
    Scope,
    generate_key,
    hash_key,
    load_keys,
    parse_key_id,
)
from tests.authorizer.conftest import issue, write_keys_file

KEY_SHAPE = re.compile(r"co_[0-9a-f]{12}_[A-Za-z0-9_-]{43}")


def test_generated_key_has_prefix_id_and_256_bit_secret():
    new = generate_key([Scope.PREDICT], name="crm")
    assert KEY_SHAPE.fullmatch(new.key)
    assert new.key.split("_", 2)[1] == new.entry.id
    assert new.entry.scopes == (Scope.PREDICT,)
    assert new.entry.name == "crm"


def test_generated_keys_are_unique():
    keys = {generate_key([Scope.PREDICT]).key for _ in range(200)}
    assert len(keys) == 200


def test_entry_stores_sha256_of_the_key_and_never_the_key():
    new = generate_key([Scope.PREDICT, Scope.FEEDBACK])
    assert new.entry.hash == "sha256:" + hashlib.sha256(new.key.encode()).hexdigest()
    rendered = KeysDocument(keys=[new.entry]).to_json()
    secret = new.key.split("_", 2)[2]
    assert secret not in rendered
    assert new.key not in rendered


def test_generate_key_avoids_taken_ids(monkeypatch):
    ids = iter(["aaaaaaaaaaaa", "bbbbbbbbbbbb"])
    monkeypatch.setattr("churn_authorizer.keys.secrets.token_hex", lambda _: next(ids))
    new = generate_key([Scope.ADMIN], taken_ids=frozenset({"aaaaaaaaaaaa"}))
    assert new.entry.id == "bbbbbbbbbbbb"


def test_generate_key_rejects_empty_scopes():
    with pytest.raises(ValueError, match="at least one scope"):
        generate_key([])


def test_verify_returns_entry_for_the_right_key():
    issued = issue(Scope.PREDICT)
    store = KeyStore.from_document(KeysDocument(keys=[issued.entry]))
    assert store.verify(issued.key) == issued.entry


@pytest.mark.parametrize(
    "mutate",
    [
        lambda k: k[:-1] + ("A" if k[-1] != "A" else "B"),  # wrong secret, right id
        lambda k: "co_000000000000_" + k.split("_", 2)[2],  # unknown id, right-shaped
        lambda k: k.upper(),  # not the format at all
        lambda k: k + "x",
        lambda k: "",
    ],
)
def test_verify_rejects_anything_but_the_exact_key(mutate):
    issued = issue(Scope.PREDICT)
    store = KeyStore.from_document(KeysDocument(keys=[issued.entry]))
    assert store.verify(mutate(issued.key)) is None


def test_verify_compares_in_constant_time(monkeypatch):
    """The stored hash is compared with hmac.compare_digest, also when the id is unknown."""
    calls: list[tuple[bytes, bytes]] = []
    real = __import__("hmac").compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr("churn_authorizer.keys.hmac.compare_digest", spy)
    issued = issue(Scope.PREDICT)
    store = KeyStore.from_document(KeysDocument(keys=[issued.entry]))
    store.verify(issued.key)
    store.verify("co_000000000000_" + issued.key.split("_", 2)[2])
    assert len(calls) == 2
    assert calls[0][1] == issued.entry.hash.encode()


def test_parse_key_id_reads_only_well_formed_keys():
    issued = issue(Scope.PREDICT)
    assert parse_key_id(issued.key) == issued.id
    assert parse_key_id("Bearer " + issued.key) is None


def test_admin_scope_includes_the_others():
    admin = issue(Scope.ADMIN).entry
    predict = issue(Scope.PREDICT).entry
    assert all(admin.allows(scope) for scope in Scope)
    assert predict.allows(Scope.PREDICT)
    assert not predict.allows(Scope.FEEDBACK)
    assert not predict.allows(Scope.ADMIN)


def test_keys_document_round_trips_through_json(tmp_path):
    issued = [issue(Scope.PREDICT, rate_limit=5), issue(Scope.ADMIN)]
    path = write_keys_file(tmp_path / "keys.json", *issued)
    store = load_keys(path)
    assert set(store.by_id) == {i.id for i in issued}
    assert store.by_id[issued[0].id].rate_limit == 5


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        '{"version": 2, "keys": []}',
        '{"keys": [{"id": "zz", "scopes": ["predict"], "hash": "sha256:00"}]}',
        '{"keys": [], "extra": 1}',
    ],
)
def test_malformed_keys_file_is_rejected(tmp_path, text):
    path = tmp_path / "keys.json"
    path.write_text(text)
    with pytest.raises(KeysFileError):
        load_keys(path)


def test_keys_file_error_does_not_echo_file_content(tmp_path):
    issued = issue(Scope.PREDICT)
    bad = KeysDocument(keys=[issued.entry]).to_json().replace('"predict"', '"superuser"')
    path = tmp_path / "keys.json"
    path.write_text(bad)
    with pytest.raises(KeysFileError) as excinfo:
        load_keys(path)
    assert issued.entry.hash not in str(excinfo.value)
    assert "superuser" not in str(excinfo.value)


def test_duplicate_key_ids_are_rejected():
    entry = issue(Scope.PREDICT).entry
    with pytest.raises(KeysFileError, match="duplicate"):
        KeysDocument.from_json(KeysDocument.model_construct(keys=[entry, entry]).to_json())


def test_missing_keys_file_raises_keys_file_error(tmp_path):
    with pytest.raises(KeysFileError, match="cannot read"):
        load_keys(tmp_path / "absent.json")


def test_keys_file_reloads_when_the_file_changes(tmp_path):
    first, second = issue(Scope.PREDICT), issue(Scope.FEEDBACK)
    path = write_keys_file(tmp_path / "keys.json", first)
    keys = KeysFile(path, reload_interval_s=0)
    assert keys.refresh() == "reloaded"
    assert keys.refresh() == "unchanged"
    write_keys_file(path, second)
    os.utime(path, ns=(1, 1))  # a different mtime even on coarse-clock filesystems
    assert keys.refresh() == "reloaded"
    assert set(keys.store.by_id) == {second.id}


def test_keys_file_keeps_previous_keys_when_new_file_is_broken(tmp_path):
    issued = issue(Scope.PREDICT)
    path = write_keys_file(tmp_path / "keys.json", issued)
    keys = KeysFile(path, reload_interval_s=0)
    keys.refresh()
    path.write_text("{broken")
    assert keys.refresh() == "failed"
    assert keys.last_error is not None
    assert keys.store.verify(issued.key) == issued.entry


def test_keys_file_waits_for_reload_interval(tmp_path):
    path = write_keys_file(tmp_path / "keys.json", issue(Scope.PREDICT))
    keys = KeysFile(path, reload_interval_s=3600)
    assert keys.refresh(force=True) == "reloaded"
    write_keys_file(path, issue(Scope.ADMIN))
    assert keys.refresh() == "unchanged"


def test_hash_key_is_stable_and_prefixed():
    assert hash_key("co_x") == hash_key("co_x")
    assert hash_key("co_x").startswith("sha256:")
