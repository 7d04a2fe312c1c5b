"""`regtune run` killed with SIGKILL mid-stage, then run again: exact budgets, nothing left RUNNING."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from _gate import ENV, GATED, EpochGate
from optuna.trial import TrialState

Tiny = Callable[..., dict[str, Any]]


def _regtune() -> list[str]:
    exe = shutil.which("regtune")
    return [exe] if exe else [sys.executable, "-m", "api.cli"]


def _states(storage: str, name: str) -> list[TrialState]:
    try:
        return [t.state for t in optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)]
    except KeyError:  # the study does not exist yet
        return []


def test_sigkill_mid_stage_then_resume(tiny: Tiny, tmp_path: Path) -> None:
    spec = tiny(name="killme", training={"epochs": 30}, search={"stages": [
        {"name": "baseline", "params": [], "trials": 1},
        {"name": "l2", "params": ["l2"], "trials": 6},
    ]})
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    storage = f"sqlite:///{tmp_path}/runs.db"
    args = ["run", str(path), "--storage", storage, "--out", str(tmp_path / "out"), "--quiet"]
    gate = EpochGate(tmp_path / "gate", trial=4, epoch=2)  # the baseline, 2 l2 trials, then the third waits
    proc = subprocess.Popen([sys.executable, str(GATED), *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True, env=os.environ | {ENV: gate.env})
    try:
        gate.wait(alive=lambda: proc.poll() is None)
        assert _states(storage, "killme/l2").count(TrialState.COMPLETE) == 2
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert TrialState.RUNNING in _states(storage, "killme/l2")
    assert not (tmp_path / "out" / "report.json").exists()

    done = subprocess.run([*_regtune(), *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    study = optuna.load_study(study_name="killme/l2", storage=storage)
    trials = study.get_trials(deepcopy=False)
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 6
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    interrupted = [t for t in trials if t.user_attrs.get("interrupted")]
    assert interrupted and all(t.state == TrialState.FAIL for t in interrupted)
    assert sum(s == TrialState.COMPLETE for s in _states(storage, "killme/baseline")) == 1
    assert (tmp_path / "out" / "report.json").exists()


def test_a_bad_spec_exits_non_zero_with_the_rule_and_no_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\ndataset: {source: sklearn, name: breast_cancer}\n"
                    "search: {space: {l2: {low: 1.0, high: 0.001, log: true}}}\n")
    done = subprocess.run([*_regtune(), "run", str(path), "--storage", f"sqlite:///{tmp_path}/x.db"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "search.space.l2: low <= high must hold, but got (low=1.0, high=0.001)" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(("text", "says"), [
    ("training: {lr: .inf}\n", "training.lr: must be a finite number (not inf or NaN), but got inf"),
    ("training: {epochs: true}\n", "training.epochs: must be an integer"),
    ("training: {lr: 0.1, lr: 0.2}\n", "training.lr: the key 'lr' appears more than once in one mapping"),
    ("search: {sampler: grid, space: {l2: {low: 1.0e-5, high: 0.1, grid: 30}}}\n",
     "REGTUNE_MAX_GRID_POINTS"),
])
def test_regtune_run_refuses_what_the_service_refuses(tmp_path: Path, text: str, says: str,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from api.cli import main

    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\ndataset: {source: sklearn, name: iris}\n" + text)
    monkeypatch.setenv("REGTUNE_MAX_GRID_POINTS", "20")  # regtune run reads the limits from the environment
    code = main(["run", str(path), "--storage", f"sqlite:///{tmp_path}/x.db", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and says in err, err
