"""The thread backend's batches: each trial recorded as run_trial records it; budgets, cancel, resume, grid, cores."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

import tuner.backends._batches as batch_trials
from tuner import Cancelled, parse_spec, run_job
from tuner.errors import SpecError
from tuner.storage import TrialStorage, write_trials
from tuner.train import MemberOutcome, load_dataset

Tiny = Callable[..., dict[str, Any]]
TOL = 1e-5


def _trials(storage: str, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)


def _count(trials: list[optuna.trial.FrozenTrial], state: TrialState) -> int:
    return sum(t.state == state for t in trials)


def test_a_batched_job_records_what_a_one_at_a_time_job_records(tiny: Tiny, tmp_path: Any) -> None:
    urls = {k: f"sqlite:///{tmp_path}/{k}.db" for k in (1, 3)}
    for k, url in urls.items():
        run_job(parse_spec(tiny(search={"batch": k})), storage=url)
    for stage, n in (("baseline", 1), ("l2", 3), ("dropout", 3)):
        one, batched = _trials(urls[1], f"tiny/{stage}"), _trials(urls[3], f"tiny/{stage}")
        assert _count(batched, TrialState.COMPLETE) == n
        assert [set(t.user_attrs) for t in batched] == [set(t.user_attrs) for t in one]
        for t in batched:
            assert len(t.intermediate_values) == t.user_attrs["epochs"]
            assert t.user_attrs["val_curve"] == pytest.approx(list(t.intermediate_values.values()), abs=1e-6)
    # the baseline trains the same configuration either way
    assert _trials(urls[3], "tiny/baseline")[0].value == pytest.approx(_trials(urls[1], "tiny/baseline")[0].value,
                                                                       abs=TOL)


@pytest.mark.parametrize("pruner", ["median", "none"])
@pytest.mark.parametrize("flush_s", [0.0, 1.0])
def test_a_batch_writes_its_epoch_reports_together(tiny: Tiny, sqlite_url: str, pruner: str, flush_s: float,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import tuner.search._board as board

    writes: list[int] = []

    def counted(storage: Any, *, intermediate: Any = (), user_attrs: Any = ()) -> None:
        writes.append(len(intermediate))
        write_trials(storage, intermediate=intermediate, user_attrs=user_attrs)

    finish = TrialStorage.finish_trial

    def finished(self: TrialStorage, *args: Any, intermediate: Any = (), **kwargs: Any) -> None:
        writes.append(len(intermediate))  # a trial's end writes what its board held with it
        finish(self, *args, intermediate=intermediate, **kwargs)

    monkeypatch.setattr(board, "write_trials", counted)
    monkeypatch.setattr(TrialStorage, "finish_trial", finished)
    monkeypatch.setattr(board, "FLUSH_S", flush_s)
    spec = parse_spec(tiny(search={"batch": 3, "pruner": pruner,
                                   "stages": [{"name": "l2", "params": ["l2"], "trials": 5}]}))
    started = time.monotonic()
    run_job(spec, storage=sqlite_url)
    seconds = time.monotonic() - started
    trials = _trials(sqlite_url, "tiny/baseline") + _trials(sqlite_url, "tiny/l2")
    reports = sum(len(t.intermediate_values) for t in trials)
    assert sum(writes) == reports  # every report went through the board, none was lost to a finished trial
    with_reports = [n for n in writes if n]
    if flush_s == 0:  # each epoch boundary's reports in one write
        assert max(with_reports) == 3 and len(with_reports) < reports
    else:  # at most one write per FLUSH_S, and one as each trial ends (its reports with its attributes)
        assert len(with_reports) <= len(trials) + seconds / flush_s + 1
    for t in trials:
        assert t.user_attrs["val_curve"] == pytest.approx(list(t.intermediate_values.values()), abs=1e-6)


@pytest.mark.parametrize("pruner", ["median", "none"])
def test_under_the_median_pruner_a_batch_starts_with_what_the_pruner_needs_done_and_grows(
        tiny: Tiny, sqlite_url: str, pruner: str, monkeypatch: pytest.MonkeyPatch) -> None:
    real, calls = batch_trials.train_batched, []

    def watched(*args: Any, **kwargs: Any) -> list[MemberOutcome]:
        sizes = [len(args[3])]  # the first members
        calls.append(sizes)
        refill, size = kwargs["refill"], kwargs["size"]

        def refilled(free: int) -> Any:
            new = refill(free)
            sizes.append(size - free + len(new))  # members after this boundary: those kept, and the new
            return new

        return real(*args, **{**kwargs, "refill": refilled})

    monkeypatch.setattr(batch_trials, "train_batched", watched)
    spec = parse_spec(tiny(training={"epochs": 6}, search={
        "batch": 6, "pruner": pruner, "stages": [{"name": "l2", "params": ["l2"], "trials": 12}]}))
    run_job(spec, storage=sqlite_url)
    assert _count(_trials(sqlite_url, "tiny/l2"), TrialState.COMPLETE) + _count(
        _trials(sqlite_url, "tiny/l2"), TrialState.PRUNED) == 12
    sizes = calls[-1]  # the l2 stage's batch (the baseline's is its one trial)
    if pruner == "median":  # 3 done before it prunes: 4 at first, a place more per trial done, up to 6
        assert sizes[0] == 4 and max(sizes) == 6
    else:  # nothing to wait for: the whole batch at once
        assert sizes[0] == 6


def test_a_cancelled_batched_job_resumes_to_the_exact_budget(tiny: Tiny, sqlite_url: str) -> None:
    spec = parse_spec(tiny(search={"batch": 2, "stages": [{"name": "l2", "params": ["l2"], "trials": 5}]}))
    calls = {"n": 0}

    def stop_soon() -> bool:  # polled before each ask and after each member's epoch
        calls["n"] += 1
        return calls["n"] > 19  # the baseline takes 5 polls, a batch of two 2 + 2 × 4: stops batch 2 in epoch 2

    with pytest.raises(Cancelled):
        run_job(spec, storage=sqlite_url, should_stop=stop_soon)
    l2 = _trials(sqlite_url, "tiny/l2")
    interrupted = [t for t in l2 if t.user_attrs.get("interrupted")]
    assert interrupted and all(t.state == TrialState.FAIL for t in interrupted)
    assert _count(l2, TrialState.COMPLETE) < 5
    run_job(spec, storage=sqlite_url)
    l2 = _trials(sqlite_url, "tiny/l2")
    assert _count(l2, TrialState.COMPLETE) == 5
    assert _count(l2, TrialState.RUNNING) == 0


def test_a_crashed_batch_fails_its_trials_and_the_stage_still_meets_its_budget(
        tiny: Tiny, sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    real, calls = batch_trials.train_batched, {"n": 0}

    def crash_once(*args: Any, **kwargs: Any) -> list[MemberOutcome]:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("boom")
        return real(*args, **kwargs)

    monkeypatch.setattr(batch_trials, "train_batched", crash_once)
    run_job(parse_spec(tiny(search={"batch": 3})), storage=sqlite_url)
    l2 = _trials(sqlite_url, "tiny/l2")
    failed = [t for t in l2 if t.state == TrialState.FAIL]
    assert len(failed) == 3 and all("boom" in t.user_attrs["fail_reason"] for t in failed)
    assert _count(l2, TrialState.COMPLETE) == 3


def test_a_grid_stage_fills_its_batches_from_the_grid(tiny: Tiny, sqlite_url: str) -> None:
    spec = parse_spec(tiny(search={"sampler": "grid", "batch": 4, "space": {
        "l2": {"low": 1e-4, "high": 1e-1, "log": True, "values": [1e-4, 1e-3, 1e-2, 1e-1]}, "dropout": None},
        "stages": [{"name": "l2", "params": ["l2"], "trials": 4}]}))
    run_job(spec, storage=sqlite_url)
    l2 = _trials(sqlite_url, "tiny/l2")
    assert sorted(t.params["l2"] for t in l2) == [1e-4, 1e-3, 1e-2, 1e-1]


@pytest.mark.parametrize(("over", "rule"), [
    ({"model": {"batch_norm": True}, "search": {"batch": 4}}, "batch_norm: false"),
    ({"training": {"precision": "bf16"}, "search": {"batch": 4}}, "batched trials train in fp32 on the CPU"),
    ({"dataset": {"split": {"val": None, "folds": 3}}, "search": {"batch": 4}}, "trained one at a time"),
    ({"search": {"batch": 0}}, "must be 'auto' or an int in the range [1, 256], but got 0"),
    ({"search": {"batch": "most"}}, "must be 'auto' or an int in the range [1, 256], but got 'most'"),
])
def test_the_spec_rejects_a_batch_it_cannot_run(tiny: Tiny, over: dict[str, Any], rule: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_spec(tiny(**over))
    assert any(i.field == "search.batch" and rule in i.message for i in err.value.issues), err.value.issues


@pytest.mark.parametrize(("over", "threads"), [
    ({}, 1),  # a 16-wide MLP: a second thread would only wait on the first
    ({"model": {"hidden": [256, 256]}, "search": {"batch": "auto", "parallelism": 2,
                                                  "stages": [{"name": "j", "params": ["l2"], "trials": 30}]}}, 4),
])
def test_workers_times_threads_fill_the_cores_where_a_step_can_use_them(
        tiny: Tiny, monkeypatch: pytest.MonkeyPatch, over: dict[str, Any], threads: int) -> None:
    monkeypatch.setattr(batch_trials, "available_cores", lambda: 8)
    spec = parse_spec(tiny(**over))
    data = load_dataset(spec.dataset, spec.seed).without_test()
    assert batch_trials.torch_threads(spec, data) == threads
    assert spec.search.parallelism * threads <= 8
