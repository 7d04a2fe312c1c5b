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
