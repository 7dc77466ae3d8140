"""A one-line progress bar on stderr (only on a terminal unless forced), per tensor written."""
from __future__ import annotations

import sys
import time


class Bar:
    def __init__(self, enabled: bool, width: int = 30, stream=None, after_each=None):
        self.enabled, self.width, self.stream = enabled, width, stream or sys.stderr
        self.after_each = after_each   # called after every tensor written (e.g. drop mmap pages)
        self.total_items = self.total_bytes = self.items = self.bytes = 0
        self.t0 = time.monotonic()

    def start(self, items: int, total_bytes: int) -> None:
        self.total_items, self.total_bytes, self.items, self.bytes = items, total_bytes, 0, 0
        self.t0 = time.monotonic()

    def advance(self, name: str, nbytes: int) -> None:
        self.items += 1
        self.bytes += nbytes
        if self.after_each is not None:
            self.after_each()
        if not self.enabled:
            return
        frac = self.bytes / self.total_bytes if self.total_bytes else self.items / max(self.total_items, 1)
        filled = int(frac * self.width)
        line = (f"\r[{'#' * filled}{'.' * (self.width - filled)}] {frac * 100:5.1f}% "
                f"{self.items}/{self.total_items} tensors {self.bytes / 2**30:6.2f}/"
                f"{self.total_bytes / 2**30:.2f} GiB {time.monotonic() - self.t0:6.1f}s {name[:40]:<40}")
        self.stream.write(line)
        self.stream.flush()

    def finish(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()
