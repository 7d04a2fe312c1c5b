"""regtune's error hierarchy: every error says which field, which rule and which value."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Cancelled", "DataError", "Issue", "RegtuneError", "SpecError", "TrialFailed"]


class RegtuneError(Exception):
    """Base class of every error regtune raises on purpose."""


@dataclass(frozen=True)
class Issue:
    """One broken rule: where (dotted field path), what rule, which value."""

    field: str
    message: str
    value: Any = None

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class SpecError(RegtuneError, ValueError):
    """A job spec broke one or more rules. ``issues`` lists each, field first."""

    def __init__(self, issues: list[Issue]) -> None:
        self.issues = issues
        lines = "\n".join(f"  {i}" for i in issues)
        noun = "rule" if len(issues) == 1 else "rules"
        super().__init__(f"invalid job spec ({len(issues)} {noun} broken):\n{lines}")

    @classmethod
    def one(cls, field: str, message: str, value: Any = None) -> SpecError:
        return cls([Issue(field, message, value)])


class DataError(SpecError):
    """The dataset the spec points at cannot be used (missing file, bad column, ...)."""


class TrialFailed(RegtuneError):
    """A trial could not finish (a NaN or infinite loss); the study goes on."""


class Cancelled(RegtuneError):
    """The job was asked to stop; raised at an epoch boundary."""
