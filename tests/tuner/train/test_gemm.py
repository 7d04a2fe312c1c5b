"""Batched training's products on OpenBLAS: torch's numbers to float rounding, chosen by the CPU, threads that
do not fight torch's."""

from __future__ import annotations

import os
from typing import Any

import pytest
import torch
from _same import assert_same

from tuner import parse_spec
from tuner.knobs import Knobs
from tuner.train import _gemm as gemm
from tuner.train import load_dataset, train, train_batched


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """A process that has not chosen its products yet."""
    monkeypatch.setattr(gemm, "_loaded", [])
    monkeypatch.delenv(gemm.ENV, raising=False)
    return monkeypatch


@pytest.fixture
def blas(monkeypatch: pytest.MonkeyPatch) -> gemm._Blas:
    """OpenBLAS as batched training's products for the test, whatever this machine's own choice (torch's on
    Intel's CPUs, where MKL runs its AVX-512 code): its path is tested wherever the library loads."""
    found = gemm.products()
    if found is None:
        monkeypatch.setattr(gemm, "_loaded", [])
        monkeypatch.setenv(gemm.ENV, "openblas")
        found = gemm.products()
    if found is None:
        pytest.skip("OpenBLAS does not load on this machine (batched training uses it on x86-64 Linux only)")
    return found


def _operands() -> list[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor | None]]:
    """(what, a, b, bias) in the layouts batched training passes: stored, transposed views, a shared input
    expanded over the members, biases broadcast along rows or (for the output layer) columns."""
    g = torch.Generator().manual_seed(0)

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g)
    k = 3
    return [
        ("a·b", r(k, 5, 7), r(k, 7, 4), None),
        ("h·Wᵀ + b", r(k, 6, 9), r(k, 8, 9).transpose(1, 2), r(k, 1, 8)),
        ("shared x·Wᵀ + b", r(6, 9).expand(k, -1, -1), r(k, 8, 9).transpose(1, 2), r(k, 1, 8)),
        ("gᵀ·h", r(k, 6, 8).transpose(1, 2), r(k, 6, 9), None),
        ("W·hᵀ + bᵀ", r(k, 4, 9), r(k, 6, 9).transpose(1, 2), r(k, 1, 4).transpose(1, 2)),
        ("a column's slice", r(k, 5, 10)[:, :, 2:9], r(k, 7, 3), None),
        ("one member", r(1, 5, 7), r(1, 7, 4), r(1, 1, 4)),
        ("a strided batch", r(2 * k, 5, 7)[::2], r(k, 7, 4), None),
    ]


@pytest.mark.parametrize("case", range(len(_operands())), ids=[c[0] for c in _operands()])
@pytest.mark.usefixtures("blas")
def test_each_layout_gives_torchs_product(case: int) -> None:
    _, a, b, bias = _operands()[case]
    want = torch.bmm(a, b) if bias is None else torch.baddbmm(bias, a, b)
    got = gemm.bmm(a, b, bias)
    assert got.shape == want.shape and got.is_contiguous()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_what_blas_cannot_take_goes_to_torch() -> None:
    """Float64, and operands that need their gradient outside an autograd function's own backward."""
    a, b = torch.randn(2, 3, 4, dtype=torch.float64), torch.randn(2, 4, 5, dtype=torch.float64)
    assert torch.equal(gemm.bmm(a, b), torch.bmm(a, b))
    w = torch.randn(2, 4, 5, requires_grad=True)
    out = gemm.bmm(torch.randn(2, 3, 4), w)
    out.sum().backward()
    assert w.grad is not None


@pytest.mark.parametrize(("vendor", "flags", "chosen"), [
    ("AuthenticAMD", gemm.AVX512 | {"avx2"}, True),
    ("GenuineIntel", gemm.AVX512 | {"avx2"}, False),  # MKL runs its AVX-512 code there
    ("AuthenticAMD", {"avx2", "fma"}, False),
])
def test_auto_takes_openblas_where_mkl_leaves_avx512_unused(fresh: pytest.MonkeyPatch, vendor: str,
                                                             flags: set[str], chosen: bool) -> None:
    loads: list[str | None] = []

    def load(coretype: str | None) -> Any:
        loads.append(coretype)
        return object()
    fresh.setattr(gemm, "_cpu", lambda: (vendor, flags))
    fresh.setattr(gemm, "_load", load)
    fresh.setattr(gemm.platform, "machine", lambda: "x86_64")
    fresh.setattr(gemm.platform, "system", lambda: "Linux")
    assert (gemm.products() is not None) is chosen
    assert loads == (["SkylakeX"] if chosen else [])


