"""Results computed elsewhere, handed to the code that would otherwise compute them.

bot/textworker.py detects languages and grades severity in its own process, one slice of
mail ahead; decide() still calls detect() and grade() as if it computed them, and they
answer from what was given for exactly that input, or compute it themselves.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any


class Given:
    """Answers by input, valid within a `with given(...)` block of this thread."""

    def __init__(self, name: str) -> None:
        self._answers: ContextVar[Mapping[Hashable, Any]] = ContextVar(name, default={})

    def get(self, key: Hashable) -> Any | None:
        return self._answers.get().get(key)

    @contextmanager
    def given(self, answers: Mapping[Hashable, Any]) -> Iterator[None]:
        token = self._answers.set(answers)
        try:
            yield
        finally:
            self._answers.reset(token)
