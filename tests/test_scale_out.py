"""Several experiments in flight on a local Ray instance (two logical GPUs) with the toy train.py.

One Ray instance serves the whole module; each loop joins it (in this process, or by address from a subprocess).
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

from agents.record.journal import Journal, Phase, RunKind
from tests.llm_server import ScriptedLLMServer
from tests.test_loop_llm import ScriptedCrew
from tests.toyrepo import ROOT, check_consistency, make_toy_repo

pytestmark = pytest.mark.slow  # training runs, Ray, subprocess loops

ray = pytest.importorskip("ray")

TRAINED = ("keep", "discard", "crash")


@pytest.fixture(scope="module")
def ray_instance():
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def _toy(tmp_path: Path, **loop) -> tuple[Path, Path]:
    repo = tmp_path / "repo"
    config = make_toy_repo(repo, loop={"time_budget": 1.5, "max_experiments": 2, **loop},
                           crew_extra={"cluster": {"workers": 2}})
    return repo, config


def _intervals(events: list) -> dict[str, tuple[float, float]]:
    """exp id -> (handed to a worker, result recorded), from the loop's events."""
    began, ended = {}, {}
    for at, event in events:
        if event.kind == "phase" and event.message == "training":
            began.setdefault(event.exp_id, at)
        if event.kind == "record" and event.record is not None:
            ended[event.exp_id] = at
    return {k: (began[k], ended[k]) for k in began if k in ended}


def test_two_experiments_truly_overlap_and_record_where_they_ran(tmp_path, ray_instance):
    from agents.assemble import build_settings
    from agents.loop import run_loop

    # 3 s of training each: the second candidate of a pair may reach its worker a couple of seconds after the
    # first when the machine is busy (other tests in parallel), and the pair must still share a full second
    repo, config = _toy(tmp_path, time_budget=3.0)
    settings = build_settings(repo, config, "t1")
    events: list = []
    settings.on_event = lambda e: events.append((time.monotonic(), e))
    try:
        run_loop(settings)
    finally:
        settings.memory.close()
    records = check_consistency(repo, "t1")
    trained = [r for r in records if r.status in TRAINED]
    assert len(trained) == 2 and sum(r.status == "baseline" for r in records) == 2
    spans = _intervals(events)
    for pair in ([r.exp_id for r in records if r.status == "baseline"], [r.exp_id for r in trained]):
        (a0, a1), (b0, b1) = spans[pair[0]], spans[pair[1]]
        overlap = min(a1, b1) - max(a0, b0)
        assert overlap > 1.0, f"{pair} did not train at the same time: {spans}"
    assert {r.gpu for r in records} <= {"gpu0", "gpu1"} and len({r.gpu for r in records}) == 2
    assert all(r.node for r in records)
    assert any(e.kind == "progress" and e.worker for _, e in events), "no worker named in the progress events"


def test_a_winner_on_a_stale_base_is_re_applied_and_confirmed(tmp_path, ray_instance, anthropic_env):
    slow = "DEPTH 2 -> 4"  # also waits after training, so it finishes after the other one was kept
    edits = {slow: {"path": "train.py", "summary": slow, "blocks": [
        {"search": "DEPTH = 4 if CUDA else 2", "replace": "DEPTH = 4 if CUDA else 4"},
        {"search": "val_bpb = evaluate_bpb(", "replace": "time.sleep(3.0)\nval_bpb = evaluate_bpb("}]}}
    crew = ScriptedCrew(["MATRIX_LR 0.01 -> 0.04", slow], bad_edits=edits)
    role = {"model": "anthropic/claude-sonnet-4-5", "max_retries": 1, "timeout_s": 20}
    repo = tmp_path / "repo"
    rules_off = {"no_metric_forgery": False, "no_escape": False, "allowed_imports": False}
    with ScriptedLLMServer(crew) as server:
        anthropic_env(server)
        config = make_toy_repo(repo, preset="full", roles={r: role for r in ("hypothesis", "coder", "reviewer",
                                                                             "analyst")},
                               loop={"time_budget": 1.0, "max_experiments": 2},
                               crew_extra={"cluster": {"workers": 2}, "guard": rules_off})
        # a line between the two constants, so the two edits merge cleanly (adjacent changes conflict in git)
        text = (repo / "train.py").read_text()
        (repo / "train.py").write_text(text.replace("DEPTH = 4 if CUDA else 2\n", "DEPTH = 4 if CUDA else 2\n\n"))
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@l", "commit", "-qam", "spacing"], cwd=repo,
                       check=True)
        notes: list[str] = []
        from agents.assemble import build_settings
        from agents.loop import run_loop

        settings = build_settings(repo, config, "t1")
        settings.on_event = lambda e: notes.append(f"{e.exp_id} {e.message}") if e.kind == "note" else None
        try:
            outcome = run_loop(settings)
        finally:
            settings.memory.close()
    records = check_consistency(repo, "t1")
    by_title = {r.description: r for r in records}
    first, second = by_title["MATRIX_LR 0.01 -> 0.04"], by_title[slow]
    assert first.status == "keep" and second.status == "keep", [(r.description, r.status) for r in records]
    assert second.parent_commit == first.commit, "the confirmed winner was not committed on the new best"
    assert "re-applied" in second.decision_reason
    assert any(n.startswith(second.exp_id) and "confirming there" in n for n in notes), notes
    assert outcome.best_commit == second.commit
    text = (repo / "train.py").read_text()
    assert "MATRIX_LR = 0.04 if CUDA else 0.04" in text and "DEPTH = 4 if CUDA else 4" in text
    entry = Journal(repo / "runs" / "t1").read(second.exp_id)
    assert [f.run_id for f in entry.follow_ups_of(RunKind.CONFIRM)] == [f"{second.exp_id}.c1"]  # in its own entry


