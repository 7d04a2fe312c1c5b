"""Batched training: each member trains as it would alone, stops alone, and the pruner sees it as alone."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import optuna
import pytest
import torch
from _same import TOL, assert_same
from optuna.trial import TrialState

from tuner import parse_spec
from tuner.errors import Cancelled, TrialFailed
from tuner.knobs import Knobs
from tuner.search import StageRun, run_trial
from tuner.spec import ModelSpec
from tuner.train import TrainResult, auto_batch, load_dataset, train, train_batched
from tuner.train._batched import BITS_KEPT_BYTES, _cut, _mask, _SiteBits
from tuner.train._models import dropout_bits, inverted_dropout

Tiny = Callable[..., dict[str, Any]]

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


@pytest.mark.parametrize("train_curve", [True, False], ids=["curves", "kept-epoch"])
@pytest.mark.parametrize("case", list(CASES))
def test_each_member_trains_as_it_would_alone(case: str, train_curve: bool) -> None:
    """With or without every epoch's train loss (without: measured once, from the weights kept)."""
    spec, data = _setup(*CASES[case])
    knobs = _members(len(spec.model.hidden), data.task == "classification")
    alone = [train(data, spec.model, spec.training, k, spec.seed) for k in knobs]
    batched = train_batched(data, spec.model, spec.training, knobs, spec.seed, train_curve=train_curve)
    for a, b in zip(alone, batched, strict=True):
        if not train_curve:
            assert isinstance(b, TrainResult) and b.curve_train == []
            b = replace(b, curve_train=a.curve_train)
        assert_same(a, b)
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
        assert_same(train(data, spec.model, spec.training, knobs[k], spec.seed), outcomes[k])
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
        assert_same(train(data, spec.model, spec.training, knobs[k], spec.seed), outcomes[k])


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
    from tuner.backends._batches import _train_batch

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
        if a.state == TrialState.PRUNED:  # search.train_curve off: its last val loss, and no train loss measured
            assert b.user_attrs["val_loss"] == pytest.approx(a.user_attrs["val_curve"][-1], abs=TOL)
            assert "train_loss" not in b.user_attrs and "gap" not in b.user_attrs
        else:  # the kept epoch's train loss, measured once from its weights
            assert b.user_attrs["train_loss"] == pytest.approx(a.user_attrs["train_loss"], abs=TOL)


def test_auto_batches_small_models_more_and_leaves_the_sampler_rounds_to_learn() -> None:
    small, large = ModelSpec(hidden=[32]), ModelSpec(hidden=[2048, 2048])
    assert auto_batch(small, 64, 10, trials=200, cores=2) > auto_batch(large, 64, 10, trials=200, cores=2) >= 1
    assert auto_batch(small, 64, 10, trials=12, cores=2) == math.ceil(12 / 4)
    assert auto_batch(small, 64, 10, trials=1, cores=2) == 1


def test_a_stop_asked_mid_epoch_cancels_every_member(monkeypatch: pytest.MonkeyPatch) -> None:
    import tuner.train._batched as batched

    monkeypatch.setattr(batched, "STOP_POLL_S", 0.0)  # ask before every step
    spec, data = _setup("mlp", "breast_cancer", "adam")
    asked = {"n": 0}

    def stop_at_third_step() -> bool:
        asked["n"] += 1
        return asked["n"] >= 3

    ended: list[int] = []
    outcomes = train_batched(data, spec.model, spec.training, _members(2, True), spec.seed,
                             on_end=lambda k, _: ended.append(k), should_stop=stop_at_third_step)
    assert all(isinstance(o, Cancelled) and "during epoch 1" in str(o) for o in outcomes)
    assert sorted(ended) == [0, 1, 2, 3]


def test_members_that_join_as_others_end_train_as_they_would_alone() -> None:
    spec, data = _setup("mlp", "breast_cancer", "adam")
    knobs = _members(2, True)
    more = [Knobs(l2=1e-3, dropout=(0.2, 0.0), label_smoothing=0.05), Knobs(l1=3e-3, dropout=(0.0, 0.4)),
            Knobs(dropout=(0.1, 0.1), input_dropout=0.05)]
    waiting = list(more)
    sizes: list[int] = []

    def refill(free: int) -> list[tuple[Knobs, None]]:
        sizes.append(free)
        joining, waiting[:] = waiting[:free], waiting[free:]
        return [(k, None) for k in joining]

    ended: list[int] = []
    outcomes = train_batched(data, spec.model, spec.training, knobs[:2], spec.seed, refill=refill,
                             on_end=lambda k, _: ended.append(k))
    assert not waiting and len(outcomes) == 2 + len(more) and sorted(ended) == list(range(5))
    assert all(0 < free <= 2 for free in sizes)  # asked only for the places that ended: never more than 2 members
    for k, member in zip([*knobs[:2], *more], outcomes, strict=True):  # the same seed: each its own cohort's draws
        assert_same(train(data, spec.model, spec.training, k, spec.seed), member)


def test_adam_counts_each_members_own_steps() -> None:
    """A member that joins late starts Adam's bias correction at its own step 1, as its lone run does."""
    spec, data = _setup("linear", "breast_cancer", "adam", patience=None)
    late = [Knobs(l2=1e-2)]

    def first_stops(epoch: int, train_loss: float, val_loss: float) -> None:
        if epoch == 3:
            raise optuna.TrialPruned("pruned after epoch 3")

    def refill(free: int) -> list[tuple[Knobs, None]]:
        joining = [(k, None) for k in late]
        late.clear()
        return joining

    outcomes = train_batched(data, spec.model, spec.training, [Knobs()], spec.seed, [first_stops], refill=refill)
    assert isinstance(outcomes[0], optuna.TrialPruned)
    assert_same(train(data, spec.model, spec.training, Knobs(l2=1e-2), spec.seed), outcomes[1])


