"""Stop strings on streamed text: text that could still become a stop string is held back,
so a client never sees any part of the stop string."""
from __future__ import annotations


class StopStringMatcher:
    def __init__(self, stops: list[str] | tuple[str, ...]):
        for i, s in enumerate(stops):
            if not s:
                raise ValueError(f"stop[{i}]: empty stop string")
        self.stops = tuple(stops)
        self._held = ""
        self.stopped = False

    def push(self, text: str) -> str:
        """Add streamed text; returns what may be shown now. After a stop string is seen,
        `stopped` is True and everything from the stop string on is dropped."""
        if self.stopped or not self.stops:
            return "" if self.stopped else text
        buf = self._held + text
        cut = min((i for i in (buf.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped, self._held = True, ""
            return buf[:cut]
        keep = _longest_partial(buf, self.stops)
        self._held = buf[len(buf) - keep:] if keep else ""
        return buf[:len(buf) - keep]

    def flush(self) -> str:
        """End of stream: held-back text was not a stop string after all."""
        out, self._held = ("" if self.stopped else self._held), ""
        return out


def _longest_partial(buf: str, stops: tuple[str, ...]) -> int:
    """Length of the longest suffix of `buf` that is a proper prefix of some stop string."""
    best = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(buf)), best, -1):
            if buf.endswith(s[:n]):
                best = n
                break
    return best
