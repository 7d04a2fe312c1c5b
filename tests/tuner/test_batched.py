"""Batched trials: each member trains as it would alone, stops alone, and is recorded as run_trial records it."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from tuner import Cancelled, parse_spec, run_job
from tuner.batched import MemberOutcome, auto_batch, train_batched
from tuner.data import load_dataset
from tuner.errors import SpecError, TrialFailed
from tuner.knobs import Knobs
from tuner.spec import ModelSpec
from tuner.training import TrainResult, train
from tuner.trial import run_trial

Tiny = Callable[..., dict[str, Any]]
TOL = 1e-5

CASES = {  # model kind, dataset (its task), optimizer: every optimizer and both tasks appear at least once
    "mlp-classification": ("mlp", "breast_cancer", "adam"),
    "mlp-regression": ("mlp", "diabetes", "adamw"),
    "linear-classification": ("linear", "breast_cancer", "sgd"),
    "linear-regression": ("linear", "diabetes", "adam"),
}


def _setup(kind: str, dataset: str, optimizer: str, patience: int | None = 2) -> tuple[Any, Any]:
    spec = parse_spec({
        "name": "b", "dataset": {"source": "sklearn", "name": dataset},
        "model": {"kind": kind, "hidden": [16, 8] if kind == "mlp" else None},
        "training": {"epochs": 8, "batch_size": 64, "lr": 0.03, "optimizer": optimizer,
                     "early_stopping": {"patience": patience} if patience else None},
        "search": {"space": {"l2": {"low": 1e-5, "high": 1e-1, "log": True}}},
    })
    return spec, load_dataset(spec.dataset, spec.seed).without_test()


def _members(n_hidden: int, classification: bool) -> list[Knobs]:
    """Knobs that differ in every way a member can: λ₁, λ₂, each layer's dropout, input dropout, smoothing."""
    smooth = 0.1 if classification else 0.0
    return [
        Knobs(dropout=(0.0,) * n_hidden),
        Knobs(l1=1e-3, l2=1e-2, dropout=(0.3, 0.1)[:n_hidden], input_dropout=0.1, label_smoothing=smooth),
        Knobs(l2=3e-3, dropout=(0.5, 0.0)[:n_hidden], label_smoothing=2 * smooth),
        Knobs(l1=1e-2 if n_hidden else 0.1, dropout=(0.0,) * n_hidden, input_dropout=0.2),
    ]


def _assert_same(alone: TrainResult, batched: MemberOutcome) -> None:
    assert isinstance(batched, TrainResult)
    assert (batched.epochs, batched.best_epoch) == (alone.epochs, alone.best_epoch)
    assert batched.curve_train == pytest.approx(alone.curve_train, abs=TOL)
    assert batched.curve_val == pytest.approx(alone.curve_val, abs=TOL)
    assert (batched.train_loss, batched.val_loss) == pytest.approx((alone.train_loss, alone.val_loss), abs=TOL)
    assert batched.val_acc == alone.val_acc
    assert batched.sparsity == pytest.approx(alone.sparsity, abs=1e-3)  # L1's exact zeros, as alone
    assert batched.features_kept == alone.features_kept


@pytest.mark.parametrize("case", list(CASES))
def test_each_member_trains_as_it_would_alone(case: str) -> None:
    spec, data = _setup(*CASES[case])
    knobs = _members(len(spec.model.hidden), data.task == "classification")
    alone = [train(data, spec.model, spec.training, k, spec.seed) for k in knobs]
    batched = train_batched(data, spec.model, spec.training, knobs, spec.seed)
    for a, b in zip(alone, batched, strict=True):
        _assert_same(a, b)
    assert len({a.epochs for a in alone}) > 1, "members should stop at different epochs (early stopping)"
    assert any(a.sparsity > 0 for a in alone), "some member should have exact zeros (L1)"


def test_a_member_that_stops_leaves_the_batch_while_the_others_train_on() -> None:
    spec, data = _setup("mlp", "breast_cancer", "adam", patience=None)
    knobs = _members(2, True)
    events: list[tuple[str, int, int]] = []

    def callback(k: int) -> Callable[[int, float, float], None]:
        def on_epoch(epoch: int, train_loss: float, val_loss: float) -> None:
            events.append(("epoch", k, epoch))
            if k == 1 and epoch == 2:
                raise optuna.TrialPruned("pruned after epoch 2")
        return on_epoch

    outcomes = train_batched(data, spec.model, spec.training, knobs, spec.seed, [callback(k) for k in range(4)],
                             on_end=lambda k, _: events.append(("end", k, 0)))
    assert isinstance(outcomes[1], optuna.TrialPruned)
    assert [e for e in events if e[1] == 1] == [("epoch", 1, 1), ("epoch", 1, 2), ("end", 1, 0)]
    assert events.index(("end", 1, 0)) < events.index(("epoch", 0, 3))  # it ended while the others went on
    for k in (0, 2, 3):
        _assert_same(train(data, spec.model, spec.training, knobs[k], spec.seed), outcomes[k])
        assert events.count(("epoch", k, 6)) == 1


