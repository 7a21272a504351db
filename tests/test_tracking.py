"""Experiment tracking in MLflow, checked through mlflow's own client against offline toy runs.

One toy run with tracking on is shared by the tests that only read it (mlflow's import and first store
creation cost seconds); the tests that break the store build their own.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from typer.testing import CliRunner

from agents.cli import app
from agents.loop import LoopEvent
from agents.record.results import ResultsStore
from tests.toyrepo import ROOT, make_toy_repo

mlflow = pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402

TRACKED = {"tracking": {}}  # on, with the default store inside the project
LOOP = {"max_experiments": 3}


def _run(repo: Path, config: Path, tag: str, on_event=None):
    from agents.assemble import build_settings
    from agents.loop import run_loop

    settings = build_settings(repo, config, tag)
    if on_event is not None:
        settings.on_event = on_event
    try:
        return run_loop(settings), settings
    finally:
        settings.memory.close()


def _store_uri(repo: Path) -> str:
    return "sqlite:///" + str(repo / ".autoresearch" / "mlflow.db")


def _snapshot(uri: str, experiment: str) -> dict:
    """exp_id -> what a person sees of the run: status, val_bpb, params, artifacts, the research run it belongs to."""
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no MLflow experiment {experiment!r}"
    runs = client.search_runs([found.experiment_id], max_results=1000)
    out = {}
    for r in runs:
        exp_id = r.data.tags.get("exp_id")
        if exp_id is None:
            continue
        assert exp_id not in out, f"{exp_id} logged twice"
        assert "mlflow.parentRunId" not in r.data.tags, "nested runs hide in a collapsed row of the UI"
        out[exp_id] = {"status": r.data.tags["status"], "val_bpb": r.data.metrics.get("val_bpb"),
                       "params": dict(r.data.params), "run_tag": r.data.tags["run_tag"],
                       "artifacts": sorted(a.path for a in client.list_artifacts(r.info.run_id))}
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """A toy repository after one offline run with tracking on (the default store in .autoresearch/)."""
    repo = tmp_path_factory.mktemp("tracked") / "repo"
    config = make_toy_repo(repo, loop=LOOP, crew_extra=TRACKED)
    outcome, settings = _run(repo, config, "t1")
    return repo, config, outcome, settings


@pytest.mark.slow
def test_every_results_row_is_an_mlflow_run(tracked):
    repo, _, outcome, settings = tracked
    records = ResultsStore(repo / "runs" / "t1").load()
    client = MlflowClient(_store_uri(repo))
    experiment = client.get_experiment_by_name("t1")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    children = {r.data.tags["exp_id"]: r for r in runs if "exp_id" in r.data.tags}
    summaries = [r for r in runs if "exp_id" not in r.data.tags]

    assert sorted(children) == sorted(r.exp_id for r in records)
    assert len(children) == len(runs) - 1, "a results row was logged twice"
    assert [p.info.run_name for p in summaries] == ["t1 · summary (progress.png, report.md)"]
    assert summaries[0].info.status == "FINISHED"
    assert sorted(a.path for a in client.list_artifacts(summaries[0].info.run_id)) == ["progress.png", "report.md"]
    view = json.loads(experiment.tags["mlflow.sharedViewState.autoresearch"])  # the columns `ui` links open on
    assert {"tags.`status`", "metrics.`val_bpb`", "params.`idea`"} <= set(view["selectedColumns"])
    edited = [r for r in records if r.diff]
    assert edited, "the toy run edited nothing"
    for record in records:
        run = children[record.exp_id]
        assert run.data.tags["status"] == record.status
        assert "mlflow.parentRunId" not in run.data.tags  # side by side: nothing hides in a collapsed row
        assert run.info.run_name.startswith(f"{record.exp_id} {record.status}")
        assert run.data.metrics.get("val_bpb") == record.val_bpb
        assert run.data.params["seed"] == str(record.seed)
        if record.lesson:  # the analyst's lesson arrives after the first logging: the run was updated
            assert record.lesson[:50] in run.data.tags["mlflow.note.content"]
    for record in edited:
        run = children[record.exp_id]
        patch = Path(client.download_artifacts(run.info.run_id, "patch.txt", str(repo.parent)))
        assert patch.read_text() == record.diff
        assert any(k.startswith("const.") and "→" in v for k, v in run.data.params.items()), run.data.params
    trained = [r for r in records if r.status in ("keep", "discard")]
    for record in trained:
        names = {a.path for a in client.list_artifacts(children[record.exp_id].info.run_id)}
        assert {"patch.txt", "train.log", "evaluator.json", "train.py"} <= names
    assert settings.tracker.summary().startswith(f"tracking: {_store_uri(repo)}")


@pytest.mark.slow
def test_ui_answers_on_its_port_and_refuses_a_taken_one(tracked, monkeypatch):
    repo = tracked[0]
    port = _free_port()
    command = [sys.executable, "-c", "from agents.cli import app; app()", "ui", "--port", str(port)]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    ui = subprocess.Popen(command, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search?max_results=10"
        deadline, answer = time.monotonic() + 120, None
        while time.monotonic() < deadline and ui.poll() is None:
            try:
                answer = requests.get(url, timeout=2)
                break
            except requests.RequestException:
                time.sleep(0.5)
        assert answer is not None and answer.status_code == 200, ui.stdout.read() if ui.poll() is not None else ""
        assert "t1" in {e["name"] for e in answer.json()["experiments"]}

        monkeypatch.chdir(repo)
        busy = CliRunner().invoke(app, ["ui", "--port", str(port)])
        assert busy.exit_code == 2 and f"port {port} on 127.0.0.1 is already in use" in busy.output, busy.output
    finally:
        ui.send_signal(signal.SIGTERM)  # handled like Ctrl-C (SIGINT may be ignored where tests run in background)
        try:
            out, _ = ui.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(ui.pid, signal.SIGKILL)
            out, _ = ui.communicate()
    assert f"http://127.0.0.1:{port}" in out
    # the printed link opens the runs table on the shared view: every experiment a row, status and val_bpb columns
    assert "/runs?workflowType=machine_learning&viewStateShareKey=autoresearch" in out, out
    with socket.socket() as probe:  # the server went with it (its closed connections may linger in TIME_WAIT)
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))
        probe.listen()


@pytest.mark.slow
def test_export_rebuilds_the_same_runs_after_the_store_is_deleted(tracked):
    repo = tracked[0]
    before = _snapshot(_store_uri(repo), "t1")
    shutil.rmtree(repo / ".autoresearch" / "mlartifacts")
    (repo / ".autoresearch" / "mlflow.db").unlink()
    # in a fresh process, as a person would run it: mlflow keeps each store it opened for the process's life
    script = f"""
