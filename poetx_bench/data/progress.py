"""Progress lines on stderr that appear only when work takes a while (quiet for small/cached data)."""

from __future__ import annotations

import sys
import time


class Progress:
    """Report `done/total` bytes to stderr after `delay` seconds, then every `every` seconds.

    Stays silent for fast work so tests and cached runs print nothing; stdout is never touched because
    the CLI and harness may parse it.
    """

    def __init__(self, label: str, total: int | None = None, delay: float = 3.0, every: float = 10.0):
        self.label, self.total, self.delay, self.every = label, total, delay, every
        self.start = time.monotonic()
        self.last = None  # time of the last printed line

    def update(self, done: int) -> None:
        now = time.monotonic()
        if now - self.start < self.delay or (self.last is not None and now - self.last < self.every):
            return
        self.last = now
        pct = f" ({100.0 * done / self.total:.0f}%)" if self.total else ""
        print(f"[poetx_bench.data] {self.label}: {done / 1e6:.1f} MB{pct}, {now - self.start:.0f} s",
              file=sys.stderr, flush=True)

    def finish(self, what: str = "done") -> None:
        if self.last is not None:
            print(f"[poetx_bench.data] {self.label}: {what} in {time.monotonic() - self.start:.1f} s",
                  file=sys.stderr, flush=True)


def note(message: str) -> None:
    print(f"[poetx_bench.data] {message}", file=sys.stderr, flush=True)
