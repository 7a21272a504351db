"""Build everything one run needs from a crew.yaml: config, crew, ledger, memory, loop settings.

Shared by `autoresearch run` and `autoresearch compare`, so both start a crew the same way.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from agents.config import ClusterConfig, CrewConfig, check_keys, load_config
from agents.crew.llm.offline import OfflineLLM
from agents.crew.llm.usage import UsageLedger
from agents.crew.policy import OfflinePolicy
from agents.crew.roles import ResearchCrew, build_llms
from agents.lock import RunLock
from agents.loop import LoopSettings
from agents.record.gitops import ExperimentRepo
from memory.store import ExperimentMemory


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
    RunLock(repo_dir).ensure_free()  # before opening memory, which only one process may write
    config = _apply(config, overrides or Overrides())
    program_path = repo_dir / "program.md"
    if not program_path.exists():
        raise SetupError(f"{program_path} not found: every role reads the research program from it")

    ledger = UsageLedger(max_usd=config.loop.max_usd, max_tokens=config.loop.max_tokens)
    policy = OfflinePolicy(seed=config.loop.seed)
    llms = build_llms(config, ledger, lambda role: OfflineLLM(policy))
    program = program_path.read_text()
    crew = ResearchCrew(config, program, ledger, llms)

    memory_path = (overrides.memory_path if overrides and overrides.memory_path else None) or \
        (repo_dir / config.memory.path if not Path(config.memory.path).is_absolute() else Path(config.memory.path))
    run_dir = overrides.run_dir if overrides and overrides.run_dir else None
    # memory is never the only copy: a missing or corrupted store is rebuilt from these results
    parquets = sorted((repo_dir / "runs").glob("*/results.parquet"))
    if run_dir is not None and (run_dir / "results.parquet").exists():
        parquets.append(run_dir / "results.parquet")
    memory = ExperimentMemory.open(memory_path, embedding=config.memory.embedding, rebuild_from=parquets)
    return LoopSettings(repo_dir=repo_dir, tag=tag, config=config, config_name=config_name or config.name,
                        program=program, crew=crew, ledger=ledger, memory=memory, run_dir=run_dir,
                        python=sys.executable, device=detect_device())


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
    loop = config.loop.model_copy(update={k: v for k, v in {
        "max_experiments": o.max_experiments, "max_hours": o.max_hours, "max_usd": o.max_usd,
        "time_budget": o.time_budget, "pipelining": o.pipelining}.items() if v is not None})
    changes = {k: v for k, v in {"workers": o.workers, "address": o.address}.items() if v is not None}
    try:
        cluster = ClusterConfig.model_validate({**config.cluster.model_dump(), **changes})
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        raise SetupError(f"--{first['loc'][0]} {changes.get(first['loc'][0])!r}: "
                         f"{first.get('ctx', {}).get('error', first['msg'])}") from None
    return config.model_copy(update={"loop": loop, "cluster": cluster})