def _training(marker: str) -> dict[str, int]:
    """Experiments (not baselines) whose train.py runs now with this test's marker: exp id -> the pid of the
    outermost process of the run (the sandbox's, when there is one), whose parent is the worker."""
    found: dict[str, list[tuple[int, int]]] = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            environ = Path(f"/proc/{pid}/environ").read_bytes() if b"train.py" in cmdline else b""
            parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if marker.encode() not in environ:
            continue
        # the experiment's scratch folder, named by its id, from the environment (a sandbox hides its cwd)
        variables = dict(v.split("=", 1) for v in environ.decode(errors="replace").split("\0") if "=" in v)
        scratch = Path(variables.get("AUTORESEARCH_RESULT_PATH", "/")).parent.name  # autoresearch-<id>-<random>
        exp_id = scratch.split("-")[1] if scratch.count("-") >= 2 else ""
        if exp_id not in ("0000", "0001", "") and "." not in exp_id:
            found.setdefault(exp_id, []).append((int(pid), parent))
    outermost = {}
    for exp_id, processes in found.items():
        pids = {pid for pid, _ in processes}
        outermost[exp_id] = next((pid for pid, parent in processes if parent not in pids), processes[0][0])
    return outermost


def _kill_one_worker(marker: str, killed: list, stop: threading.Event) -> None:
    """Kill -9 the Ray worker running this test's first experiment (not a baseline) as soon as it trains."""
    while not stop.is_set() and not killed:
        for exp_id, pid in _training(marker).items():
            parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
            os.kill(parent, signal.SIGKILL)
            killed.append(exp_id)
            return
        time.sleep(0.05)


def test_a_worker_killed_mid_run_is_re_queued_and_recorded_once(tmp_path, ray_instance):
    from agents.assemble import build_settings
    from agents.loop import run_loop

    repo, config = _toy(tmp_path, time_budget=3.0)
    settings = build_settings(repo, config, "t1")
    marker = f"TEST_RUN_MARKER={os.getpid()}-{time.monotonic_ns()}"  # only this test's train.py carries it
    settings.extra_env = dict([marker.split("=", 1)])
    notes: list[str] = []
    settings.on_event = lambda e: notes.append(f"{e.exp_id} {e.message}") if e.kind == "note" else None
    killed: list = []
    stop = threading.Event()
    killer = threading.Thread(target=_kill_one_worker, args=(marker, killed, stop), daemon=True)
    killer.start()
    try:
        run_loop(settings)
    finally:
        stop.set()
        settings.memory.close()
    assert killed, "no experiment was caught training"
    victim = killed[0]
    records = check_consistency(repo, "t1")
    assert [r.exp_id for r in records].count(victim) == 1
    assert next(r for r in records if r.exp_id == victim).status in TRAINED
    assert sum(r.status in TRAINED for r in records) == 2
    assert any(n.startswith(victim) and "lost" in n and "re-queued" in n for n in notes), notes


