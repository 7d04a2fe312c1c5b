"""Limits on a whole job: grid points, dataset cells, total work, parallelism, Ray; the same for run_job."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tuner import RegtuneError, SpecError, parse_spec, run_job
from tuner.limits import Limits, check_limits, estimate_work

Tiny = Callable[..., dict[str, Any]]

GRID = {"sampler": "grid", "space": {"l2": {"low": 1e-5, "high": 1e-1, "log": True, "grid": 10},
                                     "dropout": {"low": 0.0, "high": 0.5, "grid": 5, "per_layer": True}},
        "stages": [{"name": "joint", "params": ["l2", "dropout"], "trials": 3}]}


def by_field(issues: list[Any]) -> dict[str, str]:
    return {i.field: i.message for i in issues}


def test_grid_points_are_the_product_with_per_layer_knobs_counted_per_layer(tiny: Tiny) -> None:
    spec = parse_spec(tiny(model={"hidden": [8, 8, 8]}, search=GRID))
    assert check_limits(spec, Limits(max_grid_points=10 * 5**3)) == []
    got = by_field(check_limits(spec, Limits(max_grid_points=10 * 5**3 - 1)))
    assert got == {"search.stages": "stage 'joint' spans a grid of 1250 points, but at most 1249 are "
                                              "allowed per stage (REGTUNE_MAX_GRID_POINTS); give its knobs fewer "
                                              "grid values"}


def test_generated_data_over_the_cell_limit_is_refused_at_submit(tiny: Tiny) -> None:
    spec = parse_spec(tiny(dataset={"source": "synthetic", "name": None, "n_samples": 1_000_000,
                                    "n_features": 10_000}))
    got = by_field(check_limits(spec, Limits()))
    assert got == {"dataset.n_samples": "the dataset holds 1000000 rows × 10001 columns = 10001000000 cells, but at "
                                        "most 10000000 are allowed (REGTUNE_MAX_DATA_CELLS)"}


def test_the_work_estimate_counts_retries_and_seed_reruns(tiny: Tiny) -> None:
    spec = parse_spec(tiny(report={"top_k": 20, "seeds": 20}))
    work = estimate_work(spec, rows=569, features=30, outputs=2)
    # stages of 1, 3, 3 trials may start 4n+10 each; 1 + 20 candidates re-trained with 1 + 20 seeds
    assert work.trainings == (14 + 22 + 22) + 21 * 21
    assert (work.epochs, work.steps_per_epoch, work.parameters) == (4, 6, 30 * 16 + 16 + 16 * 2 + 2)
    got = by_field(check_limits(spec, Limits(max_work=work.total - 1)))
    assert list(got) == ["training"]
    assert got["training"].startswith(f"the job's work estimate is 499 trainings (retries and seed re-runs counted) "
                                      f"× 4 epochs × 6 steps per epoch × 530 parameters = {work.total:.3g}, but at "
                                      "most")
    assert "(REGTUNE_MAX_WORK)" in got["training"]
    assert check_limits(spec, Limits(max_work=work.total)) == []


def test_parallelism_and_ray_are_the_operators_to_allow(tiny: Tiny) -> None:
    spec = parse_spec(tiny(search={"parallelism": 3}))
    assert by_field(check_limits(spec, Limits(max_parallelism=2))) == {
        "search.parallelism": "must be <= 2, the CPU cores of this runner (REGTUNE_MAX_PARALLELISM), but got 3"}
    ray = parse_spec(tiny(search={"backend": "ray"}))
    assert by_field(check_limits(ray, Limits(allow_ray=False))) == {
        "search.backend": "backend 'ray' is not allowed here (REGTUNE_ALLOW_RAY is off); use backend 'optuna'"}
    assert check_limits(ray, Limits()) == []  # regtune run allows Ray unless told otherwise


def test_limits_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"REGTUNE_MAX_GRID_POINTS": "7", "REGTUNE_MAX_DATA_CELLS": "9", "REGTUNE_MAX_WORK": "1e6",
           "REGTUNE_MAX_PARALLELISM": "3", "REGTUNE_ALLOW_RAY": "false"}
    assert Limits.from_env(env) == Limits(max_grid_points=7, max_cells=9, max_work=1e6, max_parallelism=3,
                                          allow_ray=False)
    with pytest.raises(RegtuneError, match=r"The REGTUNE_MAX_WORK environment variable must be a number > 0. "
                                           r"Got 'inf' instead."):
        Limits.from_env({"REGTUNE_MAX_WORK": "inf"})


def test_run_job_keeps_the_limits_before_it_trains(tiny: Tiny, sqlite_url: str, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    spec = parse_spec(tiny(model={"hidden": [8, 8, 8]}, search=GRID))
    monkeypatch.setenv("REGTUNE_MAX_GRID_POINTS", "100")  # regtune run: the limits come from the environment
    with pytest.raises(SpecError) as info:
        run_job(spec, storage=sqlite_url)
    assert [i.field for i in info.value.issues] == ["search.stages"]
    (tmp_path / "d.csv").write_text("a,b,y\n" + "".join(f"{i},{-i},{i % 2}\n" for i in range(40)))
    monkeypatch.setenv("REGTUNE_DATA_DIR", str(tmp_path))
    csv = parse_spec(tiny(dataset={"source": "csv", "name": None, "path": "d.csv", "target": "y"}))
    with pytest.raises(SpecError) as info:  # a file's shape is known once it is read: checked then
        run_job(csv, storage=sqlite_url, limits=Limits(max_work=1000))
    assert [i.field for i in info.value.issues] == ["training"]
    assert "× 1 steps per epoch × 82 parameters" in str(info.value)  # 24 training rows, 2 features, 2 classes
