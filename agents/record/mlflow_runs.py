"""How one experiment becomes one MLflow run, and the store that writes such runs idempotently.

`experiment_content` and `research_run_content` are pure: an `ExperimentRecord` (plus the run's context and
the files next to results.parquet) in, the run's tags, params, metrics and artifacts out. `MlflowStore`
writes them: a run is found again by its `run_tag` and `exp_id` tags and updated, never doubled; a digest
of the content (tag `autoresearch.sync`) skips runs that are already up to date. mlflow is imported only
when a store is opened.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from agents.record.results import PERSISTED_FIELDS, REFUSED, ExperimentRecord

KIND_TAG = "autoresearch.kind"  # "experiment" or "research_run" (the parent of a run's experiments)
SYNC_TAG = "autoresearch.sync"  # digest of what was logged: equal means nothing to do
RUN_TAG = "run_tag"  # the loop's --tag
NOTE_TAG = "mlflow.note.content"  # the run's description in the MLflow UI
PARENT_TAG = "mlflow.parentRunId"
# the MLflow UI opens an experiment of this kind on its runs table (model training), not on the GenAI overview
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
CONTEXT_FILE = "tracking.json"  # next to results.parquet: what a record alone does not say (models, budget)

METRICS = ("val_bpb", "delta", "best_bpb_before", "training_seconds", "wall_seconds", "mfu_percent",
           "total_tokens_M", "num_steps", "num_params_M", "memory_gb", "tokens_in", "tokens_out", "usd",
           "lines_added", "lines_removed")
MAX_TEXT = 5000  # under MLflow's limits for a param (6000) and a tag (8000) value
_RUN_STATUS = {"crash": "FAILED"}  # every other status is a finished run; the `status` tag tells them apart
_CONSTANT_LINE = re.compile(r"^([+-])([A-Z][A-Z0-9_]*)\s*=\s*(.+?)\s*(#.*)?$")
_GUARD_RULE = re.compile(r"^\[([a-z0-9-]+)\]", re.MULTILINE)


@dataclass(frozen=True)
class RunContext:
    """What every experiment of one research run shares, saved to `<run_dir>/tracking.json` for exports."""

    experiment: str  # the MLflow experiment: the run's tag, or the compare's name
    run_tag: str
    crew: str = ""
    role_models: dict[str, str] = field(default_factory=dict)
    time_budget: float | None = None
    sandbox: str = ""
    repo_dir: str = ""  # the git repository holding the experiments' commits (for train.py as run)

    def save(self, run_dir: Path) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / CONTEXT_FILE).write_text(json.dumps(dataclasses.asdict(self), indent=1))

    @classmethod
    def load(cls, run_dir: Path, default: RunContext) -> RunContext:
        path = run_dir / CONTEXT_FILE
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError):
            return default
        known = {f.name for f in dataclasses.fields(cls)}
        return dataclasses.replace(default, **{k: v for k, v in saved.items() if k in known})


@dataclass
class RunContent:
    name: str
    tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]
    texts: dict[str, str]  # artifact file name -> its text
    files: dict[str, Path] = field(default_factory=dict)  # artifact file name -> a local (binary) file
    start_ms: int | None = None
    end_ms: int | None = None
    status: str = "FINISHED"

    @property
    def digest(self) -> str:
        body = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("texts", "files")}
        body["texts"] = {k: hashlib.sha256(v.encode()).hexdigest() for k, v in self.texts.items()}
        body["files"] = {k: hashlib.sha256(p.read_bytes()).hexdigest() for k, p in self.files.items() if p.exists()}
        return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------- content


def changed_constants(record: ExperimentRecord) -> dict[str, tuple[str, str]]:
    """The CAPS constants the edit changed, name -> (old, new), from the record's fingerprint or its diff.

    A recorded fingerprint (a JSON object with "constants": {NAME: [old, new]}) wins; otherwise the diff's
    `-NAME = old` / `+NAME = new` lines are paired. A constant only added or only removed shows "" there.
    """
    fingerprint = getattr(record, "fingerprint", None)
    if isinstance(fingerprint, str) and fingerprint.startswith("{"):
        try:  # {NAME: {profile: [old, new]}}: one pair when every device profile agrees, else one per profile
            constants = json.loads(fingerprint).get("constants") or {}
            out = {}
            for name, per_profile in constants.items():
                pairs = {(_shown(o), _shown(n)) for o, n in per_profile.values() if o != n}
                if len(pairs) == 1:
                    out[str(name)] = next(iter(pairs))
                elif pairs:
                    out[str(name)] = (", ".join(f"{_shown(o)} ({p})" for p, (o, n) in per_profile.items() if o != n),
                                      ", ".join(f"{_shown(n)} ({p})" for p, (o, n) in per_profile.items() if o != n))
            return out
        except (ValueError, TypeError, AttributeError):
            pass
    old: dict[str, str] = {}
    new: dict[str, str] = {}
    for line in (record.diff or "").splitlines():
        if line.startswith(("---", "+++")):
            continue
        match = _CONSTANT_LINE.match(line)
        if match:
            sign, name, value = match.group(1), match.group(2), match.group(3)
            (old if sign == "-" else new)[name] = value
    names = [n for n in dict.fromkeys([*old, *new]) if old.get(n) != new.get(n)]
    return {n: (old.get(n, ""), new.get(n, "")) for n in names}


def _shown(value: object) -> str:
    return "" if value is None else str(value)


def veto_rule(record: ExperimentRecord) -> str:
    """Which rule refused the edit: the guard's rule names, "reviewer", "novelty" or "" when none did."""
    rule = getattr(record, "rule", "")
    if rule:
        return str(rule)
    if record.status == "veto":
        rules = _GUARD_RULE.findall(record.guard_violations or "")
        return ",".join(dict.fromkeys(rules)) if rules else "reviewer"
    return "novelty" if record.status == "repeat" else ""


