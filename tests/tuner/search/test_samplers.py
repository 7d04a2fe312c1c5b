"""Every sampler and pruner by name, the allow_zero prior, per-layer dropout and the Pareto objective."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import optuna
import pytest
from optuna._imports import _LazyImport
from optuna.trial import TrialState

from tuner import RegtuneError, parse_spec, run_job
from tuner.search import PRUNERS, SAMPLERS, make_pruner, make_sampler

Tiny = Callable[..., dict[str, Any]]
FAST: dict[str, Any] = {"dataset": {"name": "iris"}, "training": {"epochs": 3}, "report": {"seeds": 0, "top_k": 1}}


def _complete(storage: str, name: str) -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name=name, storage=storage)
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


@pytest.mark.parametrize("sampler", SAMPLERS.names)
def test_every_sampler_runs_a_staged_job(tiny: Tiny, sampler: str, sqlite_url: str) -> None:
    space = {"l2": {"low": 1e-4, "high": 1e-1, "log": True, "grid": 4},
             "dropout": {"low": 0.0, "high": 0.4, "values": [0.0, 0.2, 0.4]}}
    report = run_job(parse_spec(tiny(**FAST, search={"sampler": sampler, "space": space})), storage=sqlite_url)
    assert len(_complete(sqlite_url, "tiny/l2")) == 3 and len(_complete(sqlite_url, "tiny/dropout")) == 3
    assert report.chosen.val_loss > 0


@pytest.mark.parametrize("sampler", ["nsga2", "tpe", "random"])
def test_a_pareto_search_over_val_loss_and_gap(tiny: Tiny, sampler: str, sqlite_url: str) -> None:
    spec = parse_spec(tiny(**FAST, search={"sampler": sampler, "objective": ["val_loss", "gap"]}))
    report = run_job(spec, storage=sqlite_url)
    for t in _complete(sqlite_url, "tiny/l2"):
        assert t.values == pytest.approx([t.user_attrs["val_loss"], t.user_attrs["gap"]])
    study = optuna.load_study(study_name="tiny/l2", storage=sqlite_url)
    assert study.metric_names == ["val_loss", "gap"]
    assert report.pareto


@pytest.mark.parametrize("pruner", PRUNERS.names)
def test_every_pruner(tiny: Tiny, pruner: str, sqlite_url: str) -> None:
    stages = [{"name": "l2", "params": ["l2"], "trials": 6}]
    spec = parse_spec(tiny(**FAST, search={"pruner": pruner, "stages": stages}))
    run_job(spec, storage=sqlite_url)
    study = optuna.load_study(study_name="tiny/l2", storage=sqlite_url)
    judged = [t for t in study.get_trials() if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(judged) == 6


def test_unknown_names_list_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown sampler 'x'; valid samplers are: grid, random, tpe"):
        make_sampler("x", 0, False)
    with pytest.raises(ValueError, match="unknown pruner 'x'; valid pruners are: none, median, hyperband"):
        make_pruner("x")


def test_allow_zero_reaches_exact_zero_and_per_layer_dropout(tiny: Tiny, sqlite_url: str) -> None:
    spec = parse_spec(tiny(**FAST, model={"hidden": [8, 8]}, search={
        "sampler": "random",
        "space": {"l1": {"low": 1e-5, "high": 1e-2, "log": True, "allow_zero": True},
                  "dropout": {"low": 0.0, "high": 0.5, "per_layer": True}},
        "stages": [{"name": "joint", "params": ["l1", "dropout"], "trials": 8}],
    }))
    run_job(spec, storage=sqlite_url)
    trials = _complete(sqlite_url, "tiny/joint")
    l1 = [t.user_attrs["config"]["l1"] for t in trials]
    assert 0.0 in l1 and any(1e-5 <= v <= 1e-2 for v in l1)
    for t in trials:
        assert {"dropout_0", "dropout_1"} <= set(t.params)
        assert (t.params["l1_on"] is False) == ("l1" not in t.params)


def test_val_error_objective(tiny: Tiny, sqlite_url: str) -> None:
    run_job(parse_spec(tiny(**FAST, search={"objective": "val_error"})), storage=sqlite_url)
    for t in _complete(sqlite_url, "tiny/l2"):
        assert t.value == pytest.approx(1.0 - t.user_attrs["val_acc"])


@pytest.mark.parametrize("sampler", SAMPLERS.names)
def test_every_sampler_samples_past_its_startup_trials(tiny: Tiny, sampler: str, sqlite_url: str) -> None:
    # 7 trials: past every sampler's random start-up (tpe and gp 5, cmaes 3), so each one's own model runs
    space = {"l2": {"low": 1e-4, "high": 1e-1, "log": True, "grid": 4},
             "dropout": {"low": 0.0, "high": 0.4, "values": [0.0, 0.2, 0.4]}}
    stages = [{"name": "joint", "params": ["l2", "dropout"], "trials": 7}]
    run_job(parse_spec(tiny(**FAST, search={"sampler": sampler, "space": space, "stages": stages})),
            storage=sqlite_url)
    study = optuna.load_study(study_name="tiny/joint", storage=sqlite_url)
    assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE] * 7


def test_a_sampler_that_fails_fails_its_trial_with_the_reason(tiny: Tiny, sqlite_url: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # cmaes not installed, exactly as a machine without the package sees it: the import fails on first use
    monkeypatch.setitem(sys.modules, "cmaes", None)
    monkeypatch.setattr("optuna.samplers._cmaes.cmaes", _LazyImport("cmaes"))
    stages = [{"name": "l2", "params": ["l2"], "trials": 5}]
    # one at a time: trials asked while others run would still be startup trials, never reaching cmaes
    spec = parse_spec(tiny(**FAST, search={"sampler": "cmaes", "stages": stages, "batch": 1}))
    with pytest.raises(RegtuneError, match=r"only 3 of 5 trials finished .* last failure: the 'cmaes' sampler "
                                           r"failed: ModuleNotFoundError"):
        run_job(spec, storage=sqlite_url)
    trials = optuna.load_study(study_name="tiny/l2", storage=sqlite_url).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3 + [TrialState.FAIL]
    assert "ModuleNotFoundError" in trials[-1].user_attrs["fail_reason"]


@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_a_one_knob_stage_does_not_re_ask_the_configuration_it_starts_from(tiny: Tiny, sampler: str,
                                                                           sqlite_url: str) -> None:
    # l2 off is the baseline's configuration, already trained; the stage spends its budget on l2 > 0
    space = {"l2": {"low": 1e-5, "high": 1e-2, "log": True, "allow_zero": True}}
    stages = [{"name": "l2", "params": ["l2"], "trials": 8}]
    spec = parse_spec(tiny(**FAST, search={"sampler": sampler, "space": space, "stages": stages}))
    report = run_job(spec, storage=sqlite_url)
    l2 = [t.user_attrs["config"]["l2"] for t in _complete(sqlite_url, "tiny/l2")]
    assert len(l2) == 8 and all(1e-5 <= v <= 1e-2 for v in l2)
    assert report.chosen.params.get("l2", 0.0) in {0.0, *l2}  # off stays choosable: the baseline


@pytest.mark.parametrize(("pruner", "trials", "asked"), [("median", 3, False), ("median", 4, True),
                                                         ("hyperband", 3, True)])
def test_the_pruner_is_asked_only_where_it_can_prune(tiny: Tiny, sqlite_url: str, pruner: str, trials: int,
                                                     asked: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    questions: list[int] = []
    for kind in (optuna.pruners.PercentilePruner, optuna.pruners.HyperbandPruner):  # asked by a trial or a board
        def counted(self: optuna.pruners.BasePruner, study: optuna.Study, trial: optuna.trial.FrozenTrial,
                    real: Any = kind.prune) -> bool:
            questions.append(trial.number)
            return bool(real(self, study, trial))

        monkeypatch.setattr(kind, "prune", counted)
    spec = parse_spec(tiny(search={"pruner": pruner, "batch": 1,
                                   "stages": [{"name": "l2", "params": ["l2"], "trials": trials}]}))
    run_job(spec, storage=sqlite_url)
    # the median pruner waits for 3 completed trials: in a stage of 3 it could never prune, so it is not asked
    assert bool(questions) == asked
    done = optuna.load_study(study_name="tiny/l2", storage=sqlite_url).get_trials(
        states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len(done) == trials


@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_a_stage_reads_the_trials_with_a_new_one_only_for_a_sampler_that_reads_them(
        tiny: Tiny, sampler: str, postgres_url: str) -> None:
    """On PostgreSQL a new trial comes with the read its sampler makes next (``new_trial_reading``); the random
    sampler reads no trials, so nothing is read for it."""
    from tuner.search import StageRun
    from tuner.storage import open_storage

    spec = parse_spec(tiny(**FAST, search={"sampler": sampler}))
    study = optuna.create_study(study_name="s", storage=open_storage(postgres_url),
                                sampler=make_sampler(sampler, 0, False, None, constant_liar=True))
    run = StageRun(spec=spec, stage=spec.stages[0], study=study, fixed={}, target=2, done=0)
    first, read = run._new_trial()
    if sampler == "tpe":
        assert read is not None and [t.number for t in read.trials] == [first.number]
    else:
        assert read is None
