"""A cache keyed by the identity of objects: rules are pydantic models, costly to hash (or
unhashable, with their dicts), and read once per mail, so the same objects come back."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any


class ByIdentity:
    """`build(*objects, *extra)`, remembered for those very objects (kept alive while
    cached, so that their ids cannot be reused) and equal `extra` values. Bounded: past
    `limit` entries it starts afresh."""

    def __init__(self, build: Callable[..., Any], limit: int = 1024) -> None:
        self._build = build
        self._limit = limit
        self._items: dict[tuple, tuple[tuple, Any]] = {}

    def __call__(self, *objects: Any, extra: tuple[Hashable, ...] = ()) -> Any:
        key = (*map(id, objects), *extra)
        hit = self._items.get(key)
        if hit is not None and hit[0] == objects:  # the same objects: `is`, before any __eq__
            return hit[1]
        value = self._build(*objects, *extra)
        if len(self._items) >= self._limit:
            self._items.clear()
        self._items[key] = (objects, value)
        return value