import json
from typer.testing import CliRunner
from agents.cli import app
from tests.test_tracking import _snapshot
runs = [CliRunner().invoke(app, args, catch_exceptions=False) for args in (["export", "mlflow", "--tag", "t1"],
                                                                          ["export", "mlflow"])]
print(json.dumps({{"codes": [r.exit_code for r in runs], "outputs": [r.output for r in runs],
                  "runs": _snapshot({_store_uri(repo)!r}, "t1")}}))
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=repo, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["codes"] == [0, 0], result["outputs"]
    first, again = result["outputs"]
    assert f"{len(before)} created" in first
    assert "0 created" in again and f"{len(before)} unchanged" in again  # no doubles
    assert result["runs"] == before


@pytest.mark.slow
def test_an_unreachable_store_leaves_the_loop_running_then_the_next_start_backfills(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    down = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    repo = tmp_path / "repo"
    config = make_toy_repo(repo, loop={"max_experiments": 1}, crew_extra={"tracking": {"uri": down}})
    notes: list[str] = []

    def on_event(event: LoopEvent) -> None:
        if event.kind == "note":
            notes.append(event.message)

    outcome, settings = _run(repo, config, "t1", on_event)
    records = ResultsStore(repo / "runs" / "t1").load()
    assert "max_experiments" in outcome.stop_reason
    assert [r.status for r in records if r.status in ("keep", "discard", "crash")], records
    warnings = [n for n in notes if n.startswith(f"tracking: {down}") and "failed" in n]
    assert warnings, notes
    summary = settings.tracker.summary()
    assert f"{len(records)} experiment(s) not logged yet" in summary and "export mlflow --tag t1" in summary

    # the same tag again, with the store back: nothing left to train, and every earlier row is logged
    local = "sqlite:///" + str(tmp_path / "back.db")
    config.write_text(config.read_text().replace(down, local))
    _run(repo, config, "t1")
    assert sorted(_snapshot(local, "t1")) == sorted(r.exp_id for r in records)


@pytest.mark.slow
def test_a_compare_groups_its_runs_under_its_name(tmp_path, monkeypatch):
    import yaml

    from agents.compare import Budget, plan_compare, run_compare

    repo = tmp_path / "repo"
    base = yaml.safe_load(make_toy_repo(repo, crew_extra=TRACKED).read_text())
    variant = tmp_path / "solo.yaml"
    variant.write_text(yaml.safe_dump(base, sort_keys=False))
    monkeypatch.chdir(repo)
    run_compare(plan_compare(repo, [str(variant)], Budget(experiments=1), name="night"))
    logged = _snapshot(_store_uri(repo), "night")  # in the main checkout's store, not the removed worktree's
    records = ResultsStore(repo / "runs" / "night" / "solo-r1").load()
    assert sorted(logged) == sorted(r.exp_id for r in records)
    assert {v["run_tag"] for v in logged.values()} == {"night-solo-r1"}


def test_tracking_off_and_without_mlflow_the_summary_says_how(tmp_path, monkeypatch):
    from agents.config import ConfigError, TrackingConfig, load_config
    from agents.record import tracking

    repo = tmp_path / "repo"
    config = make_toy_repo(repo)  # the toy repository says `tracking: off`
    off = tracking.resolve_target(repo, load_config(config).tracking)
    assert not off.enabled and tracking.summary_line(off) == "tracking: off (crew.yaml says `tracking: off`)"

    monkeypatch.setattr(tracking, "mlflow_installed", lambda: False)
    missing = tracking.resolve_target(repo, TrackingConfig())
    assert "pip install 'autoresearch-crew[tracking]'" in tracking.summary_line(missing)

    monkeypatch.undo()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    assert tracking.resolve_target(repo, TrackingConfig()).uri == "http://127.0.0.1:1"
    assert tracking.resolve_target(repo, TrackingConfig(uri="sqlite:///x/m.db")).uri == f"sqlite:///{repo}/x/m.db"

    config.write_text(config.read_text().replace("tracking: false", "tracking:\n  uri: mlflow.db"))
    with pytest.raises(ConfigError, match=r"tracking\.uri: 'mlflow.db' is not a tracking URI"):
        load_config(config)


def test_without_mlflow_the_ui_names_the_extra_to_install(tmp_path, monkeypatch):
    from agents.record import tracking

    repo = tmp_path / "repo"
    config = make_toy_repo(repo)
    config.write_text(config.read_text().replace("tracking: false", "tracking: true"))
    monkeypatch.chdir(repo)
    monkeypatch.setattr(tracking, "mlflow_installed", lambda: False)
    result = CliRunner().invoke(app, ["ui"])
    # printed as written: the brackets of the extra are not taken for console markup
    assert result.exit_code == 2 and "pip install 'autoresearch-crew[tracking]'" in result.output, result.output


def test_changed_constants_come_from_the_diff():
    from agents.record.mlflow_runs import changed_constants
    from agents.record.results import ExperimentRecord

    diff = ("--- a/train.py\n+++ b/train.py\n@@ -1,4 +1,4 @@\n-MATRIX_LR = 0.04 if CUDA else 0.01\n"
            "+MATRIX_LR = 0.04 if CUDA else 0.02  # warmer\n WIDTH = 512\n-DEPTH = 4\n+DEPTH = 4\n+NEW_KNOB = 3\n"
            "-    lr = x\n+    lr = y\n")
    record = ExperimentRecord(exp_id="0001", tag="t", status="discard", description="", diff=diff)
    assert changed_constants(record) == {"MATRIX_LR": ("0.04 if CUDA else 0.01", "0.04 if CUDA else 0.02"),
                                         "NEW_KNOB": ("", "3")}


def test_a_vetoed_experiment_names_its_rule_and_keeps_its_patch(tmp_path):
    from agents.record.mlflow_runs import RunContext, experiment_content
    from agents.record.results import ExperimentRecord

    record = ExperimentRecord(
        exp_id="0007", tag="t1", status="veto", description="read the validation shard", category="data", config="full",
        diff="--- a/train.py\n+++ b/train.py\n@@ -1 +1 @@\n-X = 1\n+X = open('val.bin')\n",
        guard_violations="Guard: VETO. 1 violation(s) of 1 rule(s):\n[no-val-data] line 1: X = open('val.bin')\n",
        decision_reason="[no-val-data] validation data only through evaluate_bpb", seed=42)
    context = RunContext(experiment="t1", run_tag="t1", crew="full", role_models={"coder": "openai/gpt-4.1"},
                         time_budget=300.0, repo_dir=str(tmp_path))
    content = experiment_content(record, context, tmp_path)
    assert content.tags["veto_rule"] == "no-val-data" and content.tags["status"] == "veto"
    assert content.tags["model.coder"] == "openai/gpt-4.1" and content.tags["crew"] == "full"
    assert content.params["time_budget"] == "300.0" and content.params["const.X"] == "1 → open('val.bin')"
    assert set(content.texts) == {"patch.txt"}  # never trained: no log, no evaluator record, no train.py as run
    assert "val_bpb" not in content.metrics and content.status == "FINISHED"


@pytest.mark.slow
def test_runs_nested_by_an_older_version_are_set_side_by_side(tmp_path):
    from mlflow.tracking import MlflowClient

    from agents.record.mlflow_runs import MlflowStore, RunContext, experiment_content
    from agents.record.results import ExperimentRecord

    uri = "sqlite:///" + str(tmp_path / "mlflow.db")
    store = MlflowStore(uri, tmp_path / "artifacts")
    experiment = store.experiment_id("old")
    parent = store.client.create_run(experiment, run_name="old").info.run_id
    record = ExperimentRecord(exp_id="0003", tag="old", status="keep", description="MATRIX_LR 0.05 -> 0.07",
                              val_bpb=1.91, kept_as="gain")
    content = experiment_content(record, RunContext(experiment="old", run_tag="old"), tmp_path)
    old = store.client.create_run(experiment, tags={**content.tags, "mlflow.parentRunId": parent}).info.run_id
    run_id, outcome = store.upsert(experiment, content, store.client.get_run(old))
    run = MlflowClient(uri).get_run(run_id)
    assert run_id == old and outcome == "updated" and "mlflow.parentRunId" not in run.data.tags
    assert run.info.run_name == "0003 keep 1.9100 · MATRIX_LR 0.05 -> 0.07"