def test_the_environment_chooses_torch_or_openblas(fresh: pytest.MonkeyPatch) -> None:
    fresh.setattr(gemm, "_cpu", lambda: ("GenuineIntel", {"avx2"}))
    fresh.setattr(gemm, "_load", lambda coretype: ("loaded", coretype))
    fresh.setattr(gemm.platform, "machine", lambda: "x86_64")
    fresh.setattr(gemm.platform, "system", lambda: "Linux")
    fresh.setenv(gemm.ENV, "torch")
    assert gemm.products() is None
    fresh.setattr(gemm, "_loaded", [])
    fresh.setenv(gemm.ENV, "openblas")  # OpenBLAS's own choice of kernels without AVX-512
    assert gemm.products() == ("loaded", None)
    fresh.setattr(gemm, "_loaded", [])
    fresh.setenv(gemm.ENV, "mkl")
    assert gemm.products() is None


def test_without_the_library_the_products_are_torchs(fresh: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
                                                     ) -> None:
    fresh.setattr(gemm, "_cpu", lambda: ("AuthenticAMD", gemm.AVX512))
    fresh.setattr(gemm.importlib.util, "find_spec", lambda name: None)
    fresh.setattr(gemm.platform, "machine", lambda: "x86_64")
    fresh.setattr(gemm.platform, "system", lambda: "Linux")
    fresh.setenv(gemm.ENV, "openblas")
    assert gemm.products() is None
    assert "OpenBLAS could not be loaded: scipy-openblas32 is not installed" in caplog.text
    a, b = torch.randn(2, 3, 4), torch.randn(2, 4, 5)
    assert torch.equal(gemm.bmm(a, b), torch.bmm(a, b))


def test_loading_sets_the_coretype_only_while_it_loads(monkeypatch: pytest.MonkeyPatch, blas: gemm._Blas) -> None:
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    again = gemm._load("SkylakeX")  # the library already loaded: the same one, its kernels as they were
    assert os.environ["OPENBLAS_CORETYPE"] == "Haswell"
    assert again.core == blas.core


def test_while_training_torch_has_one_thread_and_openblas_the_rest(blas: gemm._Blas) -> None:
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with gemm.threads_for_products():
            assert torch.get_num_threads() == 1 and blas.threads == 2
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_batched_training_on_openblas_or_torch_gives_the_same_members(monkeypatch: pytest.MonkeyPatch,
                                                                       blas: gemm._Blas) -> None:
    """Both agree with the lone loop (torch's products) to float tolerance, and with each other."""
    spec = parse_spec({
        "name": "g", "dataset": {"source": "sklearn", "name": "digits"},
        "model": {"kind": "mlp", "hidden": [32, 16]},
        "training": {"epochs": 4, "batch_size": 64, "lr": 3e-3, "early_stopping": {"patience": 2}},
        "search": {"space": {"l2": {"low": 1e-5, "high": 1e-1, "log": True}}},
    })
    data = load_dataset(spec.dataset, spec.seed).without_test()
    members = [Knobs(), Knobs(l1=1e-3, l2=1e-2, dropout=(0.3, 0.1), label_smoothing=0.1), Knobs(l2=3e-3)]
    runs = []
    for found in (blas, None):
        monkeypatch.setattr(gemm, "_loaded", [found])
        runs.append(train_batched(data, spec.model, spec.training, members, spec.seed))
    for knobs, on_blas, on_torch in zip(members, *runs, strict=True):
        alone = train(data, spec.model, spec.training, knobs, spec.seed)
        assert_same(alone, on_blas)
        assert_same(alone, on_torch)


def test_a_batch_trains_on_one_torch_thread_and_gives_the_others_back(blas: gemm._Blas) -> None:
    """``train_batched`` runs inside ``threads_for_products``: its callbacks see torch at one thread."""
    spec = parse_spec({"name": "t", "dataset": {"source": "sklearn", "name": "iris"},
                       "model": {"kind": "mlp", "hidden": [8]}, "training": {"epochs": 2, "batch_size": 32},
                       "search": {"space": {"l2": {"low": 1e-5, "high": 1e-1, "log": True}}}})
    data = load_dataset(spec.dataset, spec.seed).without_test()
    seen: list[int] = []
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        train_batched(data, spec.model, spec.training, [Knobs(), Knobs(l2=1e-2)], spec.seed,
                      on_epoch=[lambda *_: seen.append(torch.get_num_threads()), None])
        assert seen == [1, 1] and blas.threads == 2
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
