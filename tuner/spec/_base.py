"""What every part of the spec shares: strict models and messages that name the field and the rule."""

from __future__ import annotations

from pydantic import AfterValidator, BaseModel, ConfigDict

from tuner.spec._errors import FIELD_MARK


def check_one_of(value: str, valid: tuple[str, ...] | list[str], what: str) -> str:
    """``value`` if it is one of ``valid``; else a ValueError that lists every valid name."""
    if value not in valid:
        raise ValueError(f"unknown {what} {value!r}; valid {what}s are: {', '.join(valid)}")
    return value


def one_of(valid: tuple[str, ...], what: str) -> AfterValidator:
    """For ``Annotated[str, one_of(...)]``: the value must be one of ``valid``; the error lists them all."""
    return AfterValidator(lambda v: check_one_of(v, valid, what))


def field_error(field: str, message: str) -> ValueError:
    """A model-level error that belongs to one field (the converter moves it there)."""
    return ValueError(f"{FIELD_MARK}{field}{FIELD_MARK}{message}")


class Strict(BaseModel):
    """The base of every part of the spec, so each rule below holds for every field, in one place.

    - unknown fields are errors, never dropped;
    - every float is finite: ``inf`` or ``NaN`` (``lr: .inf``, ``min_delta: .nan``) would train
      nothing and still let a trial "complete";
    - types are strict: ``epochs: true`` is no integer and ``standardize: 1`` no boolean
      (an int still counts as a float).
    """

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
