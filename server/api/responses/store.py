"""Recent responses kept for ``previous_response_id`` and ``GET /v1/responses/{id}``:
a bounded, least-recently-used store in memory (``store: false`` keeps nothing)."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from backends.base import ChatMessage
from server.errors import NotFound

MAX_STORED = 512


@dataclass(frozen=True, slots=True)
class Stored:
    body: dict[str, Any]  # the response object as sent
    conversation: tuple[ChatMessage, ...]  # its input (without instructions) and output


class ResponseStore:
    def __init__(self, capacity: int = MAX_STORED) -> None:
        self._capacity = capacity
        self._items: OrderedDict[str, Stored] = OrderedDict()

    def put(self, response_id: str, stored: Stored) -> None:
        self._items[response_id] = stored
        self._items.move_to_end(response_id)
        while len(self._items) > self._capacity:
            self._items.popitem(last=False)

    def get(self, response_id: str, param: str | None = None) -> Stored:
        stored = self._items.get(response_id)
        if stored is None:
            raise NotFound(
                f"response {response_id!r} is not stored here: it was sent with store: false, "
                f"or this server restarted or has since kept its {self._capacity} newer ones",
                param=param,
                code="response_not_found",
            )
        self._items.move_to_end(response_id)
        return stored

    def delete(self, response_id: str) -> None:
        self.get(response_id)
        del self._items[response_id]
