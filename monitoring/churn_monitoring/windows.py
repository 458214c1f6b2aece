"""Windows of live customers for the drift tests: closed by size, or by age once they hold enough rows.

A window is tested as a whole against the reference sample: too small and the tests cannot see anything,
too old and drift is reported long after it began. `size` bounds the first, `max_age` the second, and
`min_size` keeps a quiet hour from producing a window too small to test.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from churn_monitoring.join import LoggedPrediction

_window_ids = itertools.count(1)


@dataclass
class Window:
    """Customers in columnar form (what `DriftDetector.test` takes), with the model's probabilities."""

    columns: dict[str, list[Any]]
    probabilities: list[float]
    model_versions: Counter[str] = field(default_factory=Counter)
    opened_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    closed_at: datetime | None = None
    number: int = field(default_factory=lambda: next(_window_ids))

    def __len__(self) -> int:
        return len(self.probabilities)

    @property
    def model_version(self) -> str:
        """The version that answered most of the window's customers."""
        return self.model_versions.most_common(1)[0][0] if self.model_versions else "unknown"


class WindowBuffer:
    """Accumulates logged predictions into windows; not thread-safe (used from the event loop)."""

    def __init__(
        self,
        fields: Sequence[str],
        *,
        size: int,
        min_size: int,
        max_age_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if min_size > size:
            raise ValueError(f"window_min_size {min_size} is larger than window_size {size}")
        self.fields = tuple(fields)
        self.size = size
        self.min_size = min_size
        self.max_age = max_age_seconds
        self._clock = clock
        self._current = self._new()
        self._started = clock()

    def _new(self) -> Window:
        return Window(columns={name: [] for name in self.fields}, probabilities=[])

    def __len__(self) -> int:
        return len(self._current)

    def add(self, predictions: Sequence[LoggedPrediction]) -> list[Window]:
        """Add rows; returns every window they filled (a large call can fill more than one)."""
        closed = []
        for prediction in predictions:
            if not self._current:
                self._started = self._clock()
            for name in self.fields:
                self._current.columns[name].append(prediction.features.get(name))
            self._current.probabilities.append(prediction.probability)
            self._current.model_versions[prediction.model_version] += 1
            if len(self._current) >= self.size:
                closed.append(self._close())
        return closed

    def due(self) -> Window | None:
        """The current window when it is old enough and large enough to test, else None."""
        if len(self._current) >= self.min_size and self._clock() - self._started >= self.max_age:
            return self._close()
        return None

    def _close(self) -> Window:
        window = self._current
        window.closed_at = datetime.now(UTC)
        self._current = self._new()
        self._started = self._clock()
        return window
