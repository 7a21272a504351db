"""The `prepare-hash` rule: the locked prepare.py is byte for byte what the run started with."""

from __future__ import annotations

import hashlib
from pathlib import Path

from agents.bench.guard.report import Violation

LOCKED_FILE = "prepare.py"


def file_sha256(path: str | Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def check_prepare_hash(repo_dir: str | Path, expected: str) -> Violation | None:
    """A `prepare-hash` violation when repo_dir/prepare.py is missing or differs from `expected`; else None."""
    path = Path(repo_dir) / LOCKED_FILE
    if not path.is_file():
        return Violation("prepare-hash", 0, LOCKED_FILE, f"{path} is missing; the locked file must stay in place")
    actual = file_sha256(path)
    if actual != expected:
        return Violation("prepare-hash", 0, LOCKED_FILE,
                         f"{path} has sha256 {actual[:12]}..., expected {expected[:12]}...: the locked file changed")
    return None
