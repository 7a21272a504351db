"""Where a training run happens: the task a worker is given, how a worker runs it, and the local executor.

The coordinator (agents/loop.py) hands a `TrainingTask` to an executor and later collects `Finished` runs.
Every executor runs a task the same way, through `start_in_scratch`: the candidate's train.py text and the
locked prepare.py go into a scratch directory of their own, prepare.py's hash is checked there, and the
runner (agents/bench/runner.py: scrubbed environment, hard kill, the evaluator's record) starts train.py in
it. So several experiments can train at once, none touches the repository's working tree, and a worker on
another machine needs nothing but the task.

`LocalExecutor` runs tasks on this machine as subprocesses (one at a time by default: no Ray involved);
`agents.bench.cluster.RayExecutor` runs them as Ray tasks across a cluster. This module imports only the
standard library and the runner, so Ray can ship it to worker nodes by value.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from agents.bench.runner import RunResult, TrainingJob, start_training


@dataclass
class TrainingTask:
    """Everything one training run needs, shipped as it is to whichever worker runs it."""

    exp_id: str  # names the log and the record; re-runs and confirmations have their own ('0007.r1')
    train_py: str
    prepare_py: str
    prepare_sha: str  # the locked hash; checked on the worker before anything runs
    seed: int
    time_budget: float | None
    hard_timeout_s: float | None = None
    extra_env: dict = field(default_factory=dict)
    # keyword arguments for the runner, passed through untouched (new runner options need no change here)
    runner_options: dict = field(default_factory=dict)
    cache_dir: str | None = None  # a data cache every node sees at this path; None: the worker's own


@dataclass
class Running:
    """A task handed to a worker: where it went and since when (time.time())."""

    exp_id: str
    node: str
    worker: str  # the slot's label in the live view ("host #1")
    started: float
    pid: int = 0  # of train.py, when it runs on this machine (a resumed run stops an orphan by it)

    @property
    def elapsed(self) -> float:
        return time.time() - self.started


@dataclass
class Finished:
    """A run that is over, or whose worker vanished before it was (`lost` says why; `result` is None)."""

    exp_id: str
    result: RunResult | None
    node: str = ""
    gpu: str = ""
    lost: str = ""


class Executor(Protocol):
    """What the coordinator needs from wherever training happens."""

    slots: int  # runs that can be in flight at once

    def free_slots(self) -> int: ...

    def submit(self, task: TrainingTask) -> Running: ...

    def wait(self, timeout: float) -> list[Finished]: ...

    def running(self) -> dict[str, Running]: ...

    def close(self, hurry: bool = False) -> None: ...  # stop what runs; `hurry`: the user asked to stop now


class PrepareMismatch(RuntimeError):
    """The prepare.py a worker received is not the locked one."""


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def gpu_label(env: dict | None = None) -> str:
    """The device a run on this worker uses: the GPU ids it may see, or "cpu"."""
    visible = (env if env is not None else os.environ).get("CUDA_VISIBLE_DEVICES", "").strip()
    return f"gpu{visible}" if visible and visible not in ("-1", "none", "NoDevFiles") else "cpu"


def start_in_scratch(task: TrainingTask, scratch: Path, log_dir: Path, python: str = sys.executable) -> TrainingJob:
    """Write train.py and prepare.py into `scratch`, check prepare.py's hash, start the runner there.

    The one place a training run is started: baselines, experiments, re-runs and confirmations, on this
    machine or on a worker node, all come through here with the task's runner options.
    """
    if text_sha256(task.prepare_py) != task.prepare_sha:
        raise PrepareMismatch(f"the prepare.py shipped for {task.exp_id} is not the locked one "
                              f"(sha256 {text_sha256(task.prepare_py)[:12]} != {task.prepare_sha[:12]})")
    scratch = Path(scratch)
    if scratch.exists():
        shutil.rmtree(scratch)  # left by a run that was cut short: never train on its leftovers
    scratch.mkdir(parents=True)
    (scratch / "prepare.py").write_text(task.prepare_py, encoding="utf-8")
    (scratch / "train.py").write_text(task.train_py, encoding="utf-8")
    env = dict(task.extra_env)
    if task.cache_dir:
        env["AUTORESEARCH_CACHE"] = task.cache_dir
    return start_training(scratch, log_dir, task.exp_id, time_budget=task.time_budget, seed=task.seed,
                          hard_timeout_s=task.hard_timeout_s, python=python, extra_env=env, **task.runner_options)


def failed_result(exp_id: str, log_dir: Path, error: str) -> RunResult:
    """A run that could not even start (say, a worker whose prepare.py is wrong), as a crash with a log."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{exp_id}.log"
    log_path.write_text(error + "\n")
    return RunResult(status="crash", val_bpb=None, record=None, summary={}, returncode=None, wall_seconds=0.0,
                     log_path=log_path, log_tail=error, error=error, exp_id=exp_id)


