"""agents.bench.runner against small fake train.py scripts (and the real one when it is ready)."""

from __future__ import annotations

import json
import os
import textwrap
import time
from pathlib import Path

import pytest

from agents.bench import runner
from agents.bench.runner import hard_timeout_for, run_training, scrubbed_env, start_training

REPO = Path(__file__).resolve().parents[1]

# Writes the record the way prepare.evaluate_bpb does: to AUTORESEARCH_RESULT_PATH, with its own hash.
FAKE_PREPARE = textwrap.dedent(
    """
    import hashlib, json, os

    def write_record(val_bpb, sha=None):
        path = os.environ.get("AUTORESEARCH_RESULT_PATH")
        if not path:
            return
        with open(__file__, "rb") as fh:
            own_sha = hashlib.sha256(fh.read()).hexdigest()
        record = {
            "val_bpb": val_bpb,
            "tokens": 1000,
            "bytes": 3650,
            "prepare_sha256": sha or own_sha,
            "eval_seconds": 0.1,
            "seed": os.environ.get("AUTORESEARCH_SEED"),
            "time_budget": os.environ.get("AUTORESEARCH_TIME_BUDGET"),
            "device": "cpu",
        }
        with open(path, "w") as fh:
            json.dump(record, fh)
    """
)

SUMMARY = """
print("---")
print(f"val_bpb:          {PRINTED:.6f}")
print("training_seconds: 0.5")
print("total_seconds:    2.0")
print("peak_vram_mb:     0.0")
print("mfu_percent:      0.00")
print("total_tokens_M:   0.1")
print("num_steps:        12")
print("num_params_M:     0.5")
print("depth:            2")
"""


def make_workdir(tmp_path: Path, train_body: str) -> Path:
    workdir = tmp_path / "work"
    workdir.mkdir()
    (workdir / "prepare.py").write_text(FAKE_PREPARE)
    (workdir / "train.py").write_text(textwrap.dedent(train_body))
    return workdir


