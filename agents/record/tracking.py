"""Experiment tracking in MLflow: every experiment of a run is an MLflow run; results.parquet stays the truth.

Where (`resolve_target`): crew.yaml `tracking: {uri: ...}`, else `MLFLOW_TRACKING_URI`, else a SQLite file
inside the project (`.autoresearch/mlflow.db`, artifacts beside it); `tracking: off` turns it off. mlflow is
an optional extra: without it a run goes on and its summary says how to turn tracking on.

When (`Tracker`): the loop hands each record over right after results.parquet is written; a background
thread logs it, so a tracking store that is down or slow never stops or slows the loop. A store that fails
is reported once and retried with a growing pause; whatever is still missing is logged at the end of the
run, at the next start of the same tag (both compare results.parquet with the store), or by
`autoresearch export mlflow` (`export_runs`), which rebuilds the runs from results.parquet without doubles.
"""

from __future__ import annotations

import dataclasses
import errno
import importlib.util
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from agents.record.mlflow_runs import VIEW_KEY, RunContext, experiment_content, research_run_content
from agents.record.results import ExperimentRecord, ResultsStore

STORE_FILE = ".autoresearch/mlflow.db"
ARTIFACTS_DIR = ".autoresearch/mlartifacts"
INSTALL_HINT = "pip install 'autoresearch-crew[tracking]' (in a checkout: pip install -e '.[tracking]')"
# A store that does not answer must not hold a request for minutes (MLflow's own defaults: 7 retries, 120 s).
CLIENT_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
                   "MLFLOW_DISABLE_TELEMETRY": "true"}
RETRY_PAUSES_S = (5.0, 15.0, 60.0)
_URL_PASSWORD = re.compile(r"(://[^/\s:@]+:)[^/\s@]+@")
FINISH_WAIT_S = 30.0  # at the end of a run, for the last records and the summary run
INTERRUPTED_WAIT_S = 5.0


@dataclass(frozen=True)
class TrackingTarget:
    """Where experiments go: an MLflow tracking URI, or None with the reason tracking is off."""

    uri: str | None
    source: str = ""  # "crew.yaml", "MLFLOW_TRACKING_URI" or "default"
    off_reason: str = ""
    artifact_root: Path | None = None  # for stores on this machine: where experiments keep their artifacts

    @property
    def enabled(self) -> bool:
        return self.uri is not None

    @property
    def is_server(self) -> bool:
        return bool(self.uri) and self.uri.startswith(("http://", "https://", "databricks"))


def mlflow_installed() -> bool:
    return importlib.util.find_spec("mlflow") is not None


def project_root(repo_dir: Path) -> Path:
    """The project a directory belongs to: for a git worktree (a compare's run), the main checkout."""
    import git

    repo_dir = Path(repo_dir).resolve()
    try:
        repo = git.Repo(repo_dir, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        return repo_dir
    common, own = Path(repo.common_dir).resolve(), Path(repo.git_dir).resolve()
    if common == own or common.name != ".git" or repo.working_tree_dir is None:
        return repo_dir
    return common.parent / repo_dir.relative_to(Path(repo.working_tree_dir).resolve())


def resolve_target(repo_dir: Path, setting, env: Mapping[str, str] | None = None) -> TrackingTarget:
    """`setting` is crew.yaml's `tracking` (agents.config.TrackingConfig) or None for the defaults."""
    env = os.environ if env is None else env
    if setting is not None and not setting.enabled:
        return TrackingTarget(None, "crew.yaml", "crew.yaml says `tracking: off`")
    if not mlflow_installed():
        return TrackingTarget(None, "", f"mlflow is not installed; {INSTALL_HINT} turns it on")
    root = project_root(repo_dir)
    if setting is not None and setting.uri:
        uri, source = setting.uri, "crew.yaml"
    elif env.get("MLFLOW_TRACKING_URI"):
        uri, source = env["MLFLOW_TRACKING_URI"], "MLFLOW_TRACKING_URI"
    else:
        uri, source = "sqlite:///" + str(root / STORE_FILE), "default"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):  # relative: to the project, not cwd
        uri = "sqlite:///" + str(root / uri.removeprefix("sqlite:///"))
    local = not uri.startswith(("http://", "https://", "databricks"))
    return TrackingTarget(uri, source, artifact_root=root / ARTIFACTS_DIR if local else None)


