"""A throwaway experiment repository with the toy prepare.py/train.py, for fast loop tests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from agents.config import PRESETS_DIR

ROOT = Path(__file__).resolve().parent.parent
TOY = Path(__file__).resolve().parent / "toy"


def make_toy_repo(path: Path, *, preset: str = "offline", loop: dict | None = None, roles: dict | None = None,
                  memory_path: str | None = None, crew_extra: dict | None = None) -> Path:
    """Create a git repo at `path` holding the toy files, program.md and a crew.yaml; return its crew.yaml."""
    path.mkdir(parents=True, exist_ok=True)
    shutil.copy(TOY / "prepare.py", path / "prepare.py")
    shutil.copy(TOY / "train.py", path / "train.py")
    shutil.copy(ROOT / "program.md", path / "program.md")
    config = yaml.safe_load((PRESETS_DIR / f"{preset}.yaml").read_text())
    if "extends" in config:  # presets extend the shipped crew.yaml by a relative path
        config["extends"] = str((PRESETS_DIR / config["extends"]).resolve())
    config.setdefault("loop", {}).update({"time_budget": 0.05, "max_experiments": 3, **(loop or {})})
    config["loop"].setdefault("noise", {}).setdefault("baseline_repeats", 2)
    for role, settings in (roles or {}).items():
        config.setdefault("roles", {}).setdefault(role, {}).update(settings)
    config["tracking"] = False  # MLflow costs seconds per repository: only the tracking tests turn it on
    config.update(crew_extra or {})
    if memory_path is not None:
        config.setdefault("memory", {})["path"] = memory_path
    (path / "crew.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (path / ".gitignore").write_text("runs/\n.autoresearch/\n__pycache__/\n")
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@localhost"]
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=path, check=True)
    subprocess.run(git + ["add", "."], cwd=path, check=True)
    subprocess.run(git + ["commit", "-qm", "toy experiment repo"], cwd=path, check=True)
    return path / "crew.yaml"


def run_toy(repo: Path, config: Path, tag: str = "t1"):
    """Run the loop in-process on a toy repository and close its memory afterwards."""
    from agents.assemble import build_settings
    from agents.loop import run_loop

    settings = build_settings(repo, config, tag)
    try:
        return run_loop(settings)
    finally:
        settings.memory.close()


def check_consistency(repo_dir: Path, tag: str) -> list:
    """results.tsv, results.parquet, the branch and the refs must tell the same story; returns the records."""
    import git

    from agents.record.results import ResultsStore

    store = ResultsStore(repo_dir / "runs" / tag)
    records = store.load()
    tsv_rows = store.tsv_path.read_text().splitlines()[1:]
    assert len(tsv_rows) == len(records), "results.tsv and results.parquet disagree"
    assert len({r.exp_id for r in records}) == len(records), "an experiment was counted twice"
    for row, record in zip(tsv_rows, records, strict=True):
        assert row.split("\t")[3] == record.status

    repo = git.Repo(repo_dir)
    head = repo.commit(f"autoresearch/{tag}")
    kept = [r for r in records if r.status == "keep"]
    if kept:
        assert head.hexsha == kept[-1].commit, "the branch is not on the last kept commit"
    for r in records:
        if r.status in ("keep", "discard", "crash"):
            ref = repo.commit(f"refs/autoresearch/{tag}/{r.exp_id}")
            assert ref.hexsha == r.commit, f"{r.exp_id}: its ref does not point at its commit"
            assert repo.is_ancestor(ref, head) == (r.status == "keep"), f"{r.exp_id} ({r.status}) on the wrong side"
    assert not repo.is_dirty(path="train.py"), "train.py left modified"
    return records
