"""Token ids -> text as it is generated: pieces that are safe to show now.

A piece is held back while it could still change: a byte-level BPE token may carry only part of
a UTF-8 character (the decoder shows U+FFFD until the rest arrives), and text that could be the
start of a stop string is not shown until it turns out not to be one. Generation ends at the
first stop string, which is not part of the text.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

REPLACEMENT = "\ufffd"  # what a decoder shows for an incomplete UTF-8 sequence


class TextAssembler:
    def __init__(self, decode: Callable[[list[int]], str], stop: Sequence[str] = ()):
        self.decode, self.stop = decode, [s for s in stop if s]
        self.ids: list[int] = []
        self.committed, self.committed_text = 0, ""  # ids[:committed] decode to committed_text
        self.shown = 0  # characters of the text handed out so far
        self.text, self.stopped = "", False

    def push(self, token: int) -> str:
        """Add one generated token; return the new text that is safe to show (maybe "")."""
        if self.stopped:
            return ""
        self.ids.append(token)
        self.text = self.committed_text + self.decode(self.ids[self.committed :])
        end = self._stop_at()
        if end is not None:
            self.text, self.stopped = self.text[:end], True
            return self._show(end)
        safe = len(self.text) - self._held_back()
        if safe == len(self.text):  # a clean boundary: later tokens decode on their own
            self.committed, self.committed_text = len(self.ids), self.text
        return self._show(safe)

    def finish(self) -> str:
        """The rest of the text at the end of generation (a held-back prefix of a stop string,
        or the U+FFFD of a character the model never completed)."""
        return self._show(len(self.text))

    def _show(self, upto: int) -> str:
        piece = self.text[self.shown : upto] if upto > self.shown else ""
        self.shown = max(self.shown, upto)
        return piece

    def _stop_at(self) -> int | None:
        longest = max((len(s) for s in self.stop), default=0)
        start = max(0, self.shown - longest + 1)  # a stop string may straddle what was shown
        found = [i for i in (self.text.find(s, start) for s in self.stop) if i >= 0]
        return min(found) if found else None

    def _held_back(self) -> int:
        """Characters at the end of the text not to show yet."""
        text = self.text
        partial = len(text) - len(text.rstrip(REPLACEMENT))
        if partial:
            return partial
        for n in range(min(len(text), max((len(s) for s in self.stop), default=1) - 1), 0, -1):
            if any(s.startswith(text[-n:]) for s in self.stop):
                return n
        return 0
