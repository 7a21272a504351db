"""Kill -9 at any phase, run again: every experiment accounted for once; results, git, refs and memory agree."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agents.record.journal import Journal
from tests.toyrepo import ROOT, check_consistency, make_toy_repo

pytestmark = pytest.mark.slow  # training runs, Ray, subprocess loops

# One kill point per phase an experiment passes through (tests/kill_points.py installs them); the n-th pass
# counts from the process start, so a 3rd pass is the first experiment after the two baseline runs.
KILL_POINTS = [
    ("propose", 1),  # the crew is proposing: nothing is written yet
    ("reviewed", 1),  # coded and reviewed, written ahead, not committed
    ("commit", 1),  # about to write train.py and commit
    ("training", 3),  # train.py is running (left as an orphan)
    ("trained", 3),  # the evaluator's record is in, nothing decided
    ("memory", 3),  # results written, memory not yet
    ("analyse", 1),  # recorded, the analyst is explaining it
]


def _loop_process(repo: Path, config: Path, kill_at: str | None, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "tests.kill_points", str(repo), str(config), kill_at or ""], cwd=repo,
                          env=env, capture_output=True, text=True, timeout=timeout)


def _memory_ids(repo: Path) -> list[str]:
    from memory.store import ExperimentMemory

    memory = ExperimentMemory.open(repo / ".autoresearch" / "memory", read_only=True)
    try:
        return sorted(h.exp_id for h in memory.where({"tag": "t1"}))
    finally:
        memory.close()


@pytest.mark.parametrize(("phase", "nth"), KILL_POINTS, ids=[f"{p}@{n}" for p, n in KILL_POINTS])
def test_kill_at_any_phase_then_resume(tmp_path, phase, nth):
    repo = tmp_path / "repo"
    config = make_toy_repo(repo, loop={"max_experiments": 2, "time_budget": 0.3})

    killed = _loop_process(repo, config, f"{phase}@{nth}")
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr

    resumed = _loop_process(repo, config, None)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "STOP: reached max_experiments" in resumed.stdout

    records = check_consistency(repo, "t1")
    trained = [r for r in records if r.status in ("keep", "discard", "crash")]
    assert len(trained) == 2, [(r.exp_id, r.status) for r in records]
    # a candidate resumed from the journal is known to the crew: the same idea is not trained twice
    assert len({r.description for r in trained}) == 2, [(r.exp_id, r.description) for r in trained]
    assert sum(r.status == "baseline" for r in records) == 2
    assert all(r.lesson for r in trained), "an interrupted analysis was not completed"
    assert Journal(repo / "runs" / "t1").unfinished() == []
    assert _memory_ids(repo) == sorted(r.exp_id for r in records), "memory and results disagree\n" + resumed.stdout


def test_a_second_runner_is_refused_and_a_stale_lock_is_taken_over(tmp_path):
    from agents.assemble import build_settings
    from agents.lock import RunLockError
    from agents.loop import run_loop

    repo = tmp_path / "repo"
    config = make_toy_repo(repo, loop={"max_experiments": 1, "time_budget": 3.0})
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    first = subprocess.Popen([sys.executable, "-m", "tests.kill_points", str(repo), str(config)], cwd=repo, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while not list((repo / "runs" / "t1").glob("*.log")) and time.monotonic() < deadline:
            time.sleep(0.2)
        with pytest.raises(RunLockError, match="another autoresearch run is active"):
            build_settings(repo, config, "t1")
    finally:
        first.kill()
        first.wait()
    # the killed runner left its lock file behind: the next run takes it over
    assert (repo / ".autoresearch" / "run.lock").read_text().startswith("pid")
    notes = []
    settings = build_settings(repo, config, "t1")
    settings.on_event = lambda e: notes.append(e.message)
    try:
        run_loop(settings)
    finally:
        settings.memory.close()
    assert any("took over a stale lock" in n for n in notes)
    check_consistency(repo, "t1")
