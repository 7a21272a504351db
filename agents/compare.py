"""`autoresearch compare`: which crew works best, measured on equal terms.

Every configuration (a preset or a crew.yaml variant) runs the ordinary loop from the same start commit, in
its own git worktree on branch `autoresearch/<compare>-<config>-r<k>`, with its own memory, under the same
budget. Results are written to `runs/<compare>/<config>-r<k>/` in the main repository, so removing the
worktrees at the end loses nothing. The runs go one after another in this process, each on the same engine as
`autoresearch run`: with `workers` above 1 every configuration gets the same N workers (one Ray connection,
local or a cluster, serves the whole compare), so each is measured with the whole machine or cluster.

`runs/<compare>/manifest.json` holds the start commit, the arguments and each run's state. Running the same
command again skips finished runs and resumes the others: the loop itself resumes an existing tag.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import shutil
import tempfile
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from agents import stop
from agents.config import PRESETS, CrewConfig, check_keys, load_config, preset_path, resolve_model
from agents.lock import RunLock, RunLockError
from agents.record.gitops import BRANCH_PREFIX, ExperimentRepo, GitError

MANIFEST = "manifest.json"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")  # also safe inside a git branch name
# Repeat k starts from seed + (k - 1) * SEED_STRIDE, far from the loop's own offsets (baselines +i, re-runs +1000).
SEED_STRIDE = 10_000
# Loop limits that must be the same for every configuration, with the option that sets them.
EQUAL_LIMITS = {"max_experiments": "--experiments", "max_hours": "--hours", "max_usd": "--usd",
                "max_tokens": None, "time_budget": "--budget"}

if TYPE_CHECKING:
    from agents.record.compare_report import CompareReport


class CompareError(RuntimeError):
    """Something the user must fix before (or to continue) a compare; always one line."""


# ---------------------------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class ConfigSpec:
    label: str  # the name in tables, branches and the `config` column
    source: str  # a preset name, or the absolute path of a crew.yaml
    path: Path  # the crew.yaml it loads

    def sha256(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class Budget:
    """Per run: stop after this many trained experiments / hours / USD; training seconds per experiment."""

    experiments: int | None = None
    hours: float | None = None
    usd: float | None = None
    time_budget: float | None = None


@dataclass(frozen=True)
class PlannedRun:
    config: str
    repeat: int
    tag: str  # the loop's tag: branch autoresearch/<tag>
    source: Path  # the configuration's crew.yaml
    seed: int

    @property
    def dir_name(self) -> str:
        return f"{self.config}-r{self.repeat}"


@dataclass
class ComparePlan:
    repo_dir: Path
    name: str
    configs: list[ConfigSpec]
    budget: Budget
    repeats: int
    runs: list[PlannedRun]

    @property
    def compare_dir(self) -> Path:
        return self.repo_dir / "runs" / self.name

    def run_dir(self, run: PlannedRun) -> Path:
        return self.compare_dir / run.dir_name

    def worktree_dir(self, run: PlannedRun) -> Path:
        return self.repo_dir / ".autoresearch" / "worktrees" / self.name / run.dir_name

    def arguments(self) -> dict:
        """What a continued compare must repeat exactly."""
        return {"configs": [{"label": c.label, "source": c.source, "sha256": c.sha256()} for c in self.configs],
                "repeats": self.repeats, "budget": dataclasses.asdict(self.budget)}


def resolve_config(source: str, cwd: Path) -> ConfigSpec:
    """A preset name, or a path to a crew.yaml variant (labelled by its file name without .yaml)."""
    if source in PRESETS:
        return ConfigSpec(source, source, preset_path(source))
    path = (cwd / source).resolve()
    if not path.is_file():
        raise CompareError(f"unknown configuration {source!r}: not a preset ({', '.join(PRESETS)}) "
                           "nor an existing crew.yaml file")
    label = path.stem
    if not NAME_PATTERN.match(label):
        raise CompareError(f"{source}: the file name {label!r} is used as the configuration's name and must use only "
                           "letters, digits, '-' and '_'; rename the file")
    return ConfigSpec(label, str(path), path)


def plan_compare(repo_dir: Path, sources: list[str], budget: Budget, repeats: int = 1, name: str | None = None,
                 env: Mapping[str, str] | None = None) -> ComparePlan:
    """Check everything a compare needs before anything starts; raises CompareError or ConfigError (one line).

    `sources` are preset names or crew.yaml paths (relative to the current directory, as on a command line).
    """
    env = os.environ if env is None else env
    repo_dir = Path(repo_dir).resolve()
    if not sources:
        raise CompareError(f"no configurations given: name presets ({', '.join(PRESETS)}) or crew.yaml paths")
    if repeats < 1:
        raise CompareError(f"--repeats must be at least 1 (got {repeats})")
    _check_budget_values(budget)
    specs = [resolve_config(s, Path.cwd()) for s in sources]
    labels = [s.label for s in specs]
    twice = sorted({label for label in labels if labels.count(label) > 1})
    if twice:
        raise CompareError(f"configuration {twice[0]!r} is given twice; use --repeats for more runs of one "
                           "configuration, or give variant files distinct names")
    name = name or "-vs-".join(labels)
    if not NAME_PATTERN.match(name):
        raise CompareError(f"compare name {name!r}: use only letters, digits, '-' and '_'")

    runs, limits, endless = [], {}, []
    for spec in specs:
        base = load_config(spec.path)
        check_keys(base, env)
        if base.sampler is not None:
            from agents.crew.hpo import SamplerUnavailable, require

            try:
                require(base.sampler.method)
            except SamplerUnavailable as exc:
                raise CompareError(f"configuration {spec.label!r}: {exc}") from None
        for k in range(1, repeats + 1):
            runs.append(PlannedRun(spec.label, k, f"{name}-{spec.label}-r{k}", spec.path,
                                   base.loop.seed + (k - 1) * SEED_STRIDE))
        effective = _load_run_config(spec.path, budget, base.loop.seed)
        limits[spec.label] = {key: getattr(effective.loop, key) for key in EQUAL_LIMITS}
        endless += [(spec.label, effective.loop)] if _never_stops(effective, env) else []
    _check_equal_limits(limits)
    if endless:
        label, loop = endless[0]
        if loop.max_usd is None and loop.max_tokens is None:
            raise CompareError("no budget: give --experiments N, --hours H or --usd X (the same for every configuration)")
        raise CompareError(f"a USD or token limit alone never stops configuration {label!r}: it makes no paid LLM "
                           "calls; add --experiments N or --hours H")
    return ComparePlan(repo_dir, name, specs, budget, repeats, runs)


def run_config_text(source: Path, budget: Budget, seed: int) -> str:
    """The crew.yaml a run loads: its configuration, with this compare's budget and the repeat's seed."""
    loop = {"max_experiments": budget.experiments, "max_hours": budget.hours, "max_usd": budget.usd,
            "time_budget": budget.time_budget, "seed": seed}
    body = {"extends": str(source), "loop": {k: v for k, v in loop.items() if v is not None}}
    return "# written by `autoresearch compare`: the configuration below, on this compare's budget\n" + \
        yaml.safe_dump(body, sort_keys=False)


def _load_run_config(source: Path, budget: Budget, seed: int) -> CrewConfig:
    with tempfile.TemporaryDirectory(prefix="autoresearch-compare-") as tmp:
        path = Path(tmp) / "crew.yaml"
        path.write_text(run_config_text(source, budget, seed))
        return load_config(path)


def _check_budget_values(budget: Budget) -> None:
    for option, value in (("--experiments", budget.experiments), ("--hours", budget.hours),
                          ("--usd", budget.usd), ("--budget", budget.time_budget)):
        if value is not None and value <= 0:
            raise CompareError(f"{option} must be positive (got {value})")


def _check_equal_limits(limits: dict[str, dict]) -> None:
    """Equal budgets: a limit left to the configuration files must be the same in all of them."""
    for key, option in EQUAL_LIMITS.items():
        values = {label: lim[key] for label, lim in limits.items()}
        if len(set(values.values())) > 1:
            shown = ", ".join(f"{label}: {value}" for label, value in values.items())
            fix = f"pass {option} to set it for all" if option else "make it the same in every file"
            raise CompareError(f"the configurations differ in loop.{key} ({shown}); {fix}")


def _never_stops(config: CrewConfig, env: Mapping[str, str]) -> bool:
    """No experiment or time limit, and no paid model whose spending could reach the USD/token limit."""
    loop = config.loop
    if loop.max_experiments is not None or loop.max_hours is not None:
        return False
    if loop.max_usd is None and loop.max_tokens is None:
        return True
    roles = [r for r in ("hypothesis", "coder", "reviewer", "analyst") if config.role(r).enabled]
    return all(resolve_model(config.llm_settings(r), env) == "offline" for r in roles)


# ---------------------------------------------------------------------------------------------- one run


@dataclass
class RunJob:
    """Everything one run needs."""

    repo_dir: str  # the run's worktree
    config_path: str  # the run's crew.yaml (run_config_text)
    tag: str
    config: str
    repeat: int
    run_dir: str
    memory_path: str
    workers: int | str | None = None  # experiments in flight (None: the configuration's cluster.workers)
    address: str | None = None


def run_one(job: RunJob, on_event: Callable | None = None) -> dict:
    """Build the run's crew from its crew.yaml and memory, run the loop; returns what the manifest keeps."""
    from agents.assemble import Overrides, build_settings
    from agents.loop import run_loop

    sessions = Sessions(Path(job.run_dir) / "sessions.json")
    sessions.begin()
    try:
        settings = build_settings(Path(job.repo_dir), Path(job.config_path), job.tag,
                                  Overrides(memory_path=Path(job.memory_path), run_dir=Path(job.run_dir),
                                            tracking_experiment=Path(job.run_dir).parent.name,  # the compare's name
                                            workers=job.workers, address=job.address),
                                  config_name=job.config)
        if on_event is not None:
            settings.on_event = on_event
        try:
            outcome = run_loop(settings)
        finally:
            settings.memory.close()
    finally:
        sessions.end()
    return {"stop_reason": outcome.stop_reason, "best_bpb": outcome.best_bpb, "best_commit": outcome.best_commit}


