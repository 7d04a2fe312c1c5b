"""The training loop stops inside a long epoch, not only at its end."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tuner import Cancelled, parse_spec
from tuner.knobs import Knobs
from tuner.train import load_dataset, train

Tiny = Callable[..., dict[str, Any]]


def test_a_stop_is_seen_between_batches_not_only_at_epoch_boundaries(tiny: Tiny,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tuner.train._loop.STOP_POLL_S", 0.0)  # ask at every batch (by default about once a second)
    spec = parse_spec(tiny(training={"batch_size": 8}))
    data = load_dataset(spec.dataset, seed=0).without_test()
    asked: list[int] = []
    epochs: list[int] = []

    def should_stop() -> bool:
        asked.append(1)
        return len(asked) == 5

    with pytest.raises(Cancelled, match="cancelled during epoch 1"):
        train(data, spec.model, spec.training, Knobs.from_params({}, 1), 0,
                       on_epoch=lambda e, *_: epochs.append(e), should_stop=should_stop)
    assert len(asked) == 5 and epochs == []  # 5 batches into an epoch of 43: stopped there


@pytest.mark.parametrize("patience", [2, None], ids=["early-stopping", "every-epoch-kept"])
def test_without_a_train_curve_the_kept_epochs_train_loss_is_measured_once_to_the_same_value(
        tiny: Tiny, patience: int | None) -> None:
    spec = parse_spec(tiny(training={"epochs": 8, "lr": 0.05,
                                     "early_stopping": {"patience": patience} if patience else None}))
    data = load_dataset(spec.dataset, seed=0).without_test()
    knobs = Knobs(l2=1e-3, dropout=(0.2,), label_smoothing=0.1)
    seen: list[tuple[int, float | None, float]] = []

    full = train(data, spec.model, spec.training, knobs, 0)
    kept = train(data, spec.model, spec.training, knobs, 0, on_epoch=lambda *a: seen.append(a), train_curve=False)

    assert kept.curve_train == [] and kept.curve_val == pytest.approx(full.curve_val, abs=1e-6)
    assert (kept.epochs, kept.best_epoch) == (full.epochs, full.best_epoch)
    if patience:
        assert full.best_epoch < full.epochs, "early stopping should go back to an earlier epoch"
    assert kept.train_loss == pytest.approx(full.curve_train[full.best_epoch - 1], abs=1e-6)
    assert (kept.train_loss, kept.val_loss, kept.train_acc, kept.gap) == pytest.approx(
        (full.train_loss, full.val_loss, full.train_acc, full.gap), abs=1e-6)
    assert [(e, t) for e, t, _ in seen] == [(e, None) for e in range(1, kept.epochs + 1)]