def experiment_content(record: ExperimentRecord, context: RunContext, run_dir: Path) -> RunContent:
    """One experiment as an MLflow run: tags, params, metrics, and the patch, log, evaluator record, train.py."""
    tags = {
        KIND_TAG: "experiment", RUN_TAG: record.tag or context.run_tag, "exp_id": record.exp_id,
        "status": record.status, "decision_reason": record.decision_reason, "veto_rule": veto_rule(record),
        "category": record.category, "crew": record.config or context.crew,
        "sandbox": str(getattr(record, "sandbox", "") or context.sandbox),
        "degraded_roles": record.degraded_roles, "commit": record.commit, "parent_commit": record.parent_commit,
        "review_verdict": record.review_verdict, "error": record.error, NOTE_TAG: _note(record),
    }
    models = getattr(record, "role_models", None) or context.role_models
    if isinstance(models, str):
        models = _json_object(models)
    tags.update({f"model.{role}": str(model) for role, model in (models or {}).items()})
    evaluator = _read(run_dir / f"{record.exp_id}.result.json")
    budget = context.time_budget
    if budget is None and evaluator:
        budget = _json_object(evaluator).get("time_budget")
    params = {"idea": record.description, "seed": str(record.seed), "time_budget": "" if budget is None else str(budget)}
    params.update({f"const.{name}": f"{a} → {b}" for name, (a, b) in changed_constants(record).items()})
    metrics = {name: float(value) for name in METRICS
               if isinstance(value := getattr(record, name, None), int | float) and value == value}
    texts = {}
    if record.diff:
        texts["patch.txt"] = record.diff
    log = _read(Path(record.log_path)) if record.log_path else None
    log = log if log is not None else _read(run_dir / f"{record.exp_id}.log")
    if log is not None:
        texts["train.log"] = log
    if evaluator is not None:
        texts["evaluator.json"] = evaluator
    train_py = _train_py_at(context.repo_dir, record.commit) if record.status not in REFUSED else None
    if train_py is not None:
        texts["train.py"] = train_py
    return RunContent(
        name=_short(f"{record.exp_id} {record.description}", 100), tags=_clip(tags), params=_clip(params),
        metrics=metrics, texts=texts, start_ms=_ms(record.started_at), end_ms=_ms(record.finished_at),
        status=_RUN_STATUS.get(record.status, "FINISHED"))


