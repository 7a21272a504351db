"""An experiment project: the folder `autoresearch` commands work in, and `autoresearch init`, which makes one.

A project is a folder holding the locked `prepare.py` and the editable `train.py` (with `program.md` and
`crew.yaml` beside them) under git. The package ships these files (`agents/project/`), so a user who installed
it from a registry, without the repository, gets a ready project: the files, a `.gitignore` for the run
outputs, `git init` and a first commit.

The shipped files are committed copies of the repository's starting files, not links to them: a run in the
repository edits its own `train.py` on an experiment branch (and a user steers with `program.md` and
`crew.yaml`), and neither may become every new project's start. tests/test_template.py fails when a copy and
the repository's file differ, and builds a wheel on an experiment branch to show it ships the starting files.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from agents.config import PROJECT_TEMPLATE_DIR

PROJECT_FILES = ("prepare.py", "train.py", "program.md", "crew.yaml")
REQUIRED = ("prepare.py", "train.py")  # what every command needs in the current folder
IGNORED = ("runs/", ".autoresearch/", "__pycache__/")
FALLBACK_IDENTITY = ("autoresearch", "autoresearch@localhost")


class InitError(RuntimeError):
    """The project could not be created; nothing in the folder was overwritten."""


@dataclass
class Initialised:
    path: Path
    files: list[str]
    new_repository: bool
    commit: str
    identity_note: str  # set when git had no user configured and a local one was used


def is_project(folder: Path) -> bool:
    return all((folder / name).is_file() for name in REQUIRED)


def not_a_project_message(folder: Path) -> str:
    missing = [name for name in REQUIRED if not (folder / name).is_file()]
    return (f"{folder} is not an autoresearch project (no {' or '.join(missing)} here); create one with "
            "`autoresearch init DIR`, or cd into a project")


def init_project(dest: Path) -> Initialised:
    """Copy the project files into `dest` (created if needed), ignore run outputs, and commit them."""
    dest = Path(dest).expanduser().resolve()
    if dest.exists() and not dest.is_dir():
        raise InitError(f"{dest} exists and is not a folder")
    clashes = [name for name in PROJECT_FILES if (dest / name).exists()]
    if clashes:
        raise InitError(f"{dest} already has {', '.join(clashes)}; nothing was changed (pick a new or empty "
                        "folder, or move those files away)")
    sources = {name: PROJECT_TEMPLATE_DIR / name for name in PROJECT_FILES}
    absent = [name for name, path in sources.items() if not path.is_file()]
    if absent:
        raise InitError(f"the installed package lacks its project files ({', '.join(absent)} under "
                        f"{PROJECT_TEMPLATE_DIR}); reinstall autoresearch-crew")
    git = shutil.which("git")
    if git is None:
        raise InitError("git is not installed: every experiment is a git commit; install git and run init again")

    dest.mkdir(parents=True, exist_ok=True)
    inside = _git(dest, "rev-parse", "--is-inside-work-tree", check=False).stdout.strip() == "true"
    if not inside:
        _git(dest, "init", "-q")
    for name, source in sources.items():
        shutil.copyfile(source, dest / name)  # follows the package's links to the real files
    _ignore_run_outputs(dest / ".gitignore")
    files = [*PROJECT_FILES, ".gitignore"]
    _git(dest, "add", "--", *files)
    identity = []
    note = ""
    if not _git(dest, "config", "user.email", check=False).stdout.strip():
        identity = ["-c", f"user.name={FALLBACK_IDENTITY[0]}", "-c", f"user.email={FALLBACK_IDENTITY[1]}"]
        note = (f"git has no user configured: the first commit is by {FALLBACK_IDENTITY[0]} "
                f"<{FALLBACK_IDENTITY[1]}>")
    _git(dest, *identity, "commit", "-q", "-m", "autoresearch project: prepare.py, train.py, program.md, crew.yaml",
         "--", *files)
    commit = _git(dest, "rev-parse", "--short", "HEAD").stdout.strip()
    return Initialised(dest, files, not inside, commit, note)


def _ignore_run_outputs(path: Path) -> None:
    existing = path.read_text().splitlines() if path.exists() else []
    missing = [line for line in IGNORED if line not in existing]
    if missing:
        text = "\n".join(existing + missing) + "\n"
        path.write_text(text.lstrip("\n"))


def _git(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if check and done.returncode != 0:
        output = (done.stderr or done.stdout).strip().splitlines()
        raise InitError(f"git failed in {cwd}: {output[-1] if output else f'exit status {done.returncode}'}")
    return done
