"""Ctrl-C stops a run at once: `autoresearch run` in a real subprocess, signalled as a terminal would.

The first SIGINT prints one line at once; no model request and no training starts after it; what is in flight
finishes and is kept. The second exits within seconds: in-flight calls abandoned, train.py stopped, the lock
released. An interrupt is never a model failure and never a refusal; the same command resumes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from agents.lock import RunLock
from agents.record.journal import Journal, Phase, RunKind
from tests.llm_server import ParsedRequest, Reply, ScriptedLLMServer
from tests.test_loop_llm import ScriptedCrew, _llm_repo
from tests.toyrepo import ROOT, check_consistency, make_toy_repo

pytestmark = pytest.mark.slow  # subprocess loops that train

TITLES = ["DEPTH 2 -> 3", "MATRIX_LR 0.01 -> 0.02", "EMBEDDING_LR 0.6 -> 0.5", "WARMDOWN_RATIO 0.5 -> 0.4"]


class Cli:
    """`autoresearch ARGS` in its own session (a terminal's process group), its output read as it comes."""

    def __init__(self, repo: Path, *args: str, env: dict | None = None):
        self.lines: list[tuple[float, str]] = []
        self.proc = subprocess.Popen([sys.executable, "-m", "agents.cli", *args],
                                     cwd=repo, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                                     start_new_session=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    def ctrl_c(self) -> float:
        """SIGINT to the whole process group, as the terminal sends it; returns when."""
        at = time.monotonic()
        os.killpg(self.proc.pid, signal.SIGINT)
        return at

    def said(self, text: str, since: float = 0.0) -> float | None:
        return next((at for at, line in list(self.lines) if text in line and at >= since), None)

    def wait_for(self, what, timeout: float, every: float = 0.05):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = what()
            if found:
                return found
            if self.proc.poll() is not None:
                break
            time.sleep(every)
        raise AssertionError(f"timed out; output:\n{self.output}")

    @property
    def output(self) -> str:
        return "\n".join(line for _, line in list(self.lines))

    def finish(self, timeout: float) -> int:
        try:
            code = self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
        self._reader.join(5)
        return code


def Run(repo: Path, *args: str, env: dict | None = None) -> Cli:  # noqa: N802  (reads like the command)
    """`autoresearch run --no-live --tag t1 ARGS`."""
    return Cli(repo, "run", "--no-live", "--tag", "t1", *args, env=env)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _training(repo: Path, local: bool = True) -> list:
    """Experiments handed to a worker (on this machine: with the pid of their train.py)."""
    return [e for e in Journal(repo / "runs" / "t1").unfinished()
            if e.kind == RunKind.EXPERIMENT and e.phase == Phase.COMMITTED and e.started and (e.pid or not local)]


def _assert_lock_free(repo: Path) -> None:
    RunLock(repo).ensure_free()


class HeldHypothesis(ScriptedCrew):
    """The first idea is answered only after `hold` seconds (a slow model), everything else at once."""

    def __init__(self, titles: list[str], hold: float):
        super().__init__(titles)
        self.hold, self.held = hold, threading.Event()

    def __call__(self, request: ParsedRequest) -> Reply:
        reply = super().__call__(request)
        if request.schema_name == "Idea" and not self.held.is_set():
            self.held.set()
            return reply.after(self.hold)
        return reply


def test_ctrl_c_during_a_slow_reply_says_so_at_once_sends_nothing_more_and_a_second_one_exits(tmp_path):
    crew = HeldHypothesis(TITLES, hold=120.0)
    with ScriptedLLMServer(crew, lifetime_s=600) as server:
        repo, _ = _llm_repo(tmp_path, "openai/local", base_url=server.base_url_openai,
                            loop={"max_experiments": 2, "time_budget": 0.3}, role_extra={"timeout_s": 300})
        run = Run(repo, env={"OPENAI_API_KEY": "sk-test"})
        run.wait_for(crew.held.is_set, timeout=240)
        time.sleep(1.0)
        first = run.ctrl_c()
        sent = len(server.requests)
        said = run.wait_for(lambda: run.said("stopping: Ctrl-C", since=first), timeout=5)
        assert said - first < 5, run.output
        assert "press Ctrl-C again to stop now" in run.output
        time.sleep(3.0)
        assert run.proc.poll() is None  # waiting for the reply in flight, as it said
        second = run.ctrl_c()
        code = run.finish(timeout=15)
        ended = time.monotonic()
        assert code == 130, run.output
        assert ended - second < 5, f"exited {ended - second:.1f} s after the second Ctrl-C"
        assert len(server.requests) == sent, [r.schema_name for r in server.requests[sent:]]
        assert "stopped now" in run.output and "Traceback" not in run.output
        _assert_lock_free(repo)
        records = check_consistency(repo, "t1") if (repo / "runs" / "t1" / "results.parquet").exists() else []
        assert not [r for r in records if r.status in ("skipped", "veto", "repeat", "error")]

        # the same command resumes: nothing was given up, refused or counted twice
        server.responder = ScriptedCrew(TITLES)
        again = Run(repo, env={"OPENAI_API_KEY": "sk-test"})
        assert again.finish(timeout=400) == 0, again.output
    records = check_consistency(repo, "t1")
    assert sum(r.status in ("keep", "discard", "crash") for r in records) == 2
    assert not [r for r in records if r.status in ("skipped", "error")], [(r.exp_id, r.status) for r in records]
    assert not any(r.degraded_roles for r in records)
    assert Journal(repo / "runs" / "t1").unfinished() == []


def test_a_first_ctrl_c_lets_the_training_finish_and_keeps_it_then_the_run_resumes(tmp_path):
    repo = tmp_path / "repo"
    make_toy_repo(repo, loop={"max_experiments": 2, "time_budget": 6.0})
    run = Run(repo)
    (entry,) = run.wait_for(lambda: _training(repo), timeout=240)
    first = run.ctrl_c()
    run.wait_for(lambda: run.said("stopping: Ctrl-C", since=first), timeout=5)
    time.sleep(1.0)
    assert _alive(entry.pid), "the first Ctrl-C stopped the training in flight"
    assert run.finish(timeout=120) == 130, run.output
    assert "stopped: stopped on request (Ctrl-C pressed)" in " ".join(run.output.split())
    records = check_consistency(repo, "t1")
    assert [r.status for r in records if r.exp_id == entry.exp_id] in (["keep"], ["discard"], ["crash"])
    assert sum(r.status in ("keep", "discard", "crash") for r in records) == 1  # nothing new started after it
    _assert_lock_free(repo)
    again = Run(repo)
    assert again.finish(timeout=400) == 0, again.output
    records = check_consistency(repo, "t1")
    assert sum(r.status in ("keep", "discard", "crash") for r in records) == 2
    assert all(r.lesson for r in records if r.status in ("keep", "discard", "crash"))
    assert Journal(repo / "runs" / "t1").unfinished() == []


def test_a_second_ctrl_c_stops_train_py_releases_the_lock_and_the_experiment_resumes(tmp_path):
    repo = tmp_path / "repo"
    make_toy_repo(repo, loop={"max_experiments": 1, "time_budget": 8.0})
    run = Run(repo)
    (entry,) = run.wait_for(lambda: _training(repo), timeout=300)
    run.ctrl_c()
    run.wait_for(lambda: run.said("stopping: Ctrl-C"), timeout=5)
    second = run.ctrl_c()
    assert run.finish(timeout=15) == 130, run.output
    assert time.monotonic() - second < 5
    assert not _alive(entry.pid), "train.py outlived the second Ctrl-C"
    _assert_lock_free(repo)
    journalled = Journal(repo / "runs" / "t1").read(entry.exp_id)
    assert journalled.phase == Phase.COMMITTED  # the experiment in flight is kept for the next run
    again = Run(repo)
    assert again.finish(timeout=400) == 0, again.output
    records = check_consistency(repo, "t1")
    assert [r.exp_id for r in records if r.status in ("keep", "discard", "crash")] == [entry.exp_id]


def test_ctrl_c_stops_a_compare_between_its_runs_and_the_same_command_continues(tmp_path):
    import json

    from tests.test_compare import toy_with_variants

    repo, paths = toy_with_variants(tmp_path, a={"loop": {"time_budget": 6.0}}, b={"loop": {"time_budget": 6.0}})
    args = ["compare", str(paths["a"]), str(paths["b"]), "--experiments", "1"]
    manifest = repo / "runs" / "a-vs-b" / "manifest.json"

    def training() -> bool:
        return any(p.name == "0002.log" for p in (repo / "runs" / "a-vs-b").rglob("*.log"))

    run = Cli(repo, *args)
    run.wait_for(training, timeout=300)
    first = run.ctrl_c()
    run.wait_for(lambda: run.said("stopping: Ctrl-C", since=first), timeout=5)
    assert run.finish(timeout=180) == 130, run.output
    states = {tag: r["state"] for tag, r in json.loads(manifest.read_text())["runs"].items()}
    assert sorted(states.values()) == ["interrupted", "pending"], states  # the second run never started
    assert "Traceback" not in run.output
    again = Cli(repo, *args)
    assert again.finish(timeout=600) == 0, again.output
    states = {tag: r["state"] for tag, r in json.loads(manifest.read_text())["runs"].items()}
    assert set(states.values()) == {"done"}, states


def test_with_workers_on_ray_the_first_ctrl_c_spares_training_and_the_second_stops_it(tmp_path):
    pytest.importorskip("ray")
    from tests.test_scale_out import _training as experiments_training  # their train.py processes, by id

    repo = tmp_path / "repo"
    make_toy_repo(repo, loop={"max_experiments": 4, "time_budget": 30.0}, crew_extra={"cluster": {"workers": 2}})
    marker = f"{os.getpid()}-{time.monotonic_ns()}"
    # a local Ray instance of the run's own: its processes share the terminal's process group with the command
    run = Run(repo, env={"TEST_RUN_MARKER": marker, "RAY_AUTH_MODE": "disabled"})
    run.wait_for(lambda: _training(repo, local=False), timeout=400)
    pids = list(run.wait_for(lambda: experiments_training(marker), timeout=60).values())
    first = run.ctrl_c()
    run.wait_for(lambda: run.said("stopping: Ctrl-C", since=first), timeout=5)
    time.sleep(2.0)
    assert all(_alive(pid) for pid in pids), "the first Ctrl-C reached train.py on a Ray worker"
    second = run.ctrl_c()
    assert run.finish(timeout=15) == 130, run.output
    assert time.monotonic() - second < 5
    time.sleep(1.0)
    assert experiments_training(marker) == {}, "train.py outlived the second Ctrl-C"
    assert not any(_alive(pid) for pid in pids)
    _assert_lock_free(repo)
    assert [e.phase for e in Journal(repo / "runs" / "t1").unfinished() if e.kind == RunKind.EXPERIMENT and e.started]
