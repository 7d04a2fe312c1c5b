"""Every name a spec may choose comes from one registry: the spec accepts exactly its names, each loads."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tuner import SpecError, parse_spec
from tuner.registry import ACTIVATIONS, BACKENDS, MODEL_KINDS, OPTIMIZERS, PRUNERS, SAMPLERS, Registry
from tuner.spec import JobSpec

Tiny = Callable[..., dict[str, Any]]

# registry, the spec's part and field that names one of its entries
FIELDS: list[tuple[Registry[Any], str, str]] = [
    (SAMPLERS, "search", "sampler"),
    (PRUNERS, "search", "pruner"),
    (BACKENDS, "search", "backend"),
    (ACTIVATIONS, "model", "activation"),
    (OPTIMIZERS, "training", "optimizer"),
    (MODEL_KINDS, "model", "kind"),
]
IDS = [f"{part}.{field}" for _, part, field in FIELDS]
KIND_NEEDS: dict[str, dict[str, Any]] = {  # what a model kind needs beside its name (a None removes the key)
    "mlp": {}, "linear": {"hidden": None}, "cnn": {"hidden": None}, "module": {"factory": "m:f", "hidden": None}}


@pytest.mark.parametrize(("names", "part", "field"), FIELDS, ids=IDS)
def test_the_spec_accepts_every_name_of_the_registry(tiny: Tiny, names: Registry[Any], part: str,
                                                     field: str) -> None:
    for name in names:
        over = {field: name} | KIND_NEEDS.get(name, {}) if field == "kind" else {field: name}
        spec = JobSpec.model_validate(tiny(**{part: over}))
        assert getattr(getattr(spec, part), field) == name


@pytest.mark.parametrize(("names", "part", "field"), FIELDS, ids=IDS)
def test_the_spec_rejects_a_name_outside_the_registry_and_lists_the_valid_ones(
        tiny: Tiny, names: Registry[Any], part: str, field: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(tiny(**{part: {field: "nope"}}))
    assert {i.field: i.message for i in info.value.issues} == {
        f"{part}.{field}": f"unknown {names.what} 'nope'; valid {names.what}s are: {', '.join(names.names)}"}


@pytest.mark.parametrize(("names", "part", "field"), FIELDS, ids=IDS)
def test_every_name_loads_its_factory(names: Registry[Any], part: str, field: str) -> None:
    for name in names:
        assert callable(names.load(name)), name
    with pytest.raises(ValueError, match=f"unknown {names.what} 'nope'; valid {names.what}s are: "):
        names.load("nope")
