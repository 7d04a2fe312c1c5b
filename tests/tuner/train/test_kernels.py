"""The compiled optimizer step of batched training: built once and kept, and torch's path where it cannot be."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from _same import assert_same

import tuner.train._batched as batched_module
from tuner import parse_spec
from tuner.knobs import Knobs
from tuner.train import _kernels as kernels
from tuner.train import load_dataset, train, train_batched


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A process that has not loaded the kernel yet, with its kept libraries in ``tmp_path``."""
    monkeypatch.setattr(kernels, "_loaded", [])
    monkeypatch.setenv("REGTUNE_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("REGTUNE_KERNELS", raising=False)
    return tmp_path


def _job(optimizer: str) -> tuple[Any, Any]:
    spec = parse_spec({
        "name": "k", "dataset": {"source": "sklearn", "name": "breast_cancer"},
        "model": {"kind": "mlp", "hidden": [16, 8]},
        "training": {"epochs": 6, "batch_size": 64, "lr": 0.03, "optimizer": optimizer,
                     "early_stopping": {"patience": 2}},
        "search": {"space": {"l2": {"low": 1e-5, "high": 1e-1, "log": True}}},
    })
    return spec, load_dataset(spec.dataset, spec.seed).without_test()


MEMBERS = [Knobs(), Knobs(l1=1e-3, l2=1e-2, dropout=(0.3, 0.1)), Knobs(l2=3e-3), Knobs(l1=1e-2, dropout=(0.2, 0.0))]


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_with_torchs_operations_each_member_still_trains_as_alone(optimizer: str,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Where no kernel can be built, batched training takes torch's operations and gives the same members."""
    spec, data = _job(optimizer)
    monkeypatch.setattr(batched_module, "adam_l1_step", lambda: None)
    batched = train_batched(data, spec.model, spec.training, MEMBERS, spec.seed)
    for knobs, member in zip(MEMBERS, batched, strict=True):
        assert_same(train(data, spec.model, spec.training, knobs, spec.seed), member)


def test_relu_and_dropout_in_the_kernel_give_torchs_numbers_bit_for_bit(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the hidden layers' ReLU and masks in the kernel (``_SiteDrop``) or in torch's operations, every
    member's curves are the same floats: cohorts that joined at different epochs, rates of 0 among them."""
    found = kernels.kernels()
    if found is None:
        pytest.skip("no compiled kernels on this machine")
    spec, data = _job("adam")
    late = [Knobs(dropout=(0.5, 0.0), l1=1e-3), Knobs(dropout=(0.1, 0.4), l2=1e-2)]

    def run(fns: kernels.Kernels | None) -> list[Any]:
        monkeypatch.setattr(batched_module, "kernels", lambda: fns)
        waiting = list(late)

        def refill(free: int) -> list[tuple[Knobs, None]]:
            return [(waiting.pop(0), None)] if waiting else []
        return train_batched(data, spec.model, spec.training, MEMBERS, spec.seed, refill=refill, size=5)

    fused, plain = run(found), run(None)
    assert len(fused) == len(MEMBERS) + len(late)
    for a, b in zip(fused, plain, strict=True):
        assert (a.curve_train, a.curve_val, a.epochs) == (b.curve_train, b.curve_val, b.epochs)


def test_a_weight_that_became_nan_stays_nan_through_the_fused_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """L1's proximal step keeps a NaN a NaN, as torch's clamp does: the member then fails on its loss, as alone,
    instead of training on from a weight set to 0."""
    found = kernels.kernels()
    if found is None:
        pytest.skip("no compiled kernels on this machine")
    spec, _ = _job("adam")
    after = []
    for fns in (found, None):
        monkeypatch.setattr(batched_module, "adam_l1_step", lambda fns=fns: None if fns is None else fns.adam_l1_step)
        base = batched_module.build_model(spec.model, 4, 2, batched_module.torch.Generator().manual_seed(0))
        stack = batched_module._Stack(base, spec.training, "classification")
        stack.resize([], [Knobs(l1=1e-2, l2=1e-3), Knobs(l1=1e-3)])
        with batched_module.torch.no_grad():
            for p in stack.params:
                p.grad = batched_module.torch.full_like(p, 1e-3)
            stack.params[0].grad[1, 0, 0] = float("nan")  # member 1's first weight gets a NaN gradient
            stack._update()
        after.append(stack.params[0].detach().clone())
    fused, plain = after
    assert fused[1, 0, 0].isnan() and plain[1, 0, 0].isnan()
    assert fused[0].isfinite().all() and batched_module.torch.allclose(fused[0], plain[0], atol=1e-7)


def test_the_kernel_is_built_once_then_loaded_from_where_it_is_kept(fresh: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    if kernels.shutil.which("cc") is None and kernels.shutil.which("gcc") is None:
        pytest.skip("no C compiler on this machine")
    assert kernels.adam_l1_step() is not None
    kept = list(fresh.glob("kernels-*.so"))
    assert len(kept) == 1 and not list(fresh.glob("tmp*")), "the library alone is kept, built aside"

    def no_compiling(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"compiled again: {args}")

    monkeypatch.setattr(kernels, "_loaded", [])  # another process, the same machine
    monkeypatch.setattr(kernels.subprocess, "run", no_compiling)
    assert kernels.adam_l1_step() is not None
    assert list(fresh.glob("kernels-*.so")) == kept


def test_a_compiler_that_fails_leaves_torchs_operations_and_says_why(fresh: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    compiler = fresh / "cc"
    compiler.write_text("#!/bin/sh\necho 'cc: fatal error: no input files' >&2\nexit 1\n")
    compiler.chmod(0o755)
    monkeypatch.setenv("CC", str(compiler))
    with caplog.at_level(logging.WARNING, logger=kernels.__name__):
        assert kernels.adam_l1_step() is None
    assert "could not build" in caplog.text and "no input files" in caplog.text
    assert not list(fresh.glob("kernels-*.so")) and not list(fresh.glob("tmp*"))
    assert kernels.adam_l1_step() is None  # decided once per process


def test_without_a_home_the_kernels_are_kept_in_the_temporary_directory(monkeypatch: pytest.MonkeyPatch,
                                                                         tmp_path: Path) -> None:
    """A container's user with no passwd entry has no home: the kernels are built and kept in the temporary
    directory instead of training failing."""
    if kernels.shutil.which("cc") is None and kernels.shutil.which("gcc") is None:
        pytest.skip("no C compiler on this machine")
    monkeypatch.setattr(kernels, "_loaded", [])
    for name in ("REGTUNE_CACHE_DIR", "XDG_CACHE_HOME", "REGTUNE_KERNELS"):
        monkeypatch.delenv(name, raising=False)

    def no_home() -> Path:
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(kernels.Path, "home", staticmethod(no_home))
    monkeypatch.setattr(kernels.tempfile, "gettempdir", lambda: str(tmp_path))
    assert kernels.adam_l1_step() is not None
    assert len(list((tmp_path / "regtune-cache").glob("kernels-*.so"))) == 1


def test_kernels_off_means_torchs_operations(fresh: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGTUNE_KERNELS", "0")
    assert kernels.adam_l1_step() is None
    assert not list(fresh.iterdir())
