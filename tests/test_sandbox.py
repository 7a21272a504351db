"""The sandbox around train.py, with no static rule in the way: a train.py that tries to escape is contained.

Each backend that starts here (bwrap, landlock) runs the same attacking train.py; `none` runs it too, as the
control that shows each attempt would succeed unconfined (so these tests can fail).
"""

from __future__ import annotations

import os
import socket
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest

from agents.bench import sandbox
from agents.bench.runner import run_training, start_training
from agents.bench.sandbox import SandboxUnavailable, select_sandbox
from tests.test_runner import FAKE_PREPARE, alive

BACKENDS = [name for name in sandbox.BACKENDS if sandbox.probe(name) is None]
needs_backend = pytest.mark.skipif(not BACKENDS, reason="no sandbox backend starts on this machine")


class CountingServer:
    """A TCP server on 127.0.0.1 that counts the connections it accepts."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.sock.close()


ESCAPES = """
import os, socket, subprocess, sys, time
import prepare

def attempt(name, action):
    try:
        action()
        print("ESCAPED", name, flush=True)
    except Exception as exc:
        print("BLOCKED", name, type(exc).__name__, flush=True)

def write_home():
    with open(os.path.join({home!r}, "dropped-by-train-py"), "w") as fh:
        fh.write("x")

def read_secret():
    print("SECRET", open({secret!r}).read().strip(), flush=True)

def write_results():
    with open({results!r}, "a") as fh:
        fh.write("forged")

def write_repo_prepare():
    with open({repo_prepare!r}, "a") as fh:
        fh.write("# tampered")

def connect():
    socket.create_connection(("127.0.0.1", {port}), timeout=3).close()

def outlive():
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", {marker!r}],
                     start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL)

