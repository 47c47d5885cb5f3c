"""Detokenization helpers shared by backends."""

from __future__ import annotations

import codecs
from collections.abc import Callable


class Utf8Stream:
    """Turns token bytes into whole characters; a split character waits for its rest."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, data: bytes) -> str:
        return self._decoder.decode(data)

    def flush(self) -> str:
        return self._decoder.decode(b"", final=True)


class IncrementalText:
    """Streams text from a tokenizer that decodes whole token lists only (Hugging Face).

    Each new token decodes together with a few tokens before it, so word-boundary
    spaces (SentencePiece) and characters split across tokens (byte-level BPE) come out
    right; text ending in a replacement character waits for the next token.
    """

    def __init__(self, decode: Callable[[list[int]], str]) -> None:
        self._decode = decode
        self._tokens: list[int] = []
        self._prefix = 0  # start of the decoding window
        self._read = 0  # tokens whose text has been emitted

    def feed(self, token: int) -> str:
        self._tokens.append(token)
        window = self._tokens[self._prefix :]
        before = self._decode(self._tokens[self._prefix : self._read])
        text = self._decode(window)
        if len(text) <= len(before) or text.endswith("\ufffd"):
            return ""
        del self._tokens[: self._read]  # keep only the window's tokens
        self._prefix, self._read = 0, len(self._tokens)
        return text[len(before) :]

    def flush(self) -> str:
        before = self._decode(self._tokens[self._prefix : self._read])
        text = self._decode(self._tokens[self._prefix :])
        self._tokens.clear()
        self._prefix = self._read = 0
        return text[len(before) :]
