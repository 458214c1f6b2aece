"""The shape of a JSON document, measured before it is parsed: nesting depth and number of values.

A parser turns bytes into objects at a ratio that depends on the shape: a customer record grows about
four times, but `[[],[],...]` grows twenty times (every `[],` is a 56-byte list) and 1,000 nested arrays
reach the parser's recursion limit. orjson has no options for either (it stops at a fixed depth of 1024,
`orjson/src/deserialize/error.rs` "Recursion limit reached"), and the standard library's parser has none
either, so the detector measures the shape first and refuses a body that is too deep or holds too many
values, in C-speed passes of numpy over the bytes.

Hand-written because no well-kept library does this cheaply: streaming parsers (ijson) walk every token
in Python. The scan only needs to know which brackets and separators lie outside strings: a quote opens
or closes a string unless an odd run of backslashes precedes it. It does not validate the JSON (the
parser does that next); for any valid document its counts are exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

QUOTE, BACKSLASH = ord('"'), ord("\\")
STRUCTURE = tuple(ord(c) for c in "[]{},:")
CHUNK_BYTES = 1 << 20  # scanned a megabyte at a time: the work arrays stay a few MB whatever the body
Positions = npt.NDArray[np.intp]


@dataclass(frozen=True)
class JsonShape:
    """`depth`: deepest nesting of arrays and objects (a scalar document is 0); `values`: an upper bound
    of the values the parsed document holds (containers, scalars and object keys; exact but for `[]`)."""

    depth: int
    values: int


@dataclass(frozen=True)
class JsonLimits:
    """The shape a service accepts in a body: nesting depth, and values (which bound the parsed size)."""

    max_depth: int
    max_values: int


def values_at_most(body: bytes) -> int:
    """An upper bound of `json_shape(body).values` from four byte counts at C speed: brackets and
    separators inside strings count too, so a body within a limit by this bound needs no scan."""
    return body.count(b"[") + body.count(b"{") + body.count(b",") + body.count(b":") + 1


@dataclass
class _Carry:
    """What one chunk hands to the next: the open nesting level, whether a string is open, and the length
    of a run of backslashes ending the chunk."""

    level: int = 0
    in_string: bool = False
    backslashes: int = 0


def _unescaped_quotes(chunk: npt.NDArray[np.uint8], carry: _Carry) -> Positions:
    """Positions of the quotes that open or close a string: those after an even run of backslashes."""
    quotes = np.flatnonzero(chunk == QUOTE)
    slashes = np.flatnonzero(chunk == BACKSLASH)
    if slashes.size == 0:
        if carry.backslashes % 2 and quotes.size and quotes[0] == 0:
            quotes = quotes[1:]
        carry.backslashes = 0
        return quotes
    # Start position of the run each backslash belongs to (the carried run continues at position 0).
    starts = np.ones(slashes.size, dtype=bool)
    starts[1:] = np.diff(slashes) != 1
    run_start = slashes[starts][np.cumsum(starts) - 1]
    last = np.searchsorted(slashes, quotes) - 1  # the last backslash before each quote
    adjacent = (last >= 0) & (slashes[np.maximum(last, 0)] == quotes - 1)
    runs = np.where(adjacent, quotes - run_start[np.maximum(last, 0)], 0)
    runs = runs + np.where(adjacent & (run_start[np.maximum(last, 0)] == 0), carry.backslashes, 0)
    runs = np.where(quotes == 0, carry.backslashes, runs)
    ending = slashes[-1] == chunk.size - 1
    trailing = int(chunk.size - run_start[-1]) + (carry.backslashes if run_start[-1] == 0 else 0)
    carry.backslashes = trailing if ending else 0
    unescaped: Positions = quotes[runs % 2 == 0]
    return unescaped


def _scan_chunk(chunk: npt.NDArray[np.uint8], carry: _Carry) -> tuple[int, int]:
    """(deepest level, openers and separators) of one chunk; updates `carry` for the next."""
    quotes = _unescaped_quotes(chunk, carry)
    mask = chunk == STRUCTURE[0]
    for code in STRUCTURE[1:]:
        mask |= chunk == code
    structure = np.flatnonzero(mask)
    # A structural character lies outside strings when an even number of string quotes precede it.
    before = np.searchsorted(quotes, structure) + int(carry.in_string)
    characters = chunk[structure[before % 2 == 0]]
    carry.in_string = bool((int(carry.in_string) + quotes.size) % 2)
    opens = (characters == ord("[")) | (characters == ord("{"))
    closes = (characters == ord("]")) | (characters == ord("}"))
    levels = carry.level + np.cumsum(opens.astype(np.int32) - closes.astype(np.int32), dtype=np.int32)
    deepest = int(levels.max()) if levels.size else carry.level
    carry.level = int(levels[-1]) if levels.size else carry.level
    return deepest, int(characters.size - np.count_nonzero(closes))


def json_shape(body: bytes) -> JsonShape:
    """Depth and value count of a JSON document, without parsing it (linear time, bounded memory)."""
    view = np.frombuffer(body, dtype=np.uint8)
    carry = _Carry()
    depth = 0
    counted = 0
    for start in range(0, view.size, CHUNK_BYTES):
        deepest, found = _scan_chunk(view[start : start + CHUNK_BYTES], carry)
        depth = max(depth, deepest)
        counted += found
    # Every value but the first follows a separator (`,` between items, `:` before a member's value) or
    # opens a container; keys are counted through their `:`.
    return JsonShape(depth=depth, values=counted + (1 if view.size else 0))


_NOT_BRACKETS = bytes(code for code in range(256) if code not in b"[]{}")
_STEP = np.zeros(256, dtype=np.int32)
_STEP[[ord("["), ord("{")]] = 1
_STEP[[ord("]"), ord("}")]] = -1
_PYTHON_LOOP_MAX = 2048


def json_depth(body: bytes) -> int:
    """`json_shape(body).depth`, cheaper for a body without backslashes (every request the transformer
    serves): without escapes, the text between every other quote is outside strings, so bytes.split and
    bytes.translate (C speed) leave only the structural brackets, whose running level is the depth."""
    if b"\\" in body:
        return json_shape(body).depth
    brackets = b"".join(body.split(b'"')[::2]).translate(None, _NOT_BRACKETS)
    if len(brackets) > _PYTHON_LOOP_MAX:
        levels = np.cumsum(_STEP[np.frombuffer(brackets, dtype=np.uint8)])
        return max(0, int(levels.max()))
    level = deepest = 0
    for code in brackets:  # a few hundred brackets: cheaper than numpy's per-call overhead
        if code == 0x5B or code == 0x7B:  # noqa: PLR1714 - no tuple built per bracket
            level += 1
            deepest = max(deepest, level)
        else:
            level -= 1
    return deepest
