"""The one error body of every ChurnOps service: KServe's `{"error": "<message>"}` plus a stable `code`.

Clients branch on `code` (a closed set of snake_case words, also the `reason` label of the services'
refusal counters) and show `error` to a person. Messages may quote what the client sent (a field name, a
value), so they are cut to a bound here: an attacker-chosen 10 MB input name must not come back as a 10 MB
answer or log line.
"""

from __future__ import annotations

from typing import Any

import orjson

MAX_MESSAGE_CHARS = 2000
MAX_QUOTED_CHARS = 60


def quoted(value: Any, limit: int = MAX_QUOTED_CHARS) -> str:
    """`repr(value)` cut to `limit` characters: how a message names something the client sent."""
    text = repr(value) if not isinstance(value, str) or len(value) <= limit * 4 else repr(value[: limit * 4])
    return text if len(text) <= limit else text[: limit - 3] + "..."


def bounded(message: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """A message cut to `limit` characters, saying so."""
    return message if len(message) <= limit else message[: limit - 14] + " ... (cut)"


def error_body(code: str, message: str) -> dict[str, str]:
    """The body of every 4xx/5xx answer: `{"error": message, "code": code}`."""
    return {"error": bounded(message), "code": code}


def error_json(code: str, message: str) -> bytes:
    """`error_body` serialised, for handlers that write bytes themselves."""
    return orjson.dumps(error_body(code, message))
