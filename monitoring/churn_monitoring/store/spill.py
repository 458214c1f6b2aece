"""The spill directory: rows the database could not take yet, as JSON lines on disk, bounded in bytes.

`spill-current.jsonl` takes appends; the writer renames it to `replay-<ns>.jsonl` and replays those
files oldest first, reading them a line at a time (constant memory, whatever their size) and remembering
how far it got, so that a database failing in the middle of a file resumes there instead of starting
over. `rejected.jsonl` holds rows the database refused for what they are. All three count against one
bound (`max_bytes`); what does not fit is dropped and counted, never written past the bound.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

SPILL_FILE = "spill-current.jsonl"
REPLAY_GLOB = "replay-*.jsonl"
REJECTED_FILE = "rejected.jsonl"
MAX_LINE_BYTES = 1 << 20  # a row is a few KB (field values are cut to 64 characters); longer is corrupt


@dataclass(frozen=True)
class Line:
    """One line read back: its bytes (without the newline), or None when it was cut off as corrupt."""

    data: bytes | None
    end: int  # offset just after the line


class SpillDirectory:
    """Not thread-safe: the writer calls it under its own lock."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        directory.mkdir(parents=True, exist_ok=True)
        self.bytes = sum(path.stat().st_size for path in directory.glob("*.jsonl"))
        self.rows = sum(count_lines(path) for path in self.replay_files(include_current=True))

    def replay_files(self, *, include_current: bool = False) -> list[Path]:
        files = sorted(self.directory.glob(REPLAY_GLOB))
        current = self.directory / SPILL_FILE
        if include_current and current.exists():
            files.append(current)
        return files

    def room(self) -> int:
        return max(self.max_bytes - self.bytes, 0)

    def append(self, lines: Sequence[bytes], *, sync: bool = False, name: str = SPILL_FILE) -> int:
        """Append the lines that fit in the bound (in order); returns how many did. The receive path does
        not fsync: rows it would protect against a machine crash are no safer in the memory queue
        either; shutdown does."""
        room = self.room()
        fitting = 0
        for line in lines:
            if len(line) > room:
                break
            room -= len(line)
            fitting += 1
        if not fitting:
            return 0
        with (self.directory / name).open("ab") as handle:
            handle.writelines(lines[:fitting])
            handle.flush()
            if sync:
                os.fsync(handle.fileno())
        self.bytes += sum(len(line) for line in lines[:fitting])
        if name == SPILL_FILE:
            self.rows += fitting
        return fitting

    def next_replay(self) -> Path | None:
        """The oldest file to replay, after moving the current spill file aside (new rows go to a new one)."""
        current = self.directory / SPILL_FILE
        if current.exists():
            current.rename(self.directory / f"replay-{time.time_ns()}.jsonl")
        files = self.replay_files()
        return files[0] if files else None

    def finished(self, path: Path) -> None:
        size = path.stat().st_size
        path.unlink()
        self.bytes = max(self.bytes - size, 0)


def read_lines(path: Path, offset: int) -> Iterator[Line]:
    """Lines of a spill file from `offset`, one at a time; a line longer than MAX_LINE_BYTES (a torn or
    foreign file) is skipped to its end and reported as None."""
    with path.open("rb") as handle:
        handle.seek(offset)
        while True:
            data = handle.readline(MAX_LINE_BYTES)
            if not data:
                return
            if not data.endswith(b"\n") and len(data) == MAX_LINE_BYTES:
                while (rest := handle.readline(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
                    pass
                yield Line(None, handle.tell())
                continue
            stripped = data.strip()
            if stripped:
                yield Line(stripped, handle.tell())


def count_lines(path: Path) -> int:
    """Rows in a spill file (its newlines), read a megabyte at a time."""
    count = 0
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            count += block.count(b"\n")
    return count
