"""Files re-read when they change: certificates and token lists rotate without a restart.

Callers ask `due()` on their own path (a new connection, a request); the files are stat'ed at most
every `interval` seconds, so the check costs nothing per request. A change is a different
(inode, size, mtime) of any file: an atomic rename and a Kubernetes Secret's symlink swap both show.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence

Stamp = tuple[tuple[int, int, int] | None, ...]


def _stamp(paths: Sequence[str]) -> Stamp:
    out: list[tuple[int, int, int] | None] = []
    for p in paths:
        try:
            st = os.stat(p)
            out.append((st.st_ino, st.st_size, st.st_mtime_ns))
        except OSError:
            out.append(None)  # gone for a moment (mid-rotation): a change, read again next time
    return tuple(out)


class WatchedFiles:
    def __init__(self, paths: Sequence[str], interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.paths = list(paths)
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._seen = _stamp(self.paths)
        self._checked = clock()

    def due(self) -> bool:
        """True once after the files changed (checked at most every `interval`; never when it is 0)."""
        if self.interval <= 0:
            return False
        now = self._clock()
        if now - self._checked < self.interval:
            return False
        with self._lock:
            if now - self._checked < self.interval:
                return False
            self._checked = now
            stamp = _stamp(self.paths)
            if stamp == self._seen:
                return False
            self._seen = stamp
            return True

    def retry_soon(self) -> None:
        """The new files did not load (half-written rotation): look again at the next check."""
        with self._lock:
            self._seen = ()
