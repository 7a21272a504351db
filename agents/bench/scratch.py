"""The per-experiment scratch directory train.py runs in: its own copies of train.py and prepare.py.

train.py never runs in the repository or the run directory, so neither can be written by it (results.parquet,
other experiments' records and logs stay the harness's), and several experiments can run at once on one
machine. Layout: `train.py`, `prepare.py` (the copies that run; read-only inside bwrap), `result.json` (where
the evaluator writes its record), `home/` (the private HOME), `tmp/` (the private TMPDIR outside bwrap),
`compile-cache/` (the run's own torch.compile and Triton caches, made by the runner: compile_cache.py). The
working directory is the scratch directory itself, so `torch.save("x.pt")` lands here and goes with it.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

CODE_FILES = ("train.py", "prepare.py")


@dataclass(frozen=True)
class Scratch:
    dir: Path

    @property
    def train_py(self) -> Path:
        return self.dir / "train.py"

    @property
    def prepare_py(self) -> Path:
        return self.dir / "prepare.py"

    @property
    def result_path(self) -> Path:
        return self.dir / "result.json"

    @property
    def home(self) -> Path:
        return self.dir / "home"

    @property
    def tmp(self) -> Path:
        return self.dir / "tmp"

    @property
    def compile_cache(self) -> Path:
        return self.dir / "compile-cache"

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def make_scratch(workdir: Path, exp_id: str, root: Path | None = None) -> Scratch:
    """A fresh scratch directory (under `root`, default the system temp dir) with copies of the code files."""
    if root is not None:
        Path(root).mkdir(parents=True, exist_ok=True)
    scratch = Scratch(Path(tempfile.mkdtemp(prefix=f"autoresearch-{exp_id}-", dir=root)).resolve())
    for name in CODE_FILES:
        source = Path(workdir) / name
        if source.is_file():
            shutil.copyfile(source, scratch.dir / name)
    scratch.home.mkdir()
    scratch.tmp.mkdir()
    return scratch
