"""What every HTTP service of ours (detector, authorizer) sets the same way for uvicorn."""

from __future__ import annotations

from typing import Any

from pydantic import Field

KEEP_ALIVE_TIMEOUT_S = 65  # KServe's servers use the same (kserve/model_server.py, --timeout_keep_alive)


def keep_alive_timeout_field() -> Any:
    """The `keep_alive_timeout_s` setting: uvicorn's 5 s default closed pooled connections just as clients
    reused them (the soak's feedback errors); a server must outlast its clients' and proxies' idle timeouts."""
    return Field(
        default=KEEP_ALIVE_TIMEOUT_S,
        ge=1,
        description=(
            "seconds an idle keep-alive connection stays open; longer than clients' and proxies' idle "
            "timeouts (60 s is common), so a client never reuses a connection the server is closing "
            "(uvicorn's 5 s default lost feedback posts under load); KServe's servers use 65 too"
        ),
    )