class LocalExecutor:
    """Runs tasks as subprocesses on this machine, `slots` at a time, each in run_dir/scratch/<exp_id>."""

    def __init__(self, run_dir: Path, python: str = sys.executable, slots: int = 1, gpu: str | None = None):
        self.run_dir, self.python, self.slots = Path(run_dir), python, slots
        self.node = socket.gethostname()
        self.gpu = gpu or gpu_label()
        self._jobs: dict[str, tuple[TrainingJob | RunResult, Running]] = {}

    def free_slots(self) -> int:
        return self.slots - len(self._jobs)

    def submit(self, task: TrainingTask) -> Running:
        worker = f"{self.node} #{len(self._jobs) + 1}"
        try:
            job: TrainingJob | RunResult = start_in_scratch(task, self._scratch(task.exp_id), self.run_dir,
                                                            self.python)
            pid = job.pid
        except (PrepareMismatch, OSError) as exc:
            job, pid = failed_result(task.exp_id, self.run_dir, f"could not start: {exc}"), 0
        running = Running(task.exp_id, self.node, worker, time.time(), pid)
        self._jobs[task.exp_id] = (job, running)
        return running

    def wait(self, timeout: float) -> list[Finished]:
        deadline = time.monotonic() + timeout
        while True:
            done = []
            for exp_id, (job, _) in list(self._jobs.items()):
                result = job if isinstance(job, RunResult) else job.poll()
                if result is not None:
                    del self._jobs[exp_id]
                    shutil.rmtree(self._scratch(exp_id), ignore_errors=True)
                    done.append(Finished(exp_id, result, self.node, self.gpu))
            if done or time.monotonic() >= deadline:
                return done
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))

    def running(self) -> dict[str, Running]:
        return {exp_id: running for exp_id, (_, running) in self._jobs.items()}

    def close(self, hurry: bool = False) -> None:
        """Stop whatever still runs (an interrupted loop); the journal re-queues it next time. Every run is told
        at once; `hurry` (a second Ctrl-C) kills without the grace period."""
        jobs = [job for job, _ in self._jobs.values() if isinstance(job, TrainingJob)]
        for job in jobs:
            job.kill(now=hurry)
        for job in jobs:
            job.wait()
        self._jobs.clear()

    def _scratch(self, exp_id: str) -> Path:
        return self.run_dir / "scratch" / exp_id


# ------------------------------------------------------------------------------------------ on a worker node


def run_on_worker(task: TrainingTask, scratch_root: str) -> tuple[RunResult, str, str, str]:
    """The body of a remote training run: (result, the whole log, the node's name, its GPU)."""
    root = Path(scratch_root) / task.exp_id
    out = root / "out"
    try:
        job = start_in_scratch(task, root / "work", out)
        try:
            result = job.wait()
        except KeyboardInterrupt:  # the task was cancelled (the coordinator stops): take train.py down too
            job.kill()
            raise
    except (PrepareMismatch, OSError) as exc:
        result = failed_result(task.exp_id, out, f"could not start on {socket.gethostname()}: {exc}")
    log = read_log(result)
    shutil.rmtree(root, ignore_errors=True)
    return result, log, socket.gethostname(), gpu_label()


def check_node(prepare_py: str, cache_dir: str | None, prepare_args: list[str] | None, scratch_root: str) -> dict:
    """On a worker node: the fingerprint of its data cache, preparing the cache first when it is missing.

    Returns {"node", "fingerprint"} or {"node", "error"}; the coordinator compares fingerprints, so a node
    whose data differs from its own (another corpus, another tokenizer) is left out rather than trusted.
    """
    import json
    import subprocess

    work = Path(scratch_root) / "node-check"
    work.mkdir(parents=True, exist_ok=True)
    (work / "prepare.py").write_text(prepare_py, encoding="utf-8")
    env = dict(os.environ, **({"AUTORESEARCH_CACHE": cache_dir} if cache_dir else {}))
    node = socket.gethostname()

    def fingerprint() -> tuple[dict | None, str]:
        done = subprocess.run([sys.executable, "prepare.py", "--fingerprint"], cwd=work, env=env,
                              capture_output=True, text=True)
        if done.returncode == 0:
            return json.loads(done.stdout.strip().splitlines()[-1]), ""
        lines = [line for line in (done.stderr or done.stdout).strip().splitlines() if line.strip()]
        return None, (lines[-1] if lines else f"prepare.py --fingerprint exited {done.returncode}")

    found, error = fingerprint()
    if found is None and prepare_args is not None:
        done = subprocess.run([sys.executable, "prepare.py", *prepare_args], cwd=work, env=env, capture_output=True,
                              text=True)
        if done.returncode != 0:
            lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
            return {"node": node, "error": "preparing its data failed: " + (lines[-1] if lines else "?")}
        found, error = fingerprint()
    shutil.rmtree(work, ignore_errors=True)
    return {"node": node, "fingerprint": found} if found is not None else {"node": node, "error": error}


def read_log(result: RunResult, limit_bytes: int = 8 << 20) -> str:
    """The run's whole log (its last `limit_bytes` when larger), to ship back from a worker node."""
    path = Path(result.log_path) if result.log_path else None
    if path is None or not path.exists():
        return result.log_tail
    size = path.stat().st_size
    with open(path, "rb") as fh:
        if size > limit_bytes:
            fh.seek(size - limit_bytes)
        return fh.read().decode("utf-8", errors="replace")


__all__ = ["Executor", "Finished", "LocalExecutor", "PrepareMismatch", "Running", "TrainingTask",
           "check_node", "failed_result", "gpu_label", "read_log", "run_on_worker", "start_in_scratch", "text_sha256"]
