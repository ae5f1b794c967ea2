"""Character-exact stop strings over a stream of text deltas.

Backends stop on token boundaries at best, so the engine cuts the text itself: a stop string that begins in the
middle of a token, or spans several, is cut at its first character, and text that might still grow into a stop
string is held back from the stream until it is clear.
"""

from __future__ import annotations


class StopStringCutter:
    """Feed text deltas; get back the part that is safe to emit."""

    def __init__(self, stops: tuple[str, ...] | list[str]):
        self._stops = tuple(s for s in stops if s)
        self._longest = max((len(s) for s in self._stops), default=0)
        self._pending = ""
        self.matched: str | None = None

    @property
    def done(self) -> bool:
        return self.matched is not None

    def feed(self, delta: str) -> str:
        """Add a delta; return the text that can be emitted now. After a match, returns ''."""
        if self.done:
            return ""
        if not self._stops:
            return delta
        text = self._pending + delta
        cut = self._earliest_match(text)
        if cut is not None:
            self._pending = ""
            return text[:cut]
        keep = self._partial_suffix_length(text)
        self._pending = text[len(text) - keep :] if keep else ""
        return text[: len(text) - keep]

    def flush(self) -> str:
        """At the end of generation: whatever was held back is not a stop string after all."""
        text, self._pending = self._pending, ""
        return "" if self.done else text

    def _earliest_match(self, text: str) -> int | None:
        best: int | None = None
        for stop in self._stops:
            index = text.find(stop)
            if index != -1 and (best is None or index < best):
                best, self.matched = index, stop
        return best

    def _partial_suffix_length(self, text: str) -> int:
        """Length of the longest suffix of ``text`` that is a proper prefix of some stop string."""
        for size in range(min(len(text), self._longest - 1), 0, -1):
            tail = text[-size:]
            if any(stop.startswith(tail) for stop in self._stops):
                return size
        return 0


def cut_at_stop(text: str, stops: tuple[str, ...] | list[str]) -> tuple[str, str | None]:
    """Cut a whole text at the earliest stop string; return the text and the stop string that matched."""
    cutter = StopStringCutter(stops)
    kept = cutter.feed(text)
    return kept + cutter.flush(), cutter.matched