def test_a_member_whose_loss_diverges_fails_alone() -> None:
    spec, data = _setup("mlp", "breast_cancer", "sgd", patience=None)
    knobs = [Knobs(dropout=(0.1, 0.0)), Knobs(l2=1e6, dropout=(0.0, 0.0)), Knobs(l2=1e-3, dropout=(0.0, 0.2))]
    with pytest.raises(TrialFailed) as alone_failure:
        train(data, spec.model, spec.training, knobs[1], spec.seed)
    outcomes = train_batched(data, spec.model, spec.training, knobs, spec.seed)
    assert isinstance(outcomes[1], TrialFailed)
    assert str(outcomes[1]).split(" in epoch ")[1] == str(alone_failure.value).split(" in epoch ")[1]
    for k in (0, 2):
        _assert_same(train(data, spec.model, spec.training, knobs[k], spec.seed), outcomes[k])


def test_the_pruner_sees_each_members_reports_as_if_it_ran_alone() -> None:
    spec = parse_spec({
        "name": "p", "dataset": {"source": "sklearn", "name": "breast_cancer"},
        "model": {"kind": "mlp", "hidden": [8]}, "training": {"epochs": 5, "batch_size": 64, "lr": 0.01},
        "search": {"pruner": "median", "space": {"l2": {"low": 1e-5, "high": 10.0, "log": True}}},
    })
    data = load_dataset(spec.dataset, spec.seed).without_test()
    configs = [Knobs(l2=v, dropout=(0.0,)).as_params() for v in (1e-5, 1e-3, 1.0, 10.0)]
    reference = train(data, spec.model, spec.training, Knobs(l2=1e-2, dropout=(0.0,)), spec.seed)

    def study() -> optuna.Study:
        s = optuna.create_study(pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=1))
        s.add_trial(optuna.trial.create_trial(  # one finished trial to compare against
            value=reference.val_loss, intermediate_values=dict(enumerate(reference.curve_val, start=1))))
        return s

    alone = []
    for config in configs:
        s = study()
        trial = s.ask()
        outcome = run_trial(trial, config, spec=spec, data=data, stage="l2")
        s.tell(trial, outcome.values, state=outcome.state)
        alone.append(s.trials[-1])
    from tuner.batch_trials import _train_batch
    from tuner.stages import StageRun

    s = study()
    run = StageRun(spec=spec, stage=spec.stages[-1], study=s, fixed={}, target=len(configs), done=0)
    asked = [(s.ask(), c) for c in configs]
    run.in_flight = len(asked)
    assert _train_batch(run, data, asked)
    batched = s.trials[1:]
    assert [t.state for t in batched] == [t.state for t in alone]
    assert {TrialState.PRUNED, TrialState.COMPLETE} <= {t.state for t in alone}
    for a, b in zip(alone, batched, strict=True):
        assert list(b.intermediate_values) == list(a.intermediate_values)
        assert list(b.intermediate_values.values()) == pytest.approx(list(a.intermediate_values.values()), abs=TOL)
        assert set(b.user_attrs) == set(a.user_attrs)


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
    import tuner.batch_trials as batch_trials

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
    ({"search": {"backend": "ray", "batch": 4}}, "one trial at a time"),
    ({"search": {"batch": 0}}, "must be 'auto' or an int in the range [1, 256], but got 0"),
    ({"search": {"batch": "most"}}, "must be 'auto' or an int in the range [1, 256], but got 'most'"),
])
def test_the_spec_rejects_a_batch_it_cannot_run(tiny: Tiny, over: dict[str, Any], rule: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_spec(tiny(**over))
    assert any(i.field == "search.batch" and rule in i.message for i in err.value.issues), err.value.issues


def test_auto_batches_small_models_more_and_leaves_the_sampler_rounds_to_learn() -> None:
    small, large = ModelSpec(hidden=[32]), ModelSpec(hidden=[2048, 2048])
    assert auto_batch(small, 64, 10, trials=200, cores=2) > auto_batch(large, 64, 10, trials=200, cores=2) >= 1
    assert auto_batch(small, 64, 10, trials=12, cores=2) == math.ceil(12 / 4)
    assert auto_batch(small, 64, 10, trials=1, cores=2) == 1


@pytest.mark.parametrize(("over", "threads"), [
    ({}, 1),  # a 16-wide MLP: a second thread would only wait on the first
    ({"model": {"hidden": [256, 256]}, "search": {"batch": "auto", "parallelism": 2,
                                                  "stages": [{"name": "j", "params": ["l2"], "trials": 30}]}}, 4),
])
def test_workers_times_threads_fill_the_cores_where_a_step_can_use_them(
        tiny: Tiny, monkeypatch: pytest.MonkeyPatch, over: dict[str, Any], threads: int) -> None:
    import tuner.batch_trials as batch_trials

    monkeypatch.setattr(batch_trials, "available_cores", lambda: 8)
    spec = parse_spec(tiny(**over))
    data = load_dataset(spec.dataset, spec.seed).without_test()
    assert batch_trials.torch_threads(spec, data) == threads
    assert spec.search.parallelism * threads <= 8
