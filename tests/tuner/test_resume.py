"""Resuming `regtune run`: after SIGKILL (exact budgets, nothing left RUNNING), after Ctrl-C (exit 130), and never
over a different spec; exit statuses."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from _gate import ENV, GATED, EpochGate
from optuna.trial import TrialState

from api.cli import main
from tuner import SpecError, parse_spec, run_job

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
    spec = tiny(name="killme", training={"epochs": 30}, search={"batch": 1, "stages": [  # the gate holds ``train``
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


def _two_stages(tiny: Tiny, **over: Any) -> dict[str, Any]:
    stages = [{"name": "baseline", "params": [], "trials": 1}, {"name": "l2", "params": ["l2"], "trials": 2}]
    parts: dict[str, Any] = {"name": "same", "training": {"epochs": 2}, "report": {"seeds": 0, "top_k": 1}}
    return tiny(**parts | over | {"search": {"stages": stages, **over.get("search", {})}})


def test_resuming_a_different_spec_is_refused_naming_the_change(tiny: Tiny, sqlite_url: str) -> None:
    run_job(parse_spec(_two_stages(tiny)), storage=sqlite_url)
    narrowed = _two_stages(tiny, search={"space": {"l2": {"low": 1e-3, "high": 1e-2, "log": True}}})
    with pytest.raises(SpecError, match=r"study 'same/l2' in this storage holds trials of a different spec "
                                        r"\(search\.space\.l2\.high: 0\.1 → 0\.01; "
                                        r"search\.space\.l2\.low: 1e-05 → 0\.001\).* new name, or run it with --fresh"):
        run_job(parse_spec(narrowed), storage=sqlite_url)
    other_data = _two_stages(tiny, dataset={"name": "wine"})
    with pytest.raises(SpecError, match=r"'same/baseline' .*dataset\.name: \"breast_cancer\" → \"wine\""):
        run_job(parse_spec(other_data), storage=sqlite_url)
    with pytest.raises(SpecError, match=r"search\.objective: \[\"val_loss\"\] → \[\"val_error\"\]"):
        run_job(parse_spec(_two_stages(tiny, search={"objective": "val_error"})), storage=sqlite_url)
    # report settings cannot change a trial: the finished studies are reused as they are
    again = run_job(parse_spec(_two_stages(tiny, report={"seeds": 1, "top_k": 1})), storage=sqlite_url)
    assert again.chosen.seeds.n == 2
    assert len(optuna.load_study(study_name="same/l2", storage=sqlite_url).get_trials()) == 2
    # --fresh deletes the job's studies and runs the new spec from scratch
    fresh = run_job(parse_spec(narrowed), storage=sqlite_url, fresh=True)
    assert 1e-3 <= fresh.stages[1].best_params["l2"] <= 1e-2
    assert len(optuna.load_study(study_name="same/l2", storage=sqlite_url).get_trials()) == 2


def _write(tmp_path: Path, spec: dict[str, Any] | str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(spec if isinstance(spec, str) else yaml.safe_dump(spec))
    return path


def test_exit_status_tells_a_failed_run_from_an_invalid_spec(tiny: Tiny, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    spec = _two_stages(tiny)
    # a plain file name is a SQLite file in the working directory
    assert main(["run", str(_write(tmp_path, spec)), "--storage", "runs.db", "--quiet"]) == 0
    assert len(optuna.load_study(study_name="same/l2", storage="sqlite:///runs.db").get_trials()) == 2
    assert (tmp_path / "runs" / "same" / "report.html").exists()
    capsys.readouterr()
    changed = _two_stages(tiny, seed=1)
    assert main(["run", str(_write(tmp_path, changed)), "--storage", "runs.db", "--quiet"]) == 2
    assert "seed: 0 → 1" in capsys.readouterr().err
    # every trial fails (a loss that overflows): the spec was fine, the run failed
    diverging = _two_stages(tiny, name="diverges", training={"epochs": 2, "lr": 1e30, "optimizer": "sgd"})
    assert main(["run", str(_write(tmp_path, diverging)), "--storage", "runs.db", "--quiet"]) == 1
    assert "regtune: the run failed: stage 'baseline'" in capsys.readouterr().err
    assert main(["run", str(_write(tmp_path, spec)), "--storage", "postgres:/x", "--quiet"]) == 2
    assert "'postgres:/x' is not a database URL; a URL looks like sqlite:///runs.db" in capsys.readouterr().err


def test_ctrl_c_mid_trial_exits_130_and_fails_the_trial_as_interrupted(tiny: Tiny, tmp_path: Path) -> None:
    # the gate holds ``train``, the lone loop
    path = _write(tmp_path, tiny(name="ctrlc", training={"epochs": 30}, search={"batch": 1}))
    storage = f"sqlite:///{tmp_path}/runs.db"
    gate = EpochGate(tmp_path / "gate", trial=2, epoch=1)  # the first l2 trial waits after its first epoch
    log = tmp_path / "stderr.log"
    with log.open("w") as stderr:
        proc = subprocess.Popen([sys.executable, str(GATED), "run", str(path), "--storage", storage, "--quiet"],
                                stdout=subprocess.DEVNULL, stderr=stderr, cwd=tmp_path,
                                env=os.environ | {ENV: gate.env},  # SIGINT as a terminal has it: not ignored
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        gate.wait(alive=lambda: proc.poll() is None)
        proc.send_signal(signal.SIGINT)
        # the trial is let go only once the process has taken the Ctrl-C, so it stops after this very epoch
        deadline = time.monotonic() + 120
        while "interrupted: stopping 1 running trial(s) of stage l2" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.05)
        gate.release()
        proc.wait(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = log.read_text()
    assert proc.returncode == 130, err[-2000:]
    assert "terminate called" not in err and "Traceback" not in err
    assert "interrupted; run the same command again to resume" in err
    trials = optuna.load_study(study_name="ctrlc/l2", storage=storage).get_trials()
    assert [(t.state, t.user_attrs.get("interrupted"), t.user_attrs.get("fail_reason")) for t in trials] == [
        (TrialState.FAIL, True, "interrupted (Ctrl-C) after epoch 1")]


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