def research_run_content(records: list[ExperimentRecord], context: RunContext, workdir: Path,
                         status: str = "RUNNING") -> RunContent:
    """The parent run of one research run: its progress plot, its report and a few totals.

    `status`: "RUNNING" while the loop runs, "FINISHED" at its end, "KILLED" when it stopped on an error.
    """
    from agents.record.report import plot_progress, summary_markdown

    plot = plot_progress(records, workdir / "progress.png", title=f"autoresearch/{context.run_tag}") if records \
        else None
    kept = [r for r in records if r.status == "keep"]
    baselines = [r.val_bpb for r in records if r.status == "baseline" and r.val_bpb is not None]
    metrics = {"experiments": float(len(records)), "kept": float(len(kept))}
    if kept or baselines:
        metrics["best_val_bpb"] = float(kept[-1].val_bpb if kept else sum(baselines) / len(baselines))
    if baselines:
        metrics["baseline_val_bpb"] = float(sum(baselines) / len(baselines))
    tags = {KIND_TAG: "research_run", RUN_TAG: context.run_tag, "crew": context.crew, "sandbox": context.sandbox}
    tags.update({f"model.{role}": model for role, model in context.role_models.items()})
    starts = [ms for r in records if (ms := _ms(r.started_at)) is not None]
    ends = [ms for r in records if (ms := _ms(r.finished_at)) is not None]
    return RunContent(
        name=context.run_tag, tags=_clip(tags), params={}, metrics=metrics,
        texts={"report.md": summary_markdown(records)} if records else {},
        files={"progress.png": plot} if plot is not None else {},
        start_ms=min(starts, default=None), end_ms=max(ends, default=None) if status != "RUNNING" else None,
        status=status)


def _note(record: ExperimentRecord) -> str:
    parts = [f"**{record.description}** ({record.status})"]
    for label, text in (("Decision", record.decision_reason), ("Rationale", record.rationale),
                        ("Expected", record.expected_effect), ("Explanation", record.explanation),
                        ("Lesson", record.lesson), ("Error", record.error)):
        if text:
            parts.append(f"**{label}:** {text}")
    return "\n\n".join(parts)


def _train_py_at(repo_dir: str, commit: str) -> str | None:
    """train.py at `commit` (`./` is the experiment directory, which may sit below the top of the git repo)."""
    if not repo_dir or not commit or not Path(repo_dir).is_dir():
        return None
    shown = subprocess.run(["git", "-C", repo_dir, "show", f"{commit}:./train.py"], capture_output=True)
    # a commit that is gone (a fresh clone without the run's refs) leaves it out: the patch still tells
    return shown.stdout.decode("utf-8", errors="replace") if shown.returncode == 0 else None


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return None


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _ms(stamp: str) -> int | None:
    try:
        return int(datetime.fromisoformat(stamp).timestamp() * 1000) if stamp else None
    except ValueError:
        return None


