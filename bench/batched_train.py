"""How much faster per trial is a batch of K trials than K lone runs? Same process, same knobs.

    python bench/batched_train.py [--kind mlp|cnn|plugin] [--hidden 256,256] [--channels 16,32] [--k 2,4,8,16]
                                  [--epochs 3] [--repeats 3] [--threads 1] [--optimizer adam]
                                  [--factory digits_models:convnet] [--args '{"channels": 16, "hidden": 64}']

Trains on the digits with λ₁, λ₂, dropout and smoothing on, once alone (``train``) and as K
members of one batched model, interleaved ``--repeats`` times; prints the median seconds per
trial of each and the ratio (lone / batched per trial). ``--kind mlp`` is the MLP ``--hidden``
(``train_batched``); ``cnn`` the built-in CNN (conv blocks ``--channels``, dense ``--hidden``) and
``plugin`` a factory of ``examples/models`` with ``--args`` on the 8x8 images (``train_vmapped``).

For the MLP, each K's line also gives the FLOP/s of the products an epoch needs (the training steps' forward
and backward, no input gradient at the first layer, and the plain losses of the training and validation
splits at each epoch's end), and their ratio to the rate of the product alone at (K, 128 rows, the widest
hidden layer squared) as batched training computes it (``tuner/train/_gemm.py``: OpenBLAS or torch's
``baddbmm``, named on the line), timed in the same process: the share of the machine's product rate that
the whole of batched training reaches, Python, the optimizer and the small kernels included.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from tuner import parse_spec
from tuner.knobs import Knobs
from tuner.spec import ModelSpec
from tuner.train import Dataset, check_model, load_dataset, train, train_batched, train_vmapped
from tuner.train._batched import n_weights
from tuner.train._gemm import bmm, products, threads_for_products

MODELS = Path(__file__).resolve().parent.parent / "examples" / "models"


def _model(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    """The model part of the spec and the dataset for ``--kind``."""
    hidden = [int(h) for h in args.hidden.split(",")]
    if args.kind == "cnn":
        channels = [int(c) for c in args.channels.split(",")]
        return {"kind": "cnn", "channels": channels, "kernel": 3, "hidden": hidden}, "digits_images"
    if args.kind == "plugin":
        os.environ["REGTUNE_MODELS_DIR"] = str(MODELS)
        return {"kind": "module", "factory": args.factory, "args": json.loads(args.args)}, "digits_images"
    return {"kind": "mlp", "hidden": hidden}, "digits"


def _products_per_epoch(model: ModelSpec, data: Dataset) -> int:
    """One MLP member's FLOPs of products in an epoch: 2 per multiply-add, forward, weight gradients and the
    input gradients of every layer but the first for the training rows, and a forward pass over the training
    and validation rows for their plain losses."""
    macs = n_weights(model, data.n_features, data.n_outputs)
    later = macs - data.n_features * (model.hidden or [data.n_outputs])[0]
    return 2 * len(data.train) * (2 * macs + later) + 2 * (len(data.train) + len(data.val)) * macs


def _product_rate(k: int, width: int, repeats: int = 500) -> float:
    """The FLOP/s of K members' (128, width) x (width, width) with a bias, as batched training computes it."""
    a, w, b = torch.randn(k, 128, width), torch.randn(k, width, width), torch.randn(k, 1, width)
    with threads_for_products():
        for _ in range(20):
            bmm(a, w, b)
        started = time.perf_counter()
        for _ in range(repeats):
            bmm(a, w, b)
        return 2 * k * 128 * width * width * repeats / (time.perf_counter() - started)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--kind", choices=["mlp", "cnn", "plugin"], default="mlp")
    p.add_argument("--hidden", default="256,256")
    p.add_argument("--channels", default="16,32")
    p.add_argument("--k", default="2,4,8,16")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--optimizer", default="adam")
    p.add_argument("--factory", default="digits_models:convnet")
    p.add_argument("--args", default='{"channels": 16, "hidden": 64}')
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    ks = [int(k) for k in args.k.split(",")]
    model, dataset = _model(args)
    spec = parse_spec({"name": "bench", "dataset": {"source": "sklearn", "name": dataset}, "model": model,
                       "training": {"epochs": args.epochs, "batch_size": 128, "lr": 1e-3,
                                    "optimizer": args.optimizer},
                       "search": {"space": {"l2": {"low": 1e-5, "high": 1e-1, "log": True}}}})
    data = load_dataset(spec.dataset, 0).without_test()
    if args.kind != "mlp":  # the dropout modules, numbered as a job numbers them
        spec.model.dropout_layers = check_model(spec, data)
    batched = train_batched if args.kind == "mlp" else train_vmapped
    knobs = Knobs(l1=1e-5, l2=1e-4, dropout=(0.3,) * spec.model.dropout_slots, label_smoothing=0.05)
    times: dict[int, list[float]] = {k: [] for k in [1, *ks]}
    for _ in range(args.repeats):
        t = time.perf_counter()
        train(data, spec.model, spec.training, knobs, 0)
        times[1].append(time.perf_counter() - t)
        for k in ks:
            t = time.perf_counter()
            batched(data, spec.model, spec.training, [knobs] * k, 0)
            times[k].append((time.perf_counter() - t) / k)
    med = {k: statistics.median(v) for k, v in times.items()}
    what = {"mlp": f"MLP {spec.model.hidden}", "cnn": f"CNN {spec.model.channels} then {spec.model.hidden}",
            "plugin": f"plug-in {args.factory} {args.args}"}[args.kind]
    print(f"digits, {what}, {args.epochs} epochs, {args.optimizer}, {args.threads} thread(s), "
          f"median of {args.repeats}")
    print(f"  alone: {med[1]:.3f} s/trial")
    for k in ks:
        line = f"  K={k:<3} {med[k]:.3f} s/trial  {med[1] / med[k]:.2f}x"
        if args.kind == "mlp":
            rate = _products_per_epoch(spec.model, data) * args.epochs / med[k]
            blas = products()
            alone = _product_rate(k, max(spec.model.hidden or [1]))
            line += (f"  {rate / 1e9:.1f} GFLOP/s of products, {rate / alone:.2f} of "
                     f"{'OpenBLAS ' + blas.core if blas else 'torch baddbmm'}'s {alone / 1e9:.0f} alone")
        print(line)


if __name__ == "__main__":
    main()
