"""The assertion batched-training tests share: a member trained as it would be alone, to float tolerance."""

from __future__ import annotations

import pytest

from tuner.train import MemberOutcome, TrainResult

TOL = 1e-5


def assert_same(alone: TrainResult, batched: MemberOutcome, *, features: bool = True) -> None:
    """Epochs, curves, losses and accuracy equal (losses to ``TOL``), L1's zeros as alone.

    Args:
        features: also the input features kept (a plug-in's first weights are its own).
    """
    assert isinstance(batched, TrainResult)
    assert (batched.epochs, batched.best_epoch) == (alone.epochs, alone.best_epoch)
    assert batched.curve_train == pytest.approx(alone.curve_train, abs=TOL)
    assert batched.curve_val == pytest.approx(alone.curve_val, abs=TOL)
    assert (batched.train_loss, batched.val_loss) == pytest.approx((alone.train_loss, alone.val_loss), abs=TOL)
    assert batched.val_acc == alone.val_acc
    assert batched.sparsity == pytest.approx(alone.sparsity, abs=1e-3)  # L1's exact zeros, as alone
    if features:
        assert batched.features_kept == alone.features_kept
