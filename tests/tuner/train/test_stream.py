"""Data larger than memory: streamed from a cache on disk, it trains to the same losses as in memory."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import torch
from optuna.trial import TrialState

from tuner.errors import Cancelled, DataError
from tuner.job import run_job
from tuner.knobs import Knobs
from tuner.spec import parse_spec
from tuner.train import (
    MEMORY_DATA_BYTES,
    Dataset,
    StreamSplit,
    evaluate,
    is_streamed,
    load_dataset,
    loss_standard_error,
    release,
    train,
)

Tiny = Callable[..., dict[str, Any]]
UPLOAD_ID = "ab" * 32


@pytest.fixture
def table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A Parquet upload of 300 rows in row groups of 70 (so chunks cut across the splits); caches go to tmp_path."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 6)) * [1, 2, 3, 4, 5, 6] + [0, 1, 2, 3, 4, 5]
    y = np.where(X[:, 0] + 0.5 * X[:, 1] + rng.normal(size=300) > 1, "yes", "no")
    columns = {f"f{i}": X[:, i] for i in range(6)} | {"label": y}
    (tmp_path / "data" / "uploads").mkdir(parents=True)
    pq.write_table(pa.table(columns), tmp_path / "data" / "uploads" / f"{UPLOAD_ID}.parquet", row_group_size=70)
    monkeypatch.setenv("REGTUNE_DATA_DIR", str(tmp_path / "data"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    yield tmp_path / "tmp"


def _spec(tiny: Tiny, **over: Any) -> Any:
    return parse_spec(tiny(dataset={"source": "upload", "name": None, "id": UPLOAD_ID, "target": "label",
                                    "split": {"val": 0.2, "test": 0.2}}, **over))


def _both(spec: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[Dataset, Dataset]:
    """The same file loaded in memory and (with the threshold lowered to 1 byte) streamed."""
    in_memory = load_dataset(spec.dataset, spec.seed)
    monkeypatch.setenv(MEMORY_DATA_BYTES, "1")
    return in_memory, load_dataset(spec.dataset, spec.seed)


def test_streamed_data_holds_the_same_rows_and_trains_to_the_same_losses(
        tiny: Tiny, table: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _spec(tiny, training={"epochs": 3, "batch_size": 16, "lr": 0.01})
    memory, streamed = _both(spec, monkeypatch)
    assert not is_streamed(memory) and is_streamed(streamed)
    for a, b in ((memory.train, streamed.train), (memory.val, streamed.val), (memory.test, streamed.test)):
        assert isinstance(b, StreamSplit) and b.path.parent.parent == table
        assert torch.equal(a.y, b.y)
        assert torch.equal(a.X, b.X)  # standardized to the last bit
    assert streamed.classes == memory.classes == ["no", "yes"]
    assert (streamed.feature_mean, streamed.feature_std) == (memory.feature_mean, memory.feature_std)
    knobs = Knobs(l1=1e-3, l2=1e-3, dropout=(0.2,), input_dropout=0.1)
    a = train(memory, spec.model, spec.training, knobs, seed=3)
    b = train(streamed, spec.model, spec.training, knobs, seed=3)
    assert len(a.curve_train) == 3
    assert b.curve_train == pytest.approx(a.curve_train, rel=1e-5)
    assert b.curve_val == pytest.approx(a.curve_val, rel=1e-5)
    assert (b.train_acc, b.val_acc) == pytest.approx((a.train_acc, a.val_acc), abs=1e-6)  # float32 means
    assert b.sparsity == a.sparsity
    assert a.model is not None and b.model is not None
    for (name, wa), wb in zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True):
        assert torch.equal(wa, wb), name  # the same batches in the same order: the same steps
    test_memory = evaluate(a.model, memory.test, memory.task)
    assert evaluate(b.model, streamed.test, streamed.task) == pytest.approx(test_memory, rel=1e-5)
    assert loss_standard_error(b.model, streamed.val, streamed.task) == pytest.approx(
        loss_standard_error(a.model, memory.val, memory.task), rel=1e-4)
    release(streamed)
    assert list(table.glob("regtune-stream-*")) == []


def test_a_stop_mid_epoch_cancels_a_streamed_run_and_stops_its_workers(
        tiny: Tiny, table: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import multiprocessing

    import tuner.train._loop as loop

    monkeypatch.setattr(loop, "STOP_POLL_S", 0.0)  # ask before every step
    spec = _spec(tiny, training={"epochs": 3, "batch_size": 8})
    _, streamed = _both(spec, monkeypatch)
    asked = {"n": 0}

    def stop_at_fifth_step() -> bool:
        asked["n"] += 1
        return asked["n"] >= 5

    with pytest.raises(Cancelled, match="during epoch 1"):
        train(streamed, spec.model, spec.training, Knobs(), seed=0, should_stop=stop_at_fifth_step)
    assert asked["n"] == 5
    assert multiprocessing.active_children() == []  # the DataLoader's workers are gone


def test_cross_validation_on_streamed_data_is_refused_naming_the_rule(
        tiny: Tiny, table: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = parse_spec(tiny(dataset={"source": "upload", "name": None, "id": UPLOAD_ID, "target": "label",
                                    "split": {"val": None, "test": 0.2, "folds": 3}}))
    monkeypatch.setenv(MEMORY_DATA_BYTES, "1")
    with pytest.raises(DataError) as info:
        load_dataset(spec.dataset, spec.seed)
    issue = info.value.issues[0]
    assert issue.field == "dataset.split.folds"
    assert "cross-validation needs the data in memory" in issue.message and MEMORY_DATA_BYTES in issue.message
    assert list(table.glob("regtune-stream-*")) == []  # refused before any cache was written


def test_a_bad_threshold_is_refused_naming_the_variable(
        tiny: Tiny, table: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MEMORY_DATA_BYTES, "1GB")
    with pytest.raises(Exception, match=f"The {MEMORY_DATA_BYTES} environment variable must be an integer >= 0"):
        load_dataset(_spec(tiny).dataset, 0)


def test_a_job_runs_on_streamed_data_and_leaves_no_cache(
        tiny: Tiny, table: Path, monkeypatch: pytest.MonkeyPatch, sqlite_url: str) -> None:
    monkeypatch.setenv(MEMORY_DATA_BYTES, "1")
    spec = _spec(tiny, training={"epochs": 2, "batch_size": 32},
                 search={"batch": "auto", "space": {"l1": {"low": 1e-4, "high": 1e-1, "log": True},
                                                    "l2": {"low": 1e-5, "high": 1e-1, "log": True}},
                         "stages": [{"name": "baseline", "params": [], "trials": 1},
                                    {"name": "l1", "params": ["l1"], "trials": 2, "path": True},
                                    {"name": "l2", "params": ["l2"], "trials": 2}]},
                 report={"top_k": 1, "seeds": 1})
    report = run_job(spec, storage=sqlite_url)
    assert [s.completed for s in report.stages] == [1, 2, 2]
    assert report.chosen.test_loss > 0 and report.chosen.test_acc is not None
    assert report.features is not None and len(report.features.kept) + len(report.features.removed) == 6
    assert list(table.glob("regtune-stream-*")) == []  # the job's cache is gone with its data


def test_a_streamed_job_cancelled_mid_epoch_stops_its_workers_and_leaves_no_cache(
        tiny: Tiny, table: Path, monkeypatch: pytest.MonkeyPatch, sqlite_url: str) -> None:
    import multiprocessing

    import tuner.train._loop as loop

    monkeypatch.setattr(loop, "STOP_POLL_S", 0.0)  # ask before every step
    monkeypatch.setenv(MEMORY_DATA_BYTES, "1")
    asked = {"n": 0}

    def stop_soon() -> bool:  # the baseline's first epoch has 6 steps: this stops the l2 stage's first trial
        asked["n"] += 1
        return asked["n"] > 40

    spec = _spec(tiny, training={"epochs": 2, "batch_size": 32})
    with pytest.raises(Cancelled):
        run_job(spec, storage=sqlite_url, should_stop=stop_soon)
    l2 = optuna.load_study(study_name="tiny/l2", storage=sqlite_url).trials
    assert [t.user_attrs.get("interrupted") for t in l2 if t.state == TrialState.FAIL] == [True]
    assert multiprocessing.active_children() == []
    assert list(table.glob("regtune-stream-*")) == []


def test_a_text_feature_in_a_streamed_table_is_refused_naming_the_rule(
        tiny: Tiny, table: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"f0": [1.0, 2.0, 3.0, 4.0], "city": ["a", "b", "a", "c"], "label": [0, 1, 0, 1]}),
                   tmp_path / "data" / "uploads" / f"{UPLOAD_ID}.parquet")
    monkeypatch.setenv(MEMORY_DATA_BYTES, "0")
    with pytest.raises(DataError) as info:
        load_dataset(_spec(tiny).dataset, 0)
    issue = info.value.issues[0]
    assert issue.field == "dataset.path"
    assert issue.message == (f"column 'city' of 'uploads/{UPLOAD_ID}.parquet' must hold numbers, but it is string: "
                             f"a table over {MEMORY_DATA_BYTES} is streamed from disk, and its features must be finite "
                             "numbers (integers or floats), none missing; categories and missing values are read in "
                             "memory only")


def test_streamed_data_trains_one_trial_at_a_time_and_pickles_as_its_file(
        tiny: Tiny, table: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pickle

    from tuner.backends import trials_per_batch

    spec = _spec(tiny, search={"batch": "auto"})
    memory, streamed = _both(spec, monkeypatch)
    assert trials_per_batch(spec, memory, 12) > 1 and trials_per_batch(spec, streamed, 12) == 1
    copy = pickle.loads(pickle.dumps(streamed.train))  # as a Ray worker receives it: the file's name, no copy of X
    assert len(pickle.dumps(streamed.train)) < streamed.train.X.numel() * 4
    assert isinstance(copy, StreamSplit) and copy.cache is None and torch.equal(copy.X, memory.train.X)
    del copy
    assert len(list(table.glob("regtune-stream-*/*.f32"))) == 3  # a copy owns nothing: the cache stays
