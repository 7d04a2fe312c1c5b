"""How close does batched training come to the machine's matrix-product rate?

    python bench/batch_rate.py [--members 10] [--epochs 10] [--repeats 3]

On ``bench/search_speed.py``'s job (digits, MLP 64-256-256-10, batch 128, Adam 1e-3), ``train_batched`` trains
``--members`` members, each with its own λ₁, λ₂, dropout and label smoothing, for ``--epochs`` epochs (no early
stopping), and the bench counts the floating-point operations of the products an epoch needs: the training
steps' forward and backward (no input gradient at the first layer) and the plain losses of the training and
validation splits at each epoch's end. It prints the member-epochs per second, those operations per second, and
their ratio to ``torch.baddbmm``'s rate at the widest layer's shape (members, 128 rows, 256 by 256), timed in the
same process: the share of the machine's product rate that the whole of batched training reaches, Python,
the optimizer and the small kernels included.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from tuner import parse_spec
from tuner.knobs import Knobs
from tuner.train import load_dataset
from tuner.train._batched import n_weights, train_batched

HIDDEN = [256, 256]


def product_rate(members: int, repeats: int = 2000) -> float:
    """``baddbmm``'s FLOP/s at (members, 128, 256) x (256, 256), the bench job's widest layer."""
    a, w, b = torch.randn(members, 128, 256), torch.randn(members, 256, 256), torch.randn(members, 1, 256)
    for _ in range(50):
        torch.baddbmm(b, a, w)
    started = time.perf_counter()
    for _ in range(repeats):
        torch.baddbmm(b, a, w)
    return members * 128 * 256 * 256 * 2 * repeats / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    spec = parse_spec({
        "name": "rate", "seed": 0,
        "dataset": {"source": "sklearn", "name": "digits", "split": {"val": 0.15, "test": 0.15}},
        "model": {"kind": "mlp", "hidden": HIDDEN},
        "training": {"epochs": args.epochs, "batch_size": 128, "optimizer": "adam", "lr": 1e-3},
        "search": {"space": {"l2": {"low": 1e-6, "high": 1e-2, "log": True}}},
    })
    data = load_dataset(spec.dataset, 0)
    knobs = [Knobs(l1=1e-5 * (i + 1), l2=1e-4 * (i + 1), dropout=(0.1 + 0.02 * i,) * len(HIDDEN),
                   label_smoothing=0.01 * i) for i in range(args.members)]
    macs = n_weights(spec.model, data.n_features, data.n_outputs)  # multiply-adds per row, forward
    later = macs - data.n_features * HIDDEN[0]  # the input gradients: every layer's but the first
    per_epoch = len(data.train) * 2 * (2 * macs + later) + (len(data.train) + len(data.val)) * 2 * macs
    train_batched(data, spec.model, spec.training, knobs[:2], 0)  # warm-up: kernels built, memory mapped
    rates = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        train_batched(data, spec.model, spec.training, knobs, 0)
        seconds = time.perf_counter() - started
        rates.append(args.members * args.epochs / seconds)
    peak = product_rate(args.members)
    rate = statistics.median(rates)
    print(f"{args.members} members x {args.epochs} epochs, {torch.get_num_threads()} torch threads: "
          f"{rate:.1f} member-epochs/s (median of {args.repeats}: {', '.join(f'{r:.1f}' for r in rates)}), "
          f"{rate * per_epoch / 1e9:.1f} GFLOP/s of products; baddbmm at the widest layer {peak / 1e9:.1f} GFLOP/s; "
          f"ratio {rate * per_epoch / peak:.2f}")


if __name__ == "__main__":
    main()
