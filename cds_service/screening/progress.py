"""Progress for a long screening: a rich bar on a terminal, plain lines otherwise.

Only counts are ever shown (bytes, buckets, patients): never a patient id.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any


class Progress:
    """A phase at a time: ``start(label, total)``, ``advance(n)``, ``done()``."""

    def __init__(self, stream: IO[str] | None = None, *, bar: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.bar = self.stream.isatty() if bar is None else bar
        self._rich: Any = None
        self._task: Any = None
        self._label = ""
        self._total = 0
        self._done = 0.0
        self._last_line = 0.0

    def note(self, text: str) -> None:
        """One plain line (a phase that has no bar, or a result)."""
        if self._rich is not None:
            self._rich.console.print(text, markup=False, highlight=False)
        else:
            print(f"tpi-cds screen: {text}", file=self.stream, flush=True)

    def start(self, label: str, total: int) -> None:
        self._label, self._total, self._done = label, total, 0
        if self.bar:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
            )
            from rich.progress import Progress as RichProgress

            if self._rich is None:
                self._rich = RichProgress(
                    TextColumn("{task.description}"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TimeElapsedColumn(),
                    transient=False,
                )
                self._rich.start()
            self._task = self._rich.add_task(label, total=total)
        else:
            self._last_line = time.monotonic()
            self.note(f"{label}: 0/{total}")

    def advance(self, amount: float = 1) -> None:
        self._done += amount
        if self._rich is not None and self._task is not None:
            self._rich.update(self._task, advance=amount)
        elif time.monotonic() - self._last_line >= 5.0:
            self._last_line = time.monotonic()
            self.note(f"{self._label}: {self._done:.0f}/{self._total}")

    def done(self) -> None:
        if self._rich is not None and self._task is not None:
            self._rich.update(self._task, completed=self._total)
        else:
            self.note(f"{self._label}: {self._total}/{self._total} done")

    def close(self) -> None:
        if self._rich is not None:
            self._rich.stop()
            self._rich = None


class Silent(Progress):
    """No output at all (tests, the benchmark)."""

    def __init__(self) -> None:
        super().__init__(stream=sys.stderr, bar=False)

    def note(self, text: str) -> None:
        return None