def _short(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _clip(values: dict[str, Any]) -> dict[str, str]:
    """Strings within MLflow's length limits; empty values are left out."""
    out = {}
    for key, value in values.items():
        text = "" if value is None else str(value)
        if text:
            out[key] = text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"
    return out


def record_fields(record: ExperimentRecord) -> dict:
    return {name: getattr(record, name) for name in PERSISTED_FIELDS}


# ---------------------------------------------------------------------------------------------- the store


class MlflowStore:
    """One MLflow tracking store, reached through mlflow's own client."""

    def __init__(self, uri: str, artifact_root: Path | None = None):
        from mlflow.tracking import MlflowClient

        self.uri, self.artifact_root = uri, artifact_root
        self.client = MlflowClient(tracking_uri=uri)

    def experiment_id(self, name: str) -> str:
        """The experiment's id, created (or restored from the bin) when needed."""
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(name)
        if found is None:
            location = None
            if self.artifact_root is not None:
                location = (self.artifact_root / re.sub(r"[^A-Za-z0-9_.-]", "_", name)).resolve().as_uri()
            try:
                return self.client.create_experiment(name, artifact_location=location, tags=EXPERIMENT_TAGS)
            except MlflowException:  # created meanwhile by another process (a parallel compare)
                found = self.client.get_experiment_by_name(name)
                if found is None:
                    raise
        if found.lifecycle_stage == "deleted":
            self.client.restore_experiment(found.experiment_id)
        for key, value in EXPERIMENT_TAGS.items():
            if key not in found.tags:
                self.client.set_experiment_tag(found.experiment_id, key, value)
        return found.experiment_id

    def runs_of(self, experiment_id: str, run_tag: str) -> tuple[Any | None, dict[str, Any]]:
        """(the research run's parent run or None, its experiment runs by exp_id)."""
        from mlflow.entities import ViewType

        safe = re.fullmatch(r"[\w.:@+-]+", run_tag) is not None
        query = f"tags.{RUN_TAG} = '{run_tag}'" if safe else ""
        parent, children, token = None, {}, None
        while True:
            page = self.client.search_runs([experiment_id], filter_string=query, run_view_type=ViewType.ACTIVE_ONLY,
                                           max_results=1000, page_token=token)
            for run in page:
                tags = run.data.tags
                if tags.get(RUN_TAG) != run_tag:
                    continue
                if tags.get(KIND_TAG) == "research_run":
                    parent = parent or run
                elif tags.get("exp_id"):
                    children.setdefault(tags["exp_id"], run)
            token = page.token
            if not token:
                return parent, children

    def upsert(self, experiment_id: str, content: RunContent, existing: Any | None,
               parent_id: str | None = None) -> tuple[str, str]:
        """Create or bring up to date one run; returns (run id, "created" | "updated" | "unchanged")."""
        from mlflow.entities import Metric, Param, RunTag

        digest = content.digest
        if existing is not None and existing.data.tags.get(SYNC_TAG) == digest:
            return existing.info.run_id, "unchanged"
        if existing is not None and any(existing.data.params.get(k, v) != v for k, v in content.params.items()):
            self.client.delete_run(existing.info.run_id)  # params are write-once in MLflow: start the run afresh
            existing = None
        tags = dict(content.tags, **({PARENT_TAG: parent_id} if parent_id else {}))
        if existing is None:
            run = self.client.create_run(experiment_id, start_time=content.start_ms, tags=tags, run_name=content.name)
            run_id, old_tags, old_params, old_metrics, present = run.info.run_id, tags, {}, {}, set()
            outcome = "created"
        else:
            run_id, data = existing.info.run_id, existing.data
            old_tags, old_params, old_metrics = data.tags, data.params, data.metrics
            present = {f.path for f in self.client.list_artifacts(run_id)}
            outcome = "updated"
            if existing.info.run_name != content.name:
                self.client.update_run(run_id, name=content.name)
        stamp = content.end_ms or content.start_ms or int(datetime.now().timestamp() * 1000)
        metrics = [Metric(k, v, stamp, 0) for k, v in content.metrics.items() if old_metrics.get(k) != v]
        params = [Param(k, v) for k, v in content.params.items() if k not in old_params]
        new_tags = [RunTag(k, v) for k, v in tags.items() if old_tags.get(k) != v]
        for i in range(0, max(len(params), len(new_tags), 1), 100):  # MLflow takes 100 params/tags per batch
            self.client.log_batch(run_id, metrics=metrics if i == 0 else [], params=params[i:i + 100],
                                  tags=new_tags[i:i + 100])
        for name, text in content.texts.items():
            if name not in present or content.tags.get(KIND_TAG) == "research_run":
                self.client.log_text(run_id, text, name)
        for name, path in content.files.items():
            if path.exists():
                with tempfile.TemporaryDirectory() as tmp:  # the artifact keeps the file's name
                    named = Path(tmp) / name
                    named.write_bytes(path.read_bytes())
                    self.client.log_artifact(run_id, str(named))
        if content.status == "RUNNING":
            self.client.update_run(run_id, status="RUNNING")
        else:
            self.client.set_terminated(run_id, content.status, end_time=content.end_ms)
        self.client.set_tag(run_id, SYNC_TAG, digest)  # last: a sync cut short is done again next time
        return run_id, outcome