def alive(pid: int) -> bool:
    """Running and not a zombie (zombies linger where PID 1 does not reap)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def test_ok_run_reads_score_from_record_and_parses_summary(tmp_path):
    workdir = make_workdir(
        tmp_path,
        "import prepare\nPRINTED = 1.234567\nprepare.write_record(1.234567)\n" + SUMMARY,
    )
    seen: list[str] = []
    res = run_training(workdir, tmp_path / "runs", "exp001", time_budget=7, seed=123, on_output=seen.append)
    assert res.status == "ok", res.error
    assert res.val_bpb == pytest.approx(1.234567)
    assert res.error == "" and res.warnings == []
    assert res.record["seed"] == "123" and res.record["time_budget"] == "7"
    assert res.summary["num_steps"] == 12 and isinstance(res.summary["num_steps"], int)
    assert res.summary["training_seconds"] == pytest.approx(0.5)
    assert res.summary["depth"] == 2
    assert res.log_path == tmp_path / "runs" / "exp001.log"
    assert "val_bpb:" in res.log_path.read_text()
    assert "num_steps:        12" in seen
    assert res.log_tail.splitlines()[-1].startswith("depth:")
    assert res.returncode == 0 and res.wall_seconds > 0


def test_printed_score_that_disagrees_with_record_is_a_warning(tmp_path):
    workdir = make_workdir(tmp_path, "import prepare\nPRINTED = 0.5\nprepare.write_record(1.0)\n" + SUMMARY)
    res = run_training(workdir, tmp_path / "runs", "exp002", time_budget=5, seed=1)
    assert res.status == "ok"
    assert res.val_bpb == pytest.approx(1.0)  # the record's number, not the printed one
    assert res.summary["val_bpb"] == pytest.approx(0.5)
    assert len(res.warnings) == 1 and "0.500000" in res.warnings[0]


def test_printed_score_without_record_is_a_crash(tmp_path):
    workdir = make_workdir(tmp_path, "PRINTED = 0.9\n" + SUMMARY)
    runs = tmp_path / "runs"
    runs.mkdir()
    # a stale record from an earlier attempt must not be picked up
    (runs / "exp003.result.json").write_text(json.dumps({"val_bpb": 0.1, "prepare_sha256": "x"}))
    res = run_training(workdir, runs, "exp003", time_budget=5, seed=1)
    assert res.status == "crash"
    assert res.error == "no result record"
    assert res.val_bpb is None


@pytest.mark.slow
def test_hanging_run_is_killed_with_its_children(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "KILL_GRACE_S", 0.5)
    pid_file = tmp_path / "child.pid"
    workdir = make_workdir(
        tmp_path,
        f"""
        import subprocess, sys, time
        # the child ignores SIGTERM, so only the group-wide SIGKILL can stop it
        child = subprocess.Popen([sys.executable, "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
        open({str(pid_file)!r}, "w").write(str(child.pid))
        print("training...", flush=True)
        time.sleep(600)
        """,
    )
    start = time.monotonic()
    # unsandboxed, so the pid file can be written where this test reads it: the group kill alone must do
    res = run_training(workdir, tmp_path / "runs", "exp004", time_budget=1, seed=1, hard_timeout_s=1.5,
                       sandbox="none")
    assert res.status == "timeout"
    assert res.error == "hard timeout after 1.5 s"
    assert time.monotonic() - start < 30
    assert "training..." in res.log_tail
    child_pid = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while alive(child_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(child_pid)


def test_exception_gives_the_exception_line(tmp_path):
    workdir = make_workdir(tmp_path, "def f():\n    raise ValueError('shapes do not match: 3 vs 4')\nf()\n")
    res = run_training(workdir, tmp_path / "runs", "exp005", time_budget=5, seed=1)
    assert res.status == "crash"
    assert res.error == "ValueError: shapes do not match: 3 vs 4"
    assert res.returncode == 1


def test_fail_line_is_reported(tmp_path):
    workdir = make_workdir(tmp_path, "import sys\nprint('step 10 loss nan')\nprint('FAIL')\nsys.exit(1)\n")
    res = run_training(workdir, tmp_path / "runs", "exp006", time_budget=5, seed=1)
    assert (res.status, res.error) == ("crash", "FAIL")


def test_out_of_memory_is_named(tmp_path):
    workdir = make_workdir(tmp_path, "raise MemoryError()\n")
    res = run_training(workdir, tmp_path / "runs", "exp007", time_budget=5, seed=1)
    assert (res.status, res.error) == ("crash", "out of memory")


def test_nan_record_is_a_crash(tmp_path):
    workdir = make_workdir(tmp_path, "import prepare\nprepare.write_record(float('nan'))\n")
    res = run_training(workdir, tmp_path / "runs", "exp008", time_budget=5, seed=1)
    assert (res.status, res.error) == ("crash", "NaN")


def test_signal_death_is_killed(tmp_path):
    workdir = make_workdir(tmp_path, "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n")
    res = run_training(workdir, tmp_path / "runs", "exp009", time_budget=5, seed=1)
    assert res.status == "killed"
    assert res.error == "killed by signal 9 (SIGKILL)"


def test_prepare_edited_during_run_is_refused(tmp_path):
    """Unsandboxed the edit happens and the hash check refuses the run; sandboxed the write itself fails."""
    workdir = make_workdir(
        tmp_path,
        "open('prepare.py', 'a').write('\\n# tweaked\\n')\nimport prepare\nprepare.write_record(0.1)\n",
    )
    original = (workdir / "prepare.py").read_bytes()
    res = run_training(workdir, tmp_path / "runs", "exp010", time_budget=5, seed=1, sandbox="none")
    assert res.status == "crash"
    assert res.error == "prepare.py changed during the run"
    assert res.val_bpb is None
    bwrap = run_training(workdir, tmp_path / "runs", "exp010b", time_budget=5, seed=1, sandbox="bwrap")
    assert (bwrap.status, bwrap.sandbox) == ("crash", "bwrap")
    assert "Read-only file system" in bwrap.error
    assert (workdir / "prepare.py").read_bytes() == original  # the copy ran; the original is never touched


def test_a_run_on_the_cpu_of_a_gpu_machine_is_refused(tmp_path, monkeypatch):
    """A sandbox that hid the GPU would otherwise train the CPU profile silently, every run."""
    workdir = make_workdir(tmp_path, "import prepare\nprepare.write_record(1.5)\n")
    monkeypatch.setattr(runner, "gpu_visible", lambda env: True)
    result = run_training(workdir, tmp_path / "runs", "e1", time_budget=1, seed=1, sandbox="none")
    assert result.status == "crash"
    assert "ran on the CPU although this machine has a GPU" in result.error
    monkeypatch.setattr(runner, "gpu_visible", lambda env: False)
    assert run_training(workdir, tmp_path / "runs", "e2", time_budget=1, seed=1, sandbox="none").ok


def test_forged_record_hash_is_refused(tmp_path):
    workdir = make_workdir(tmp_path, "import prepare\nprepare.write_record(0.1, sha='0' * 64)\n")
    res = run_training(workdir, tmp_path / "runs", "exp011", time_budget=5, seed=1)
    assert (res.status, res.error) == ("crash", "prepare.py changed during the run")


def test_child_sees_no_secrets(tmp_path, monkeypatch):
    secrets = {
        "ANTHROPIC_API_KEY": "sk-ant-test-1",
        "OPENAI_API_KEY": "sk-test-2",
        "MY_SERVICE_API_KEY": "plain-value-3",
        "GITHUB_TOKEN": "value-4",
        "AWS_SECRET_ACCESS_KEY": "value-5",
        "DB_PASSWORD": "value-6",
        "HF_TOKEN": "hf_value7",
        "INNOCENT_LOOKING": "sk-ant-hidden-8",
        "AUTORESEARCH_RESULT_PATH": "/tmp/should-be-replaced",
    }
    for key, value in secrets.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(tmp_path / "cache"))
    workdir = make_workdir(
        tmp_path,
        "import os, json\nprint(json.dumps(dict(os.environ)))\nimport prepare\nprepare.write_record(1.0)\n",
    )
    res = run_training(workdir, tmp_path / "runs", "exp012", time_budget=5, seed=9)
    assert res.status == "ok", res.error
    child_env = json.loads(res.log_tail.splitlines()[0])
    for key in secrets:
        if key != "AUTORESEARCH_RESULT_PATH":
            assert key not in child_env
    assert not any(k.endswith("_API_KEY") for k in child_env)
    # the evaluator writes inside the run's scratch directory; the harness keeps a copy next to the log
    assert child_env["AUTORESEARCH_RESULT_PATH"].endswith("/result.json")
    assert not child_env["AUTORESEARCH_RESULT_PATH"].startswith(str(tmp_path))
    assert res.result_path == (tmp_path / "runs" / "exp012.result.json").resolve() and res.result_path.is_file()
    assert child_env["HOME"] != os.environ.get("HOME") and child_env["HOME"].endswith("/home")
    assert child_env["AUTORESEARCH_CACHE"] == str(tmp_path / "cache")
    assert child_env["AUTORESEARCH_SEED"] == "9"
    assert child_env["PYTHONUNBUFFERED"] == "1"
    assert child_env["CUDA_VISIBLE_DEVICES"] == "3"
    assert child_env["TOKENIZERS_PARALLELISM"] == "false"
    assert child_env["PATH"] == os.environ["PATH"]
    log = res.log_path.read_text()
    for value in secrets.values():
        assert value not in log


def test_scrubbed_env_keeps_the_ordinary_variables():
    base = {
        "PATH": "/usr/bin",
        "HOME": "/home/u",
        "LANG": "C.UTF-8",
        "CUDA_VISIBLE_DEVICES": "0",
        "OMP_NUM_THREADS": "2",
        "SOME_TOKEN": "x",
        "CLIENT_SECRET_FILE": "x",
        "GOOGLE_APPLICATION_CREDENTIALS": "/k.json",
        "HTTPS_PROXY": "http://user:hunter2@proxy:8080",
        "NO_PROXY": "localhost",
        "AUTORESEARCH_SEED": "5",
    }
    assert scrubbed_env(base) == {
        "PATH": "/usr/bin",
        "HOME": "/home/u",
        "LANG": "C.UTF-8",
        "CUDA_VISIBLE_DEVICES": "0",
        "OMP_NUM_THREADS": "2",
        "NO_PROXY": "localhost",
    }


def test_extra_env_may_not_carry_secrets_or_harness_variables(tmp_path):
    workdir = make_workdir(tmp_path, "pass\n")
    with pytest.raises(ValueError, match="WANDB_API_KEY looks like a secret"):
        start_training(workdir, tmp_path / "runs", "e1", time_budget=1, seed=1, extra_env={"WANDB_API_KEY": "k"})
    with pytest.raises(ValueError, match="AUTORESEARCH_SEED"):
        start_training(workdir, tmp_path / "runs", "e1", time_budget=1, seed=1, extra_env={"AUTORESEARCH_SEED": "3"})


def test_bad_inputs_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no train.py"):
        run_training(tmp_path, tmp_path / "runs", "e1", time_budget=1, seed=1)
    workdir = make_workdir(tmp_path, "pass\n")
    with pytest.raises(ValueError, match="file name"):
        run_training(workdir, tmp_path / "runs", "../escape", time_budget=1, seed=1)


def test_hard_timeout_formula():
    assert hard_timeout_for(300) == 720
    assert hard_timeout_for(10) == 140
    assert hard_timeout_for(None) == hard_timeout_for(runner.DEFAULT_TIME_BUDGET_S)


def test_background_job_can_be_polled_and_killed(tmp_path):
    workdir = make_workdir(tmp_path, "import time\nprint('started', flush=True)\ntime.sleep(600)\n")
    job = start_training(workdir, tmp_path / "runs", "exp013", time_budget=1, seed=1, hard_timeout_s=60)
    assert job.poll() is None
    first = job.elapsed
    time.sleep(0.2)
    assert job.elapsed > first
    job.kill()
    res = job.wait()
    assert (res.status, res.error) == ("killed", "killed by request")
    assert job.poll() is res
    assert not alive(job.pid)
    frozen = job.elapsed
    time.sleep(0.1)
    assert job.elapsed == frozen


@pytest.mark.slow
def test_real_train_py_end_to_end(tmp_path, request):
    """The real train.py for a few seconds on the test cache; the record is the evaluator's."""
    missing = [name for name in ("prepare.py", "train.py") if not (REPO / name).exists()]
    if missing:
        pytest.skip(f"{', '.join(missing)} not in the repository yet")
    try:
        cache = request.getfixturevalue("prepared_cache")
    except pytest.FixtureLookupError:
        pytest.skip("fixture prepared_cache (tests/conftest.py) not available yet")
    workdir = tmp_path / "work"
    workdir.mkdir()
    for name in ("prepare.py", "train.py"):
        (workdir / name).write_bytes((REPO / name).read_bytes())
    res = run_training(
        workdir,
        tmp_path / "runs",
        "real001",
        time_budget=3,
        seed=42,
        extra_env={"AUTORESEARCH_CACHE": str(cache)},
    )
    assert res.status == "ok", f"{res.error}\n{res.log_tail}"
    assert 0 < res.val_bpb < 20
    assert res.record["prepare_sha256"] == runner._sha256(workdir / "prepare.py")
    assert res.summary.get("num_steps", 0) >= 1
    assert res.warnings == []