def shown(uri: str | None) -> str:
    """A tracking URI (or a message naming one) fit to print: a password in a URL is masked."""
    return _URL_PASSWORD.sub(r"\1***@", uri or "")


def summary_line(target: TrackingTarget, experiment: str = "", pending: int = 0, tag: str = "") -> str:
    """The `tracking: ...` line of a run's final summary."""
    if not target.enabled:
        return f"tracking: off ({target.off_reason})"
    line = f"tracking: {shown(target.uri)}" + (f" (experiment '{experiment}')" if experiment else "")
    if pending:
        line += (f"; {pending} experiment(s) not logged yet, the store did not answer: "
                 f"`autoresearch export mlflow{' --tag ' + tag if tag else ''}` logs them")
    elif not target.is_server:
        line += "; browse with `autoresearch ui`"
    return line


def _client_defaults() -> None:
    for key, value in CLIENT_DEFAULTS.items():
        os.environ.setdefault(key, value)


def _quiet_mlflow() -> None:
    import logging

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # "Creating initial MLflow database tables..." etc.
    logging.getLogger("alembic").setLevel(logging.WARNING)


def open_store(target: TrackingTarget):
    """A `MlflowStore` on the target (imports mlflow; creates the SQLite file's folder)."""
    _client_defaults()
    import mlflow  # noqa: F401  (configures its loggers on import; quieted right after)

    from agents.record.mlflow_runs import MlflowStore

    _quiet_mlflow()
    if target.uri and target.uri.startswith("sqlite:///"):
        Path(target.uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return MlflowStore(target.uri, target.artifact_root)


# ---------------------------------------------------------------------------------------------- sync


@dataclass
class SyncCounts:
    created: int = 0
    updated: int = 0
    unchanged: int = 0

    def add(self, outcome: str) -> None:
        setattr(self, outcome, getattr(self, outcome) + 1)


def sync_run(store, context: RunContext, run_dir: Path, records: list[ExperimentRecord], *,
             status: str = "RUNNING", summary_too: bool = True,
             summary_records: list[ExperimentRecord] | None = None) -> SyncCounts:
    """Bring one research run's MLflow runs in line with `records`: its summary run, then one run per record.

    The summary run (plot, report) is drawn from `summary_records` when given (every record of the run), else
    from `records`; with `summary_too` False it is only created when missing. The runs stand side by side in
    the experiment (none nested), so the UI lists every experiment without expanding anything.
    """
    counts = SyncCounts()
    experiment_id = store.experiment_id(context.experiment)
    summary, children = store.runs_of(experiment_id, context.run_tag)
    if summary is None or summary_too:
        with tempfile.TemporaryDirectory(prefix="autoresearch-tracking-") as tmp:
            content = research_run_content(records if summary_records is None else summary_records, context,
                                           Path(tmp), status)
            store.upsert(experiment_id, content, summary)
    for record in records:
        _, outcome = store.upsert(experiment_id, experiment_content(record, context, run_dir),
                                  children.get(record.exp_id))
        counts.add(outcome)
    return counts


class Tracker:
    """Logs a research run's experiments to MLflow from a background thread; the loop never waits for it.

    The loop calls `start` once, `log(record)` after each write of results.parquet, and `finish(records)`
    at the end. Warnings (a store that fails, and later answers again) reach `warn` on the loop's own
    thread, at its next `log` or `finish`.
    """

    def __init__(self, target: TrackingTarget, context: RunContext | None = None):
        self.target, self.context = target, context
        self._dirty: dict[str, ExperimentRecord] = {}
        self._lock = threading.Condition()
        self._warnings: list[str] = []
        self._thread: threading.Thread | None = None
        self._final: list[ExperimentRecord] | None = None
        self._final_status = "FINISHED"
        self._finished = threading.Event()
        self._failing = ""
        self.run_dir: Path | None = None
        self.warn: Callable[[str], None] = lambda message: None

    @classmethod
    def off(cls, reason: str = "not configured") -> Tracker:
        return cls(TrackingTarget(None, off_reason=reason))

    @property
    def enabled(self) -> bool:
        return self.target.enabled and self.context is not None

    def start(self, run_dir: Path, warn: Callable[[str], None] = lambda message: None) -> None:
        """Begin: save the run's context next to its results, then catch up with results.parquet in the background."""
        self.run_dir, self.warn = Path(run_dir), warn
        if not self.enabled or (self._thread is not None and not self._finished.is_set()):
            return
        self._final, self._finished = None, threading.Event()  # a tracker may serve a second run of the loop
        self.context.save(self.run_dir)
        self._thread = threading.Thread(target=self._work, name="mlflow-tracking", daemon=True)
        self._thread.start()

    def log(self, record: ExperimentRecord) -> None:
        """Queue a record for logging (a copy: the loop goes on changing its own)."""
        if self._thread is not None:
            with self._lock:
                self._dirty[record.exp_id] = dataclasses.replace(record, extra={})
                self._lock.notify()
        self._deliver_warnings()

    def finish(self, records: list[ExperimentRecord], interrupted: bool = False) -> None:
        """Log what is left and the summary run (plot, report); wait a bounded time, then leave it to a backfill.

        `interrupted`: the loop stopped on an error or Ctrl-C; the summary run is marked KILLED. The wait is short
        then, and when the store is failing already.
        """
        wait_s = INTERRUPTED_WAIT_S if interrupted or self._failing else FINISH_WAIT_S
        if self._thread is not None:
            with self._lock:
                self._final_status = "KILLED" if interrupted else "FINISHED"
                self._final = [dataclasses.replace(r, extra={}) for r in records]
                self._lock.notify()
            if not self._finished.wait(wait_s):
                self._warnings.append(f"tracking: {shown(self.target.uri)} is slow or down; gave up waiting after "
                                      f"{wait_s:.0f} s (the next run of this tag, or `autoresearch export mlflow`, "
                                      "logs what is missing)")
        self._deliver_warnings()

    @property
    def pending(self) -> int:
        """Experiments handed over but not (yet) in the store."""
        with self._lock:
            return len(self._dirty)

    def summary(self) -> str:
        tag = self.context.run_tag if self.context else ""
        return summary_line(self.target, self.context.experiment if self.context else "", self.pending, tag)

    # ------------------------------------------------------------------ the background thread
    def _work(self) -> None:
        store, caught_up, pauses = None, False, 0
        synced: dict[str, ExperimentRecord] = {}  # what this thread has written, as it was written
        while True:
            with self._lock:
                while caught_up and not self._dirty and self._final is None:
                    self._lock.wait()
                batch, final = dict(self._dirty), self._final
            try:
                store = store or open_store(self.target)
                if not caught_up:  # what earlier sessions of this tag could not log
                    earlier = ResultsStore(self.run_dir).load()
                    sync_run(store, self.context, self.run_dir, earlier)
                    synced.update((r.exp_id, r) for r in earlier)
                    caught_up = True
                if final is not None:  # the summary run, and any record not written as it now stands
                    changed = [r for r in final if synced.get(r.exp_id) != r]
                    sync_run(store, self.context, self.run_dir, changed, status=self._final_status,
                             summary_records=final)
                    with self._lock:
                        self._dirty.clear()
                    self._recovered()
                    self._finished.set()
                    return
                if batch:
                    sync_run(store, self.context, self.run_dir, list(batch.values()), summary_too=False)
                    synced.update(batch)
                    with self._lock:
                        for exp_id, record in batch.items():
                            if self._dirty.get(exp_id) is record:  # not replaced by a newer copy meanwhile
                                del self._dirty[exp_id]
                self._recovered()
                pauses = 0
            except Exception as exc:  # any failure of the store: the loop goes on, the records stay queued
                self._failed(exc)
                if final is not None:
                    self._finished.set()
                    return
                with self._lock:
                    if self._final is None:
                        self._lock.wait(RETRY_PAUSES_S[min(pauses, len(RETRY_PAUSES_S) - 1)])
                pauses += 1

    def _failed(self, exc: Exception) -> None:
        reason = shown(" ".join(f"{type(exc).__name__}: {exc}".split()))[:300]
        with self._lock:
            first = not self._failing
            self._failing = reason
            if first:
                self._warnings.append(f"tracking: {shown(self.target.uri)} failed ({reason}); the run goes on and its "
                                      "experiments are logged when the store answers again")

    def _recovered(self) -> None:
        with self._lock:
            if self._failing:
                self._failing = ""
                self._warnings.append(f"tracking: {shown(self.target.uri)} answers again; missing experiments logged")

    def _deliver_warnings(self) -> None:
        with self._lock:
            messages, self._warnings = self._warnings, []
        for message in messages:
            self.warn(message)


# ---------------------------------------------------------------------------------------------- export


@dataclass
class ExportedRun:
    run_dir: Path
    experiment: str
    run_tag: str
    counts: SyncCounts


def find_run_dirs(runs_root: Path, tag: str | None = None) -> list[Path]:
    """Run directories under runs/: `runs/<tag>/` and a compare's `runs/<name>/<config>-r<k>/`."""
    found = sorted({p.parent for p in [*runs_root.glob("*/results.parquet"), *runs_root.glob("*/*/results.parquet")]})
    if tag is None:
        return found
    return [d for d in found if tag in (d.name, d.parent.name) or _run_tag_of(d) == tag]


def _run_tag_of(run_dir: Path) -> str:
    records = ResultsStore(run_dir).load()
    return records[0].tag if records else run_dir.name


def default_context(run_dir: Path, runs_root: Path, repo_dir: Path) -> RunContext:
    """A run's context when it saved none: a compare's runs go under the compare's name."""
    tag = _run_tag_of(run_dir)
    nested = run_dir.parent.resolve() != runs_root.resolve()
    return RunContext(experiment=run_dir.parent.name if nested else tag, run_tag=tag, repo_dir=str(repo_dir))


def export_runs(target: TrackingTarget, repo_dir: Path, run_dirs: list[Path]) -> list[ExportedRun]:
    """(Re)build the MLflow runs of each run directory from its results.parquet; idempotent."""
    store = open_store(target)
    runs_root = Path(repo_dir) / "runs"
    exported = []
    for run_dir in run_dirs:
        context = RunContext.load(run_dir, default_context(run_dir, runs_root, repo_dir))
        if not context.repo_dir or not Path(context.repo_dir).exists():
            context = dataclasses.replace(context, repo_dir=str(repo_dir))
        counts = sync_run(store, context, run_dir, ResultsStore(run_dir).load(), status="FINISHED")
        exported.append(ExportedRun(run_dir, context.experiment, context.run_tag, counts))
    return exported


# ---------------------------------------------------------------------------------------------- the web UI


class PortInUse(RuntimeError):
    """The UI's port cannot be listened on (taken, or not allowed)."""


def check_port_free(port: int, host: str = "127.0.0.1") -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # as servers do: connections of an earlier server lingering in TIME_WAIT do not count, a listener does
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(f"port {port} on {host} is already in use") from None
            raise PortInUse(f"cannot listen on port {port} on {host} ({exc.strerror})") from None


def start_ui(target: TrackingTarget, port: int, log_path: Path, host: str = "127.0.0.1") -> subprocess.Popen:
    """`mlflow server` on `host:port` against the target's store, in its own process group."""
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", target.uri, "--host", host,
               "--port", str(port), "--workers", "1"]
    if target.artifact_root is not None:
        command += ["--artifacts-destination", str(target.artifact_root)]
    if target.uri.startswith("sqlite:///"):
        Path(target.uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")  # background job workers: not needed to browse
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                cwd=log_path.parent)


