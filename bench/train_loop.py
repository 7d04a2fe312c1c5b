"""How fast is one trial? regtune's in-memory loop against the textbook DataLoader loop, same process.

    python bench/train_loop.py [--dataset digits] [--epochs 20] [--repeats 3]

Both train the same MLP with the same knobs (L2 and dropout); the baseline iterates a
torch DataLoader over a TensorDataset and adds the penalty the usual way. Prints the
median seconds per trial of each and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from tuner import parse_spec
from tuner.knobs import Knobs
from tuner.train import Dataset, build_model, evaluate, load_dataset, train


def dataloader_trial(data: Dataset, spec, knobs: Knobs, seed: int) -> float:  # type: ignore[no-untyped-def]
    gen = torch.Generator().manual_seed(seed)
    model = build_model(spec.model, data.n_features, data.n_outputs, gen)
    opt = torch.optim.Adam(model.parameters(), lr=spec.training.lr)
    loader = DataLoader(TensorDataset(data.train.X, data.train.y), batch_size=spec.training.batch_size,
                        shuffle=True, generator=gen)
    for _ in range(spec.training.epochs):
        model.train()
        for xb, yb in loader:
            out = model(xb, knobs.dropout, knobs.input_dropout, gen)
            loss = F.cross_entropy(out, yb) + knobs.l2 * sum(lin.weight.pow(2).sum() for lin in model.linears)
            opt.zero_grad()
            loss.backward()
            opt.step()
        evaluate(model, data.train, data.task)
        evaluate(model, data.val, data.task)
    return evaluate(model, data.val, data.task)[0]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--dataset", default="digits")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(1)
    spec = parse_spec({"name": "bench", "dataset": {"source": "sklearn", "name": args.dataset},
                       "model": {"kind": "mlp", "hidden": [128, 128]},
                       "training": {"epochs": args.epochs, "batch_size": 64, "lr": 1e-3},
                       "search": {"space": {"l2": {"low": 1e-5, "high": 1e-2, "log": True}}}})
    data = load_dataset(spec.dataset, 0).without_test()
    knobs = Knobs(l2=1e-4, dropout=(0.2, 0.2))
    ours, base = [], []
    for r in range(args.repeats):
        t = time.perf_counter()
        train(data, spec.model, spec.training, knobs, seed=r)
        ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        dataloader_trial(data, spec, knobs, seed=r)
        base.append(time.perf_counter() - t)
    o, b = statistics.median(ours), statistics.median(base)
    print(f"{args.dataset}, MLP 128x128, {args.epochs} epochs, batch 64, 1 thread, median of {args.repeats}")
    print(f"  DataLoader loop (baseline): {b:.3f} s/trial")
    print(f"  regtune in-memory loop:     {o:.3f} s/trial")
    print(f"  speed-up: {b / o:.2f}x")


if __name__ == "__main__":
    main()
