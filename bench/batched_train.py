"""How much faster per trial is a batch of K trials than K lone runs? Same process, same knobs.

    python bench/batched_train.py [--hidden 256,256] [--k 2,4,8,16] [--epochs 3] [--repeats 3] [--threads 1]

Trains the digits MLP with λ₁, λ₂, dropout and smoothing on, once alone (``train``) and as K
members of one batched model (``train_batched``), interleaved ``--repeats`` times; prints the
median seconds per trial of each and the ratio (lone / batched per trial).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from tuner import parse_spec
from tuner.knobs import Knobs
from tuner.train import load_dataset, train, train_batched


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--hidden", default="256,256")
    p.add_argument("--k", default="2,4,8,16")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    hidden = [int(h) for h in args.hidden.split(",")]
    ks = [int(k) for k in args.k.split(",")]
    spec = parse_spec({"name": "bench", "dataset": {"source": "sklearn", "name": "digits"},
                       "model": {"kind": "mlp", "hidden": hidden},
                       "training": {"epochs": args.epochs, "batch_size": 128, "lr": 1e-3},
                       "search": {"space": {"l2": {"low": 1e-5, "high": 1e-1, "log": True}}}})
    data = load_dataset(spec.dataset, 0).without_test()
    knobs = Knobs(l1=1e-5, l2=1e-4, dropout=(0.3,) * len(hidden), label_smoothing=0.05)
    times: dict[int, list[float]] = {k: [] for k in [1, *ks]}
    for _ in range(args.repeats):
        t = time.perf_counter()
        train(data, spec.model, spec.training, knobs, 0)
        times[1].append(time.perf_counter() - t)
        for k in ks:
            t = time.perf_counter()
            train_batched(data, spec.model, spec.training, [knobs] * k, 0)
            times[k].append((time.perf_counter() - t) / k)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"digits, MLP {hidden}, {args.epochs} epochs, {args.threads} thread(s), median of {args.repeats}")
    print(f"  alone: {med[1]:.3f} s/trial")
    for k in ks:
        print(f"  K={k:<3} {med[k]:.3f} s/trial  {med[1] / med[k]:.2f}x")


if __name__ == "__main__":
    main()
