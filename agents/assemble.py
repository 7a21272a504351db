"""Build everything one run needs from a crew.yaml: config, crew, ledger, memory, loop settings.

Shared by `autoresearch run` and `autoresearch compare`, so both start a crew the same way.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from agents.bench.sandbox import SANDBOXES, SandboxUnavailable, select_sandbox
from agents.config import ROLE_NAMES, ClusterConfig, CrewConfig, check_keys, load_config, resolve_model
from agents.crew.llm.offline import OfflineLLM, SamplerLLM
from agents.crew.llm.usage import UsageLedger
from agents.crew.policy import OfflinePolicy
from agents.crew.roles import ResearchCrew, build_llms
from agents.lock import RunLock
from agents.loop import LoopEvent, LoopSettings
from agents.record.gitops import ExperimentRepo
from agents.record.journal import Journal
from agents.record.mlflow_runs import RunContext
from agents.record.results import ResultsStore
from agents.record.tracking import Tracker, project_root, resolve_target
from memory.store import ExperimentMemory

if TYPE_CHECKING:
    from agents.crew.hpo import Sampler


class SetupError(RuntimeError):
    """Something the user must fix before a run can start; the message says what."""


@dataclass
class Overrides:
    max_experiments: int | None = None
    max_hours: float | None = None
    max_usd: float | None = None
    time_budget: float | None = None
    memory_path: Path | None = None
    pipelining: bool | None = None
    run_dir: Path | None = None  # results somewhere other than runs/<tag> (compare keeps them outside worktrees)
    sandbox: str | None = None  # auto | bwrap | landlock | none, over crew.yaml's `sandbox`
    tracking_experiment: str | None = None  # the MLflow experiment (default: the tag; a compare passes its name)
    on_model_failure: str | None = None  # "stop" for `run --strict`
    workers: int | str | None = None  # experiments in flight (crew.yaml cluster.workers); "auto": one per GPU
    address: str | None = None  # a Ray cluster to join (crew.yaml cluster.address)


def detect_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def check_prepared(repo_dir: Path) -> None:
    """Data and tokenizer must exist before the first run; prepare.py says how to make them if not."""
    code = "import prepare; prepare.ensure_prepared()"
    # in a subprocess: prepare.py belongs to the repository, not to this package, and imports torch
    done = subprocess.run([sys.executable, "-c", code], cwd=repo_dir, capture_output=True, text=True)
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        last = lines[-1] if lines else "data not prepared: run `autoresearch prepare` first"
        raise SetupError(last.removeprefix("prepare.NotPreparedError: "))


def build_settings(repo_dir: Path, config_path: Path, tag: str, overrides: Overrides | None = None,
                   config_name: str | None = None, env: dict | None = None) -> LoopSettings:
    env = dict(os.environ if env is None else env)
    repo_dir = Path(repo_dir).resolve()
    ExperimentRepo(repo_dir).ensure_git_repo()
    config = load_config(config_path)
    check_keys(config, env)
    check_sampler(config)
    RunLock(repo_dir).ensure_free()  # before opening memory, which only one process may write
    config = _apply(config, overrides or Overrides())
    try:  # probed once, before anything runs: an explicit choice that cannot start stops here
        sandbox = select_sandbox(config.sandbox, sys.executable)
    except SandboxUnavailable as exc:
        raise SetupError(f"{exc}; choose another with --sandbox or `sandbox:` in crew.yaml") from None
    program_path = repo_dir / "program.md"
    if not program_path.exists():
        raise SetupError(f"{program_path} not found: every role reads the research program from it")

    run_dir = overrides.run_dir if overrides and overrides.run_dir else None
    # CrewAI keeps a SQLite copy of each task's output (the prompts' answers): inside the run, not in ~/.local
    os.environ["CREWAI_STORAGE_DIR"] = str((run_dir or repo_dir / "runs" / tag) / "crewai")
    ledger = UsageLedger(max_usd=config.loop.max_usd, max_tokens=config.loop.max_tokens)
    policy = OfflinePolicy(seed=config.loop.seed)
    llms = build_llms(config, ledger, lambda role: OfflineLLM(policy))
    program = program_path.read_text()
    device = detect_device()
    sampler = open_sampler(config, run_dir or repo_dir / "runs" / tag, tag, device, ledger) if config.sampler else None
    if sampler is not None and config.sampler.turns.crew:
        program += sampler_note(config)
    crew = ResearchCrew(config, program, ledger, llms, sampler=SamplerLLM(sampler) if sampler else None)

    memory_path = (overrides.memory_path if overrides and overrides.memory_path else None) or \
        (repo_dir / config.memory.path if not Path(config.memory.path).is_absolute() else Path(config.memory.path))
    # memory is never the only copy: a missing or corrupted store is rebuilt from these results
    parquets = sorted((repo_dir / "runs").glob("*/results.parquet"))
    if run_dir is not None and (run_dir / "results.parquet").exists():
        parquets.append(run_dir / "results.parquet")
    device = detect_device()
    memory = ExperimentMemory.open(memory_path, embedding=config.memory.embedding, rebuild_from=parquets,
                                   repo=repo_dir, device=device)
    settings = LoopSettings(repo_dir=repo_dir, tag=tag, config=config, config_name=config_name or config.name,
                            program=program, crew=crew, ledger=ledger, memory=memory, run_dir=run_dir,
                            python=sys.executable, device=device, sandbox=sandbox.name,
                            sandbox_notice=sandbox.warning,
                            tracker=build_tracker(repo_dir, config, tag, config_name or config.name,
                                                  (overrides or Overrides()).tracking_experiment, env))
    if sampler is not None:
        settings.observers.append(sampler.observe)  # each trial's outcome reaches its study once it is written
    # fallbacks nobody asked for go where the user looks: the live view (a banner) or the plain console
    crew.listeners.append(lambda d: settings.on_event(LoopEvent("degraded", d.from_experiment or "", d.line())))
    ledger.faults.listeners.append(
        lambda n: settings.on_event(LoopEvent("note", n.experiment or "", f"{n.role}: {n.message}")))
    return settings


def check_sampler(config: CrewConfig) -> None:
    """SetupError (one line with the install command) when crew.yaml names a sampler whose extra is missing."""
    from agents.crew.hpo import SamplerUnavailable, require

    if config.sampler is not None:
        try:
            require(config.sampler.method)
        except SamplerUnavailable as exc:
            raise SetupError(str(exc)) from None


def open_sampler(config: CrewConfig, run_dir: Path, tag: str, device: str, ledger: UsageLedger) -> Sampler:
    """The run's hyperparameter sampler, its study continued from `run_dir` (told what happened while it was shut)."""
    from agents.crew.hpo import Sampler, SamplerError

    cfg = config.sampler
    try:
        sampler = Sampler(cfg.method, seed=config.loop.seed, box=cfg.box, startup_trials=cfg.startup_trials,
                          turns=(cfg.turns.crew, cfg.turns.sampler), run_dir=run_dir, tag=tag, device=device,
                          announce=lambda message: ledger.faults.announce("hypothesis", message))
    except SamplerError as exc:
        raise SetupError(str(exc)) from None
    in_flight = {(e.idea or {}).get("title", "") for e in Journal(run_dir).unfinished()}
    sampler.reconcile(ResultsStore(run_dir).load(), in_flight)
    return sampler