def test_coordinator_kill_9_then_resume_loses_and_doubles_nothing(tmp_path, ray_instance):
    """SIGKILL the coordinator when both experiments are training (seen as their train.py processes, however
    loaded the machine is); the next run trains exactly those two again and records each once."""
    repo, config = _toy(tmp_path, time_budget=4.0)
    marker = f"{os.getpid()}-{time.monotonic_ns()}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TEST_RUN_MARKER": marker}

    def loop() -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "tests.kill_points", str(repo), str(config), "", ray_instance],
                                cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    first, seen = loop(), {}
    try:
        deadline = time.monotonic() + 300
        while first.poll() is None and time.monotonic() < deadline and len(seen) < 2:
            seen = _training(marker)
            time.sleep(0.05)
        if len(seen) == 2:
            os.kill(first.pid, signal.SIGKILL)
    finally:
        if first.poll() is None and len(seen) < 2:
            first.kill()
        output = first.communicate(timeout=60)[0]
    assert len(seen) == 2, f"the two experiments never trained at the same time:\n{output}"
    assert first.returncode == -signal.SIGKILL, output
    in_flight = [e.exp_id for e in Journal(repo / "runs" / "t1").unfinished() if e.phase == Phase.COMMITTED]
    assert sorted(in_flight) == sorted(seen), (in_flight, seen)

    resumed = loop()
    output = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, output
    assert "STOP: reached max_experiments" in output
    records = check_consistency(repo, "t1")
    trained = [r for r in records if r.status in TRAINED]
    assert sorted(r.exp_id for r in trained) == sorted(seen)
    assert sum(r.status == "baseline" for r in records) == 2
    assert all(r.lesson for r in trained)
    assert Journal(repo / "runs" / "t1").unfinished() == []


def test_a_bad_address_is_one_clear_error(tmp_path):
    """In a process of its own, so that nothing Ray prints on the way out goes unseen (a bad --workers count is
    checked in process with the other bad numbers, tests/test_cli.py)."""
    repo, _ = _toy(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "agents.cli", "run", "--no-live", "--experiments", "1", "--workers",
                           "2", "--address", "ray://127.0.0.1:9"], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=120)
    output = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == 2, output
    assert output.count("error:") == 1 and "cannot reach the Ray cluster at ray://127.0.0.1:9" in output, output
    assert "Traceback" not in output, output


def test_commits_are_made_without_touching_the_working_tree(tmp_path):
    import git

    from agents.record.gitops import ExperimentRepo

    repo_dir = tmp_path / "repo"
    make_toy_repo(repo_dir)
    repo = ExperimentRepo(repo_dir)
    head = repo.head()
    before = (repo_dir / "train.py").read_text()
    sha = repo.commit_text("train.py", before + "# one\n", head, "an experiment")
    assert repo.head() == head and (repo_dir / "train.py").read_text() == before
    commit = git.Repo(repo_dir).commit(sha)
    assert commit.parents[0].hexsha == head and commit.message.strip() == "an experiment"
    assert repo.read_file_at(sha, "train.py") == before + "# one\n"
    assert [d.a_path for d in commit.diff(head)] == ["train.py"]
    assert not git.Repo(repo_dir).is_dirty()


def test_compare_runs_its_configurations_on_the_same_engine(tmp_path, ray_instance):
    from agents.compare import Budget, plan_compare, run_compare
    from agents.record.results import ResultsStore
    from tests.test_compare import assert_worktrees_removed, toy_with_variants

    repo, paths = toy_with_variants(tmp_path, a={}, b={"loop": {"seed": 7}})
    plan = plan_compare(repo, [str(paths["a"]), str(paths["b"])], Budget(experiments=2))
    outcome = run_compare(plan, workers=2)
    assert outcome.workers == 2 and {s["state"] for s in outcome.states.values()} == {"done"}, outcome.states
    for state in outcome.states.values():
        records = ResultsStore(repo / "runs" / "a-vs-b" / state["dir"]).load()
        assert sum(r.status in TRAINED for r in records) == 2
        assert {r.gpu for r in records} <= {"gpu0", "gpu1"}, "a run did not train on the Ray workers"
    assert_worktrees_removed(repo)


def test_a_node_without_data_prepares_the_same_data_or_is_left_out(tmp_path, prepared_cache):
    """The check a Ray task runs on each node, here on this machine: an empty cache is prepared identically."""
    import json

    from agents.bench.executor import check_node

    prepare_py = (ROOT / "prepare.py").read_text()
    ours = json.loads(subprocess.run([sys.executable, "prepare.py", "--fingerprint"], cwd=ROOT, capture_output=True,
                                     text=True, check=True, env={**os.environ, "AUTORESEARCH_CACHE": str(prepared_cache)}
                                     ).stdout.strip().splitlines()[-1])
    assert ours["prepare_args"][:2] == ["--source", "builtin"]
    fresh = check_node(prepare_py, str(tmp_path / "empty-cache"), ours["prepare_args"], str(tmp_path / "scratch"))
    assert fresh.get("fingerprint", {}).get("data") == ours["data"], fresh
    unable = check_node(prepare_py, str(tmp_path / "other-cache"), None, str(tmp_path / "scratch"))
    assert "fingerprint" not in unable and "prepare" in unable["error"], unable