attempt("write-home", write_home)
attempt("read-secret", read_secret)
attempt("write-results", write_results)
attempt("write-repo-prepare", write_repo_prepare)
attempt("connect", connect)
attempt("outlive", outlive)
prepare.write_record(1.0)
"""


def _marker_processes(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if marker.encode() in cmdline and alive(int(entry)):
                found.append(int(entry))
    return found


def _attack(tmp_path: Path, monkeypatch, name: str):
    """Run the escaping train.py under sandbox `name`; returns (result, outcome lines, evidence)."""
    home = tmp_path / "home"
    home.mkdir()
    secret = home / ".netrc"
    secret.write_text("machine example password hunter2-planted\n")
    monkeypatch.setenv("HOME", str(home))  # the user's HOME as the harness sees it
    workdir = tmp_path / "repo"
    workdir.mkdir()
    (workdir / "prepare.py").write_text(textwrap.dedent(FAKE_PREPARE))
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "results.parquet").write_text("the truth")
    marker = f"outlives-{uuid.uuid4().hex}"
    with CountingServer() as server:
        (workdir / "train.py").write_text(ESCAPES.format(
            home=str(home), secret=str(secret), results=str(runs / "results.parquet"),
            repo_prepare=str(workdir / "prepare.py"), port=server.port, marker=marker))
        result = run_training(workdir, runs, "attack", time_budget=5, seed=1, sandbox=name)
        time.sleep(0.2)  # let a connection that got through be counted
        accepted = server.accepted
    survivors = _marker_processes(marker)
    for pid in survivors:  # the control run's daemon: do not leave it behind
        os.kill(pid, 9)
    outcome = {line.split()[1]: line.split()[0] for line in result.log_tail.splitlines()
               if line.startswith(("ESCAPED", "BLOCKED"))}
    evidence = {
        "home": sorted(p.name for p in home.iterdir()),
        "results": (runs / "results.parquet").read_text(),
        "repo_prepare": (workdir / "prepare.py").read_text() == textwrap.dedent(FAKE_PREPARE),
        "accepted": accepted,
        "survivors": survivors,
        "secret_seen": "hunter2-planted" in result.log_path.read_text(),
    }
    return result, outcome, evidence


@needs_backend
@pytest.mark.parametrize("name", BACKENDS)
def test_every_escape_is_contained(tmp_path, monkeypatch, name):
    result, outcome, evidence = _attack(tmp_path, monkeypatch, name)
    assert result.sandbox == name
    assert outcome == {k: "BLOCKED" for k in ("write-home", "read-secret", "write-results", "write-repo-prepare",
                                              "connect", "outlive")} or (
        # where a process may be started at all, it must not outlive the run (checked below)
        {k: v for k, v in outcome.items() if k != "outlive"} ==
        {k: "BLOCKED" for k in ("write-home", "read-secret", "write-results", "write-repo-prepare", "connect")})
    assert evidence == {"home": [".netrc"], "results": "the truth", "repo_prepare": True, "accepted": 0,
                        "survivors": [], "secret_seen": False}
    # the attempts failed, the run itself is recorded as what it was: an ordinary finished run
    assert (result.status, result.val_bpb) == ("ok", 1.0)
    assert sorted(p.name for p in result.log_path.parent.iterdir()) == ["attack.log", "attack.result.json",
                                                                        "results.parquet"]


def test_unsandboxed_the_same_escapes_succeed(tmp_path, monkeypatch):
    """The control: without a sandbox every attempt gets through (the harness's hash check still refuses it)."""
    result, outcome, evidence = _attack(tmp_path, monkeypatch, "none")
    assert set(outcome.values()) == {"ESCAPED"}
    assert evidence["home"] == [".netrc", "dropped-by-train-py"] and evidence["results"] == "the truthforged"
    assert evidence["accepted"] == 1 and evidence["secret_seen"] and not evidence["repo_prepare"]
    assert evidence["survivors"], "the detached process should have outlived the unsandboxed run"
    assert (result.status, result.error) == ("crash", "prepare.py changed during the run")


@needs_backend
@pytest.mark.parametrize("name", BACKENDS)
def test_a_killed_sandboxed_run_leaves_nothing_running(tmp_path, name):
    marker = f"sleeper-{uuid.uuid4().hex}"
    workdir = tmp_path / "repo"
    workdir.mkdir()
    (workdir / "prepare.py").write_text(textwrap.dedent(FAKE_PREPARE))
    (workdir / "train.py").write_text(
        "import subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)', {marker!r}], start_new_session=True)\n"
        "print('started', flush=True)\ntime.sleep(120)\n")
    job = start_training(workdir, tmp_path / "runs", "sleeper", time_budget=1, seed=1, hard_timeout_s=60,
                         sandbox=name)
    deadline = time.monotonic() + 20
    while len(_marker_processes(marker)) < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _marker_processes(marker), "the detached child never started"
    job.kill()
    result = job.wait()
    assert (result.status, result.sandbox) == ("killed", name)
    deadline = time.monotonic() + 5
    while _marker_processes(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _marker_processes(marker) == []


@pytest.mark.slow
def test_honest_train_py_scores_the_same_sandboxed_and_not(tmp_path, prepared_cache):
    """The real train.py, same seed, a budget so small that both runs take exactly the same steps."""
    repo = Path(__file__).resolve().parents[1]
    workdir = tmp_path / "repo"
    workdir.mkdir()
    for file in ("prepare.py", "train.py"):
        (workdir / file).write_bytes((repo / file).read_bytes())
    scores = {}
    for name in ["none", *BACKENDS[:1]]:  # the strongest backend here; each real run costs seconds
        result = run_training(workdir, tmp_path / "runs", f"honest-{name}", time_budget=0.001, seed=7,
                              extra_env={"AUTORESEARCH_CACHE": str(prepared_cache)}, sandbox=name)
        assert result.status == "ok", f"{name}: {result.error}\n{result.log_tail}"
        scores[name] = (result.val_bpb, result.summary["num_steps"], result.sandbox)
    baseline = scores.pop("none")
    for name, (bpb, steps, used) in scores.items():
        assert used == name
        assert (bpb, steps) == (baseline[0], baseline[1]), f"{name} changed the result: {scores} vs {baseline}"


# ---------------------------------------------------------------- missing or broken sandboxes


def test_a_missing_bwrap_is_a_clear_error_when_asked_for(monkeypatch, tmp_path):
    monkeypatch.setenv("AUTORESEARCH_BWRAP", str(tmp_path / "no-such-bwrap"))
    with pytest.raises(SandboxUnavailable, match="sandbox 'bwrap' cannot start here: bwrap not found at"):
        select_sandbox("bwrap")


def test_a_broken_bwrap_is_a_clear_error_and_auto_moves_on(monkeypatch, tmp_path):
    broken = tmp_path / "bwrap"
    broken.write_text("#!/bin/sh\necho 'bwrap: setting up uid map: Permission denied' >&2\nexit 1\n")
    broken.chmod(0o755)
    monkeypatch.setenv("AUTORESEARCH_BWRAP", str(broken))
    with pytest.raises(SandboxUnavailable, match="uid map: Permission denied"):
        select_sandbox("bwrap")
    chosen = select_sandbox("auto")
    if sandbox.probe("landlock") is None:
        assert chosen.name == "landlock" and "uid map" in chosen.note and not chosen.warning
    else:
        assert chosen.name == "none" and "uid map" in chosen.warning


def test_when_nothing_starts_auto_warns_and_runs_unconfined(monkeypatch, tmp_path):
    monkeypatch.setenv("AUTORESEARCH_BWRAP", str(tmp_path / "no-such-bwrap"))
    chosen = select_sandbox("auto", python=str(tmp_path / "no-such-python"))  # nothing can start that
    assert chosen.name == "none"
    assert chosen.warning.startswith("no sandbox works here") and "bwrap not found" in chosen.warning
    assert "landlock" in chosen.warning and "\n" not in chosen.warning
    with pytest.raises(SandboxUnavailable, match="sandbox 'landlock' cannot start here"):
        select_sandbox("landlock", python=str(tmp_path / "no-such-python"))


def test_a_run_records_none_when_no_sandbox_works(monkeypatch, tmp_path):
    monkeypatch.setenv("AUTORESEARCH_BWRAP", str(tmp_path / "no-such-bwrap"))
    monkeypatch.setattr(sandbox, "BACKENDS", ("bwrap",))  # as on a machine without Landlock
    workdir = tmp_path / "repo"
    workdir.mkdir()
    (workdir / "prepare.py").write_text(textwrap.dedent(FAKE_PREPARE))
    (workdir / "train.py").write_text("import prepare\nprepare.write_record(1.5)\n")
    result = run_training(workdir, tmp_path / "runs", "plain", time_budget=5, seed=1)
    assert (result.status, result.sandbox, result.val_bpb) == ("ok", "none", 1.5)
    with pytest.raises(SandboxUnavailable):
        run_training(workdir, tmp_path / "runs", "plain2", time_budget=5, seed=1, sandbox="bwrap")


def test_unknown_sandbox_name_is_refused():
    with pytest.raises(ValueError, match="unknown sandbox 'docker'; choose one of: auto, bwrap, landlock, none"):
        select_sandbox("docker")