def test_dropout_masks_keep_the_units_the_lone_loop_keeps_bit_for_bit() -> None:
    """Every 16-bit draw against rates on, just above and just below the grid of uniforms (and 0, and near 1):
    the batched masks keep exactly the units ``inverted_dropout`` keeps, and scale them by 1/(1-p)."""
    grid = 2.0**-16
    rates = [0.0, 0.5, 0.3, 1e-7, 0.25 + grid, 0.25 + grid + 2**-30, 0.25 + grid - 2**-30, 0.6, 1 - grid,
             1 - 2**-17, 0.99999]
    bits = torch.arange(-32768, 32768, dtype=torch.float32).view(256, 256)  # every draw there is
    col = torch.tensor(rates, dtype=torch.float32).view(-1, 1, 1)
    scale = 1.0 / (1.0 - col)
    masks = _mask([bits], (_cut(col), scale))
    uniforms = (bits + 32768.0) * grid
    assert torch.equal(masks, (uniforms >= col).float() * scale)
    ones = torch.ones(256, 256)
    for p, mask in zip(rates, masks, strict=True):
        # the lone loop compares its uniforms with the rate as a Python float: in float32, as the masks do
        assert torch.equal(mask != 0, uniforms >= p), p
        alone = inverted_dropout(ones, p, torch.Generator().manual_seed(5))  # and draws the same bits
        drawn = dropout_bits((256, 256), torch.Generator().manual_seed(5))
        batched = _mask([drawn], (_cut(torch.tensor([[[p]]], dtype=torch.float32)), torch.ones(1, 1, 1)))[0]
        assert torch.equal(alone != 0, batched != 0), p
    assert masks[0].eq(1.0).all() and not masks[-1].any()  # p = 0 keeps every unit; 0.99999 here none
    # cohorts with bits of their own: each member's mask is its cohort's, as with that cohort alone
    own = [bits, bits.flip(0), bits.roll(7, 1)]
    counts = [4, 0, 7]  # a cohort left without members (a NaN) takes no rows
    spread = _mask(own, (_cut(col), scale), counts)
    start = 0
    for b, k in zip(own, counts, strict=True):
        assert torch.equal(spread[start:start + k], _mask([b], (_cut(col[start:start + k]), scale[start:start + k])))
        start += k


@pytest.mark.parametrize("kept", [BITS_KEPT_BYTES, 0])
def test_an_epochs_dropout_bits_are_the_batches_draws_in_order_kept_or_drawn_again(kept: int) -> None:
    """``_SiteBits``' batches are those ``dropout_bits`` draws batch by batch from the site's stream, in every
    epoch, asked in any order, whether kept or drawn again from the epoch's start."""
    rows, width = [128, 128, 37], 33  # a last short batch, and batches of an odd number of units
    bits = _SiteBits(torch.Generator().manual_seed(11), width, rows, [kept])
    stream = torch.Generator().manual_seed(11)
    alone = [[dropout_bits((r, width), stream) for r in rows] for _ in range(4)]
    for e in (2, 0, 3, 2, 1, 0):
        assert all(torch.equal(a, b) for a, b in zip(alone[e], bits.epoch(e), strict=True)), e
    assert len(bits.kept) == (4 if kept else 0)


def test_a_batch_with_room_beyond_its_first_members_fills_it_without_callbacks() -> None:
    """``size`` above the first members' number, and no ``on_epoch``: the free places are refilled at once."""
    spec, data = _setup("linear", "breast_cancer", "adam", patience=None)
    waiting = [Knobs(l2=1e-3), Knobs(l1=1e-3)]
    first = Knobs()

    def refill(free: int) -> list[tuple[Knobs, None]]:
        joining, waiting[:] = waiting[:free], waiting[free:]
        return [(k, None) for k in joining]

    outcomes = train_batched(data, spec.model, spec.training, [first], spec.seed, refill=refill, size=3)
    assert not waiting and len(outcomes) == 3
    for k, member in zip([first, Knobs(l2=1e-3), Knobs(l1=1e-3)], outcomes, strict=True):
        assert_same(train(data, spec.model, spec.training, k, spec.seed), member)


def test_a_member_that_diverges_in_a_later_cohort_fails_alone_while_both_cohorts_train_on() -> None:
    """A NaN mid-epoch with two cohorts in the batch: the members left keep their own rows and masks."""
    spec, data = _setup("mlp", "breast_cancer", "sgd", patience=None)
    first = [Knobs(dropout=(0.1, 0.0)), Knobs(l2=1e-3, dropout=(0.3, 0.1))]
    later = [Knobs(l2=1e6, dropout=(0.2, 0.0)), Knobs(l1=1e-3, dropout=(0.0, 0.2))]  # the first diverges
    waiting = list(later)

    def refill(free: int) -> list[tuple[Knobs, None]]:
        joining, waiting[:] = waiting[:free], waiting[free:]
        return [(k, None) for k in joining]

    with pytest.raises(TrialFailed) as alone_failure:
        train(data, spec.model, spec.training, later[0], spec.seed)
    outcomes = train_batched(data, spec.model, spec.training, first, spec.seed, refill=refill, size=4)
    assert not waiting and len(outcomes) == 4
    assert isinstance(outcomes[2], TrialFailed)
    assert str(outcomes[2]).split(" in epoch ")[1] == str(alone_failure.value).split(" in epoch ")[1]
    for k, member in zip([*first, later[1]], [outcomes[0], outcomes[1], outcomes[3]], strict=True):
        assert_same(train(data, spec.model, spec.training, k, spec.seed), member)
