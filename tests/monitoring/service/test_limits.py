"""The bounds themselves: the JSON shape scan agrees with the parser on every document, and the budget of
body bytes in flight makes requests wait, then refuses them with a 503 and Retry-After."""

from __future__ import annotations

import asyncio
import json

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from churn_core import jsonshape
from churn_core.jsonshape import json_shape
from churn_monitoring.service.limits import ByteBudget, Refusal

# Text with the characters the scan must not be fooled by inside strings.
tricky_text = st.text(alphabet=st.sampled_from(list('ab"\\[]{},: \n\t')), max_size=12)
documents = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | tricky_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(tricky_text, inner, max_size=4),
    max_leaves=40,
)


def parsed_shape(document: object) -> tuple[int, int]:
    """(depth, values) of a parsed document, counted the way JsonShape defines them."""
    if isinstance(document, list):
        kids = [parsed_shape(item) for item in document]
        return 1 + max((d for d, _ in kids), default=0), 1 + sum(v for _, v in kids)
    if isinstance(document, dict):
        kids = [parsed_shape(item) for item in document.values()]
        return 1 + max((d for d, _ in kids), default=0), 1 + len(document) + sum(v for _, v in kids)
    return 0, 1


def empty_containers(document: object) -> int:
    if isinstance(document, list):
        return (not document) + sum(empty_containers(item) for item in document)
    if isinstance(document, dict):
        return (not document) + sum(empty_containers(item) for item in document.values())
    return 0


@settings(max_examples=200, deadline=None)
@given(document=documents, chunk=st.sampled_from([1, 2, 3, 7, 1 << 20]))
def test_shape_scan_counts_what_the_parser_builds(document, chunk):
    text = json.dumps(document).encode()
    orjson.loads(text)  # valid JSON, as the parser sees it
    depth, values = parsed_shape(document)
    default = jsonshape.CHUNK_BYTES
    jsonshape.CHUNK_BYTES = chunk  # chunk edges inside strings, escapes and runs of backslashes
    try:
        shape = json_shape(text)
    finally:
        jsonshape.CHUNK_BYTES = default
    assert shape.depth == depth
    # An empty container counts one value too many (its `[` as if it opened an item): an upper bound.
    assert shape.values == values + empty_containers(document)


def test_shape_scan_is_not_fooled_by_escaped_quotes_and_brackets_in_strings():
    text = json.dumps({"a": ['x\\"]]]]', "\\\\", '"[[[['], "b": "}}}}"}).encode()
    assert json_shape(text).depth == 2


def test_budget_makes_a_request_wait_for_room_then_refuses_with_retry_after():
    async def scenario() -> list[str]:
        budget = ByteBudget(total=100, wait_seconds=0.2)
        events: list[str] = []

        async def holder() -> None:
            async with budget.reserve(80):
                events.append("held")
                await asyncio.sleep(0.1)
            events.append("released")

        async def waiter() -> None:
            await asyncio.sleep(0.01)
            async with budget.reserve(50):
                events.append("waited and ran")

        await asyncio.gather(holder(), waiter())
        async with budget.reserve(90):
            with pytest.raises(Refusal) as refused:
                async with budget.reserve(20):
                    pass
        assert refused.value.status == 503
        assert refused.value.code == "detector_busy"
        assert refused.value.retry_after == 1
        async with budget.reserve(500):  # larger than the whole budget: runs alone
            events.append("alone")
        assert budget.used == 0
        return events

    assert asyncio.run(scenario()) == ["held", "released", "waited and ran", "alone"]
