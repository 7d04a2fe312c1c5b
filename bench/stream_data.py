"""Larger than memory: a few million Parquet rows trained streamed from disk and in memory, peak RSS and s/epoch.

    python bench/stream_data.py [--rows 3000000] [--features 20] [--epochs 2] [--hidden 64,64] [--batch 256]

Writes a Parquet table (float32 features, a 0/1 target) row group by row group into a
temporary folder, never whole in memory, as an upload under a temporary REGTUNE_DATA_DIR.
Then, in a child process each, so that each one's memory is its own: ``load_dataset`` and
``train`` (one MLP, ``--epochs``) with REGTUNE_MEMORY_DATA_BYTES=0 (streamed: a float32
cache on disk, batches through DataLoader workers) and with the default 1 GiB (the data in
memory). Prints, for each: seconds to load (streamed: including writing the cache), seconds
per epoch (epoch 1 includes building the model and starting the workers; each epoch also
evaluates the train and val splits), the trainer's CPU seconds per epoch (steadier than
wall time on a shared machine; the workers' CPU in all), the peak RSS, and the val loss per
epoch (the two paths must agree). Peak RSS: the child's own (``ru_maxrss``), its DataLoader workers' largest
(``RUSAGE_CHILDREN``; pages shared with the parent by fork count in both), and the whole
process tree's PSS sampled every 0.25 s from /proc/*/smaps_rollup (shared pages counted
once), split into anonymous memory and file pages (the mapped cache and libraries: page
cache, which the kernel reclaims under pressure).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

UPLOAD_ID = "5e" * 32  # any 64 hex digits: the file is placed where an upload would be
ROW_GROUP = 250_000
MIB = 2**20


def write_table(path: Path, rows: int, features: int, seed: int = 0) -> None:
    """A classification table written row group by row group (one group in memory at a time)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    w = rng.normal(size=features) * (rng.random(features) < 0.5)  # about half the features carry signal
    schema = pa.schema([(f"x{i:02d}", pa.float32()) for i in range(features)] + [("y", pa.int64())])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, rows, ROW_GROUP):
            m = min(ROW_GROUP, rows - start)
            X = rng.normal(size=(m, features)).astype(np.float32)
            y = (X @ w + rng.normal(size=m) > 0).astype(np.int64)
            columns = [pa.array(X[:, i]) for i in range(features)] + [pa.array(y)]
            writer.write_table(pa.Table.from_arrays(columns, schema=schema))


def _pss(pid: int) -> dict[str, int]:
    """Pss_Anon, Pss_File, Pss_Shmem of one process, in kB (empty when it is gone): its proportional share,
    so that pages a forked worker shares with its parent are counted once over the tree."""
    try:
        lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]
    except OSError:
        return {}
    return {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in lines)
            if k in ("Pss_Anon", "Pss_File", "Pss_Shmem")}


def _tree(root: int) -> list[int]:
    """``root`` and every process below it (from /proc/*/stat)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree, frontier = [root], [root]
    while frontier:
        frontier = [p for p, pp in parents.items() if pp in frontier]
        tree += frontier
    return tree


def run_child(mode: str, data_dir: Path, args: argparse.Namespace) -> dict[str, object]:
    """One child process training in ``mode``; its process tree's memory sampled while it runs."""
    env = dict(os.environ, REGTUNE_DATA_DIR=str(data_dir), PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    env["REGTUNE_MEMORY_DATA_BYTES"] = "0" if mode == "streamed" else str(2**30)
    cmd = [sys.executable, __file__, "--child", mode, "--epochs", str(args.epochs), "--hidden", args.hidden,
           "--batch", str(args.batch)]
    child = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)
    peak = {"anon": 0, "file": 0, "total": 0}
    while child.poll() is None:
        parts = [_pss(p) for p in _tree(child.pid)]
        anon = sum(s.get("Pss_Anon", 0) + s.get("Pss_Shmem", 0) for s in parts)
        file = sum(s.get("Pss_File", 0) for s in parts)
        peak = {"anon": max(peak["anon"], anon), "file": max(peak["file"], file),
                "total": max(peak["total"], anon + file)}
        time.sleep(0.25)
    out, _ = child.communicate()
    if child.returncode:
        raise SystemExit(f"the {mode} child failed ({child.returncode})")
    result: dict[str, object] = json.loads(out.strip().splitlines()[-1])
    result["tree_peak_kb"] = peak
    return result


