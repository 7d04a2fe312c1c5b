"""training.device and training.precision: a device this machine cannot see is refused at submit."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch

from tuner import SpecError, parse_spec
from tuner.knobs import Knobs
from tuner.train import evaluate, load_dataset, train

Tiny = Callable[..., dict[str, Any]]
NO_CUDA = not torch.cuda.is_available()


@pytest.mark.skipif(not NO_CUDA, reason="this machine has a CUDA GPU, so asking for one is no error here")
@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_where_none_is_visible_is_refused_at_submit_naming_the_field(tiny: Tiny, device: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(tiny(training={"device": device}))
    [issue] = info.value.issues
    assert issue.field == "training.device" and "no CUDA device is visible" in issue.message
    assert issue.value == device


@pytest.mark.parametrize(("training", "field", "says"), [
    ({"device": "gpu"}, "training.device", "should match pattern"),
    ({"precision": "fp8"}, "training.precision", "'fp32', 'bf16' or 'fp16'"),
    ({"device": "cpu", "precision": "fp16"}, "training.precision", "fp16 needs a GPU"),
])
def test_bad_devices_and_precisions_name_the_field(tiny: Tiny, training: dict[str, Any], field: str,
                                                    says: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(tiny(training=training))
    [issue] = info.value.issues
    assert issue.field == field and says in issue.message


def _train(tiny: Tiny, **training: Any) -> tuple[Any, Any]:
    spec = parse_spec(tiny(model={"hidden": [16], "batch_norm": True}, training=training))
    data = load_dataset(spec.dataset, spec.seed).without_test()
    return train(data, spec.model, spec.training, Knobs(l2=1e-3, dropout=(0.2,)), 0), data


def test_bf16_autocast_on_the_cpu_trains_and_measures_in_fp32(tiny: Tiny) -> None:
    result, data = _train(tiny, device="cpu", precision="bf16")
    assert math.isfinite(result.val_loss) and result.val_loss < math.log(2)  # better than a coin
    assert evaluate(result.model, data.val, data.task)[0] == result.val_loss


@pytest.mark.skipif(NO_CUDA, reason="needs a CUDA GPU; none is visible on this machine")
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_training_on_cuda_keeps_the_model_there_and_measures_like_the_cpu(tiny: Tiny, precision: str) -> None:
    result, _ = _train(tiny, device="cuda", precision=precision)
    assert next(result.model.parameters()).device.type == "cuda"
    assert math.isfinite(result.val_loss) and result.val_loss < math.log(2)
    cpu, _ = _train(tiny, device="cpu", precision="fp32")
    if precision == "fp32":
        assert result.val_loss == pytest.approx(cpu.val_loss, abs=1e-3)
