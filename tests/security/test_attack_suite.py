"""The attack suite (issue 10's proof): hostile and malformed requests against ONE real local stack (MLServer
predictor, transformer, detector, the real authorizer with the real Redis, behind the mesh stand-in),
each with the exact status and error `code` it must get, and no 5xx anywhere.

The cases live in tests/security/attacks.py (what each sends, where, and why there).

    .venv/bin/pytest tests/security/test_attack_suite.py -q --durations=5
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from churn_authorizer.keys import KeysDocument, NewKey, generate_key
from churn_authorizer.scopes import Scope
from scripts.load.localstack import LocalStack, StackOptions, local_stack
from scripts.load.payloads import v2_body
from tests.security.attacks import CASES, INFER, Answer, Attack, customers, presented, send
from tests.support.services import ensure_redis, predictor_python, unavailable


@dataclass
class Suite:
    stack: LocalStack
    keys: dict[str, str]
    # (case id, status): every answer of the module
    answers: list[tuple[str, int]] = field(default_factory=list)


def _keys() -> dict[str, NewKey]:
    return {
        "predict": generate_key([Scope.PREDICT], name="attack-predict"),
        "feedback": generate_key([Scope.FEEDBACK], name="attack-feedback"),
        "metrics": generate_key([Scope.METRICS], name="attack-metrics"),
        "admin": generate_key([Scope.ADMIN], name="attack-admin"),
        "limited": generate_key([Scope.PREDICT], name="attack-limited", rate_limit=2),
        "revoked": generate_key([Scope.PREDICT], name="attack-revoked"),
    }


def _revoke(stack: LocalStack, key: NewKey) -> None:
    """Prove the key works, then take it out of the keys file as an operator revokes one."""
    good = v2_body(customers())
    answer = send(stack.serving_url, "POST", INFER, {"authorization": f"Bearer {key.key}"}, good)
    assert answer.status == 200, answer.body
    path = stack.scratch / "keys.json"
    document = KeysDocument.from_json(path.read_text(encoding="utf-8"))
    document.keys = [entry for entry in document.keys if entry.id != key.entry.id]
    path.write_text(document.to_json(), encoding="utf-8")


@pytest.fixture(scope="module")
def suite(trained_model, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    python = predictor_python()
    if not (python.parent / "mlserver").exists():
        unavailable(f"mlserver is not installed next to {python}")
    ensure_redis()
    keys = _keys()
    options = StackOptions(
        workers=1,
        # The detector from this venv on the scipy backend: the same service, a faster start than alibi's.
        detector_python=Path(sys.executable),
        detector_env={"CHURNOPS_DETECTOR_DRIFT_BACKEND": "scipy"},
        authorizer=True,
        authorizer_env={"CHURNOPS_AUTHORIZER_KEYS_RELOAD_INTERVAL_S": "0"},  # a revocation counts at once
        extra_keys=tuple(issued.entry for issued in keys.values()),
    )
    scratch = tmp_path_factory.mktemp("attack-stack")
    with local_stack(trained_model.artefact, trained_model.version, scratch, options) as stack:
        _revoke(stack, keys["revoked"])
        presented_keys = {name: issued.key for name, issued in keys.items()}
        presented_keys["forged"] = generate_key([Scope.ADMIN]).key  # well formed, never issued
        presented_keys["garbage"] = "not-a-key"
        yield Suite(stack, presented_keys)


def _params() -> list[object]:
    return [pytest.param(case, id=f"{case.service}:{case.id}") for case in CASES]


def _base(suite: Suite, case: Attack) -> str:
    stack = suite.stack
    return {
        "gateway": stack.serving_url,
        "transformer": stack.transformer_url,
        "detector": stack.detector_direct_url,
    }[case.via]


@pytest.mark.parametrize("case", _params())
def test_attack(suite: Suite, case: Attack) -> None:
    if case.before is not None:
        case.before(suite)
    target, headers = presented(case, suite.keys[case.key] if case.key else None)
    body = case.content()
    answers: list[Answer] = []
    for _ in range(case.repeat):
        answer = send(_base(suite, case), case.method, target, headers, body, chunked=case.chunked)
        suite.answers.append((case.id, answer.status))
        answers.append(answer)
    *earlier, last = answers
    assert [a.status for a in earlier] == [200] * len(earlier), [a.body for a in earlier]
    assert last.status == case.status, last.body[:500]
    if case.code is not None:
        document = last.json()
        assert set(document) == {"error", "code"}, document
        assert document["code"] == case.code, document
    if case.check is not None:
        case.check(last, suite)


def test_cases_are_many_and_distinct() -> None:
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids))
    assert len(CASES) >= 50
    assert {case.service for case in CASES} == {"authorizer", "transformer", "detector"}


def test_no_answer_was_a_5xx(suite: Suite) -> None:
    """Runs after the cases (file order): every answer any of them got, repeats included."""
    if not suite.answers:
        pytest.skip("no case ran (selected alone)")
    failed = [(case, status) for case, status in suite.answers if status >= 500]
    assert not failed


NORMALIZATION_CORPUS = sorted(
    {case.path.split("?")[0] for case in CASES}
    | {"/a/b/..", "/a//../b", "/..", "/%2e%2e/x", "/a%5Cb", "/a/./"}
)


@pytest.mark.parametrize("raw", NORMALIZATION_CORPUS)
def test_the_gateway_normalizes_paths_as_the_mesh_model_does(raw: str) -> None:
    """The stand-in's normalization is the mesh's (tests/security/istio.py models Envoy's, documented):
    otherwise a path trick proved here could be one the mesh reads differently."""
    from scripts.load.gateway import RejectedPathError
    from scripts.load.gateway import normalize as gateway
    from tests.security.istio import RejectedError
    from tests.security.istio import normalize as mesh

    try:
        expected: str | None = mesh(raw, "DECODE_AND_MERGE_SLASHES")
    except RejectedError:
        expected = None
    try:
        got: str | None = gateway(raw)
    except RejectedPathError:
        got = None
    assert got == expected