def sampler_note(config: CrewConfig) -> str:
    """What every role reads about the division of labour when a sampler shares the hypothesis role's turns."""
    turns = config.sampler.turns
    return (f"\n\n## Division of labour in this crew\n\nA hyperparameter sampler ({config.sampler.method}) takes "
            f"{turns.sampler} of every {turns.crew + turns.sampler} proposals: it sets all of train.py's numeric "
            f"constants at once (ideas titled '{config.sampler.method} trial N: ...'). The other {turns.crew} are "
            "yours: propose what the sampler cannot do, changes to the code itself (architecture, optimizer, "
            "schedule, initialisation), rather than new values for constants.\n")


def build_tracker(repo_dir: Path, config: CrewConfig, tag: str, crew_name: str, experiment: str | None,
                  env: dict) -> Tracker:
    """The run's MLflow tracker (off when crew.yaml says so or mlflow is not installed)."""
    models = {role: resolve_model(config.llm_settings(role), env) for role in ROLE_NAMES if config.role(role).enabled}
    context = RunContext(experiment=experiment or tag, run_tag=tag, crew=crew_name, role_models=models,
                         time_budget=config.loop.time_budget, repo_dir=str(project_root(repo_dir)))
    return Tracker(resolve_target(repo_dir, config.tracking, env), context)


def parse_workers(text: str) -> int | str:
    """`--workers` as given on a command line: a whole number >= 1, or 'auto'; SetupError otherwise."""
    value = text.strip().lower()
    if value == "auto":
        return "auto"
    if not value.isdigit() or int(value) < 1:
        raise SetupError(f"--workers must be a whole number of at least 1, or 'auto' (got {text!r})")
    return int(value)


def engine_options(workers: str, address: str | None) -> dict:
    """`--workers` and `--address` checked together: {"workers": ..., "address": ...}; SetupError when wrong."""
    options = {"workers": parse_workers(workers), "address": address}
    try:
        ClusterConfig.model_validate(options)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        raise SetupError(f"--{first['loc'][0]} {options.get(first['loc'][0])!r}: "
                         f"{first.get('ctx', {}).get('error', first['msg'])}") from None
    return options


def _apply(config: CrewConfig, o: Overrides) -> CrewConfig:
    if o.sandbox is not None and o.sandbox not in SANDBOXES:
        raise SetupError(f"--sandbox {o.sandbox!r} is not a sandbox; choose one of: {', '.join(SANDBOXES)}")
    if o.sandbox is not None:
        config = config.model_copy(update={"sandbox": o.sandbox})
    loop = config.loop.model_copy(update={k: v for k, v in {
        "max_experiments": o.max_experiments, "max_hours": o.max_hours, "max_usd": o.max_usd,
        "time_budget": o.time_budget, "pipelining": o.pipelining}.items() if v is not None})
    update: dict = {"loop": loop}
    if o.on_model_failure is not None:
        update["on_model_failure"] = o.on_model_failure
    changes = {k: v for k, v in {"workers": o.workers, "address": o.address}.items() if v is not None}
    try:
        update["cluster"] = ClusterConfig.model_validate({**config.cluster.model_dump(), **changes})
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        raise SetupError(f"--{first['loc'][0]} {changes.get(first['loc'][0])!r}: "
                         f"{first.get('ctx', {}).get('error', first['msg'])}") from None
    return config.model_copy(update=update)
