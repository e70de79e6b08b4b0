"""A tiny progress protocol so library code can report progress without a UI dependency.

The CLI passes a rich-backed implementation; tests and library callers pass nothing.
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def start(self, description: str, total: float | None) -> None:
        """Begin a unit of work of `total` steps (None when unknown)."""

    def advance(self, amount: float) -> None:
        """Report `amount` more steps done."""

    def finish(self) -> None:
        """The unit of work is over."""


class NoProgress:
    """Progress that reports nothing."""

    def start(self, description: str, total: float | None) -> None:
        pass

    def advance(self, amount: float) -> None:
        pass

    def finish(self) -> None:
        pass