class Sessions:
    """When a run was active: [{start, end}], so wall-clock plots skip the time a compare sat interrupted.

    A session killed outright has no end; readers then take its last experiment as its end.
    """

    def __init__(self, path: Path):
        self.path = Path(path)

    def load(self) -> list[dict]:
        return json.loads(self.path.read_text()) if self.path.exists() else []

    def begin(self) -> None:
        self._write(self.load() + [{"start": _now(), "end": None}])

    def end(self) -> None:
        sessions = self.load()
        if sessions:
            sessions[-1]["end"] = _now()
            self._write(sessions)

    def _write(self, sessions: list[dict]) -> None:
        _write_json(self.path, sessions)


# ---------------------------------------------------------------------------------------------- the compare


@dataclass
class CompareEvent:
    """For the terminal: one line of text, and the loop's own event when the run is in this process."""

    run: str
    text: str
    loop_event: object | None = None  # agents.loop.LoopEvent


@dataclass
class CompareOutcome:
    plan: ComparePlan
    states: dict[str, dict]  # tag -> the manifest's entry for that run
    report: CompareReport | None = None
    workers: int | str = 1  # experiments in flight within each run

    @property
    def failed(self) -> list[str]:
        return [tag for tag, s in self.states.items() if s["state"] == "failed"]

    @property
    def interrupted(self) -> list[str]:
        """Runs stopped on the user's request (Ctrl-C): the same command continues them."""
        return [tag for tag, s in self.states.items() if s["state"] == "interrupted"]