def wait_until_up(process: subprocess.Popen, url: str, timeout_s: float = 90.0) -> bool:
    """True once `url` answers HTTP 200; False if the server exits or the time runs out."""
    import requests

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return True
        except requests.RequestException:
            pass
        time.sleep(0.5)
    return False


def experiment_links(base_url: str, limit: int = 10) -> list[tuple[str, str]]:
    """(name, URL of its runs table) for the store's most recently updated experiments, through the server.

    The links ask for the UI's model-training view (it opens on its GenAI view unless told) and for the shared
    view the runs are written with (mlflow_runs.VIEW_KEY): every experiment as a row, with its status, val_bpb,
    delta and steps as columns, in id order.
    """
    import requests

    answer = requests.get(f"{base_url}/api/2.0/mlflow/experiments/search",
                          params={"max_results": limit + 1, "order_by": "last_update_time DESC"}, timeout=10)
    answer.raise_for_status()
    experiments = [e for e in answer.json().get("experiments", []) if e["name"] != "Default"][:limit]
    links = []
    for e in experiments:
        view = any(t.get("key") == f"mlflow.sharedViewState.{VIEW_KEY}" for t in e.get("tags", []))
        query = "workflowType=machine_learning" + (f"&viewStateShareKey={VIEW_KEY}" if view else "")
        links.append((e["name"], f"{base_url}/#/experiments/{e['experiment_id']}/runs?{query}"))
    return links


def stop_ui(process: subprocess.Popen) -> None:
    """Stop the server and its workers (its own process group)."""
    import signal

    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        if process.poll() is not None:
            return
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