def child(mode: str, args: argparse.Namespace) -> None:
    """Load and train in this process; print one JSON line of measurements."""
    import torch

    from tuner import parse_spec
    from tuner.knobs import Knobs
    from tuner.train import is_streamed, load_dataset, release, train

    torch.set_num_threads(1)  # what run_job gives a model this small
    hidden = [int(h) for h in args.hidden.split(",")]
    spec = parse_spec({"name": "bench", "dataset": {"source": "upload", "id": UPLOAD_ID, "target": "y",
                                                    "split": {"val": 0.15, "test": 0.15}},
                       "model": {"kind": "mlp", "hidden": hidden},
                       "training": {"epochs": args.epochs, "batch_size": args.batch, "lr": 1e-3},
                       "search": {"space": {"l2": {"low": 1e-5, "high": 1e-1, "log": True}}}})
    started = time.perf_counter()
    data = load_dataset(spec.dataset, 0)
    loaded = time.perf_counter()
    assert is_streamed(data) == (mode == "streamed")
    marks, cpu = [time.perf_counter()], [time.process_time()]

    def mark(*_: object) -> None:
        marks.append(time.perf_counter())
        cpu.append(time.process_time())

    result = train(data.without_test(), spec.model, spec.training, Knobs(l2=1e-4, dropout=(0.1,) * len(hidden)), 0,
                   on_epoch=mark)
    release(data)
    workers = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(json.dumps({
        "mode": mode, "train_rows": len(data.train), "load_s": loaded - started,
        "epoch_s": [b - a for a, b in itertools.pairwise(marks)], "val_loss": result.curve_val,
        "epoch_cpu_s": [b - a for a, b in itertools.pairwise(cpu)],
        "workers_cpu_s": workers.ru_utime + workers.ru_stime,
        "self_maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "workers_maxrss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
    }))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=3_000_000)
    p.add_argument("--features", type=int, default=20)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--hidden", default="64,64")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--child", choices=("streamed", "memory"))
    args = p.parse_args()
    if args.child:
        child(args.child, args)
        return
    with tempfile.TemporaryDirectory(prefix="regtune-bench-") as tmp:
        data_dir = Path(tmp)
        (data_dir / "uploads").mkdir()
        path = data_dir / "uploads" / f"{UPLOAD_ID}.parquet"
        t = time.perf_counter()
        write_table(path, args.rows, args.features)
        print(f"{args.rows} rows × {args.features} float32 features + a 0/1 target: Parquet of "
              f"{path.stat().st_size / MIB:.0f} MiB written in {time.perf_counter() - t:.1f} s; features as float32: "
              f"{args.rows * args.features * 4 / MIB:.0f} MiB; MLP {args.hidden}, batch {args.batch}, "
              f"{args.epochs} epochs, 1 torch thread; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
        results = [run_child(mode, data_dir, args) for mode in ("streamed", "memory")]
    for r in results:
        peak = r["tree_peak_kb"]
        assert isinstance(peak, dict)
        epochs = ", ".join(f"{s:.1f}" for s in r["epoch_s"])  # type: ignore[attr-defined]
        cpu = ", ".join(f"{s:.1f}" for s in r["epoch_cpu_s"])  # type: ignore[attr-defined]
        print(f"{r['mode']:>8}: load {r['load_s']:.1f} s, s/epoch [{epochs}] (trainer CPU s [{cpu}], DataLoader "
              f"workers' CPU {r['workers_cpu_s']:.1f} s in all), peak RSS: process "
              f"{r['self_maxrss_kb'] / 1024:.0f} MiB, largest worker {r['workers_maxrss_kb'] / 1024:.0f} MiB, "
              f"whole tree (PSS) {peak['total'] / 1024:.0f} MiB (anonymous {peak['anon'] / 1024:.0f}, "
              f"file pages {peak['file'] / 1024:.0f}); val loss {r['val_loss']}")
    streamed, memory = results
    print(f"streamed / memory: peak process RSS {streamed['self_maxrss_kb'] / memory['self_maxrss_kb']:.2f}, "  # type: ignore[operator]
          f"s/epoch (last) {streamed['epoch_s'][-1] / memory['epoch_s'][-1]:.2f}; "  # type: ignore[index]
          f"load average now {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