def run_compare(plan: ComparePlan, on_event: Callable[[CompareEvent], None] = lambda event: None,
                workers: int | str = 1, address: str | None = None) -> CompareOutcome:
    """Run (or continue) every planned run, clean up the worktrees, write the compare's report.

    `workers` / `address`: the engine every run trains on, as for `autoresearch run` (1: this machine, no Ray;
    more: one Ray connection, a local instance or the cluster at `address`, shared by all runs).
    """
    plan.compare_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(RunLock(plan.compare_dir))
        except RunLockError:
            raise CompareError(f"compare {plan.name!r} is already running (lock in {plan.compare_dir}); "
                               "wait for it to finish") from None
        from agents.engine import uses_ray

        if uses_ray(workers, address):
            from agents.bench.cluster import connect, disconnect

            owned = connect(address)
            stack.callback(disconnect, owned)
        return _Compare(plan, on_event, workers, address).run()


class _Compare:
    def __init__(self, plan: ComparePlan, on_event: Callable[[CompareEvent], None], workers: int | str,
                 address: str | None):
        self.plan, self.on_event, self.workers, self.address = plan, on_event, workers, address
        self.repo = ExperimentRepo(plan.repo_dir)
        self.repo.ensure_git_repo()
        self.manifest_path = plan.compare_dir / MANIFEST
        self.worktrees: dict[str, Path] = {}

    def run(self) -> CompareOutcome:
        from agents.record.compare_report import write_compare_report

        self.manifest = self._open_manifest()
        pending = [r for r in self.plan.runs if self.manifest["runs"][r.tag]["state"] != "done"]
        for run in self.plan.runs:
            if run not in pending:
                self._say(run.tag, "already finished; kept as it is")
        try:
            for run in pending:
                if stop.SWITCH.stopping:  # Ctrl-C: the runs not started stay pending for the next time
                    break
                self._run_here(run)
        finally:
            for tag in list(self.worktrees):
                self._remove_worktree(tag)
            self.repo.prune_worktrees()
        report = write_compare_report(self.plan, self.manifest)
        return CompareOutcome(self.plan, self.manifest["runs"], report, self.workers)

    # ------------------------------------------------------------------ manifest
    def _open_manifest(self) -> dict:
        args = self.plan.arguments()
        if self.manifest_path.exists():
            manifest = json.loads(self.manifest_path.read_text())
            before = {c["label"]: c["sha256"] for c in manifest["arguments"]["configs"]}
            edited = [c["label"] for c in args["configs"] if before.get(c["label"], c["sha256"]) != c["sha256"]]
            if edited:
                raise CompareError(f"the file of configuration {edited[0]!r} changed since compare {self.plan.name!r} "
                                   "started; restore it to continue, or pass another --name")
            difference = _first_difference(manifest["arguments"], args)
            if difference:
                raise CompareError(f"compare {self.plan.name!r} was started with other arguments ({difference}); "
                                   "repeat them to continue it, or pass another --name")
            self._say("", f"continuing compare {self.plan.name!r} from commit {manifest['start_commit'][:7]}")
            return manifest
        existing = [r.tag for r in self.plan.runs if BRANCH_PREFIX + r.tag in self.repo.repo.heads]
        if existing:
            raise CompareError(f"branch {BRANCH_PREFIX}{existing[0]} exists but {self.manifest_path} does not; "
                               "pass another --name (or delete that branch)")
        self.repo.ensure_clean(["train.py", "prepare.py"])
        manifest = {"name": self.plan.name, "start_commit": self.repo.head(), "created_at": _now(),
                    "arguments": args,
                    "runs": {r.tag: {"config": r.config, "repeat": r.repeat, "dir": r.dir_name, "state": "pending"}
                             for r in self.plan.runs}}
        _write_json(self.manifest_path, manifest)
        self._say("", f"compare {self.plan.name!r} starts from commit {manifest['start_commit'][:7]}")
        return manifest

    def _set_state(self, tag: str, **fields) -> None:
        self.manifest["runs"][tag].update(fields)
        _write_json(self.manifest_path, self.manifest)

    # ------------------------------------------------------------------ preparing a run
    def _job(self, run: PlannedRun) -> RunJob:
        """A fresh worktree at the start commit (the loop checks out the run's branch if it exists)."""
        run_dir = self.plan.run_dir(run)
        run_dir.mkdir(parents=True, exist_ok=True)
        config_path = run_dir / "crew.yaml"
        config_path.write_text(run_config_text(run.source, self.plan.budget, run.seed))
        directory = self.plan.worktree_dir(run)
        if directory.exists():  # left by a compare that was killed: its state is in git and run_dir
            self._drop_directory(directory)
        self.repo.prune_worktrees()
        directory.parent.mkdir(parents=True, exist_ok=True)
        worktree = self.repo.add_worktree(directory, branch=None, start_point=self.manifest["start_commit"])
        self.worktrees[run.tag] = directory
        return RunJob(repo_dir=str(worktree), config_path=str(config_path), tag=run.tag, config=run.config,
                      repeat=run.repeat, run_dir=str(run_dir), memory_path=str(run_dir / "memory"),
                      workers=self.workers, address=self.address)

    def _remove_worktree(self, tag: str) -> None:
        directory = self.worktrees.pop(tag, None)
        if directory is not None and directory.exists():
            self._drop_directory(directory)

    def _drop_directory(self, directory: Path) -> None:
        try:
            self.repo.remove_worktree(directory)
        except GitError:  # not (or no longer) a registered worktree: a plain leftover directory
            shutil.rmtree(directory)

    # ------------------------------------------------------------------ one after another, in this process
    def _run_here(self, run: PlannedRun) -> None:
        from agents.loop import LoopEvent

        job = self._job(run)
        self._set_state(run.tag, state="running", workers=self.workers)
        self._say(run.tag, f"starting ({run.config}, repeat {run.repeat})")

        def forward(event: LoopEvent) -> None:
            self.on_event(CompareEvent(run.tag, _loop_line(event), event))

        try:
            result = run_one(job, forward)
        except KeyboardInterrupt:
            self._set_state(run.tag, state="interrupted")
            raise
        except Exception as exc:
            (self.plan.run_dir(run) / "error.log").write_text(traceback.format_exc())
            self._set_state(run.tag, state="failed", error=_one_line(exc))
            self._say(run.tag, f"failed: {_one_line(exc)} (traceback in {self.plan.run_dir(run) / 'error.log'})")
        else:
            if stop.SWITCH.stopping:  # the loop stopped on request and journalled what was in flight
                self._set_state(run.tag, state="interrupted")
                self._say(run.tag, f"interrupted: {result['stop_reason']}")
            else:
                self._set_state(run.tag, state="done", error="", **result)
                self._say(run.tag, f"finished: {result['stop_reason']}")
        finally:
            self._remove_worktree(run.tag)

    def _say(self, run: str, text: str) -> None:
        self.on_event(CompareEvent(run, text))


# ---------------------------------------------------------------------------------------------- helpers


def _loop_line(event) -> str:
    """One line per finished experiment or note; "" for progress and phase changes."""
    if event.kind == "record" and event.record is not None:
        r = event.record
        bpb = f"{r.val_bpb:.6f}" if r.val_bpb is not None else "-"
        return f"{r.exp_id} {r.status:<8} {bpb:>9}  {' '.join(r.description.split())}"
    if event.kind == "note":
        return f"{event.exp_id} {event.message}".strip()
    return ""


def _first_difference(old: object, new: object, where: str = "") -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in list(old) + [k for k in new if k not in old]:
            found = _first_difference(old.get(key), new.get(key), f"{where}.{key}" if where else str(key))
            if found:
                return found
        return ""
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            found = _first_difference(a, b, f"{where}[{i}]")
            if found:
                return found
        return ""
    return "" if old == new else f"{where}: was {_shown(old)}, now {_shown(new)}"


def _shown(value: object) -> str:
    if isinstance(value, list):
        return ", ".join(str(v.get("label", v)) if isinstance(v, dict) else str(v) for v in value) or "none"
    text = str(value)
    return text if len(text) <= 16 else text[:12] + "…"


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def _write_json(path: Path, data: object) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")

