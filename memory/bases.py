"""What each stored experiment is compared by, read against the train.py of its own base commit.

An experiment's `Changes` come from its fingerprint where it was coded (the authority on constants and code),
with the technique names its idea declared; else from its declared changes, resolved against the train.py it
was proposed on; else from the English reader (stored with the reader's version). That train.py is the one at
the experiment's `parent_commit`, read from git; when git or the commit is not there, the repository's current
train.py stands in and `BaseTexts.fallbacks` counts it, so the store can say so.
"""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path

from memory.changes import Changes, declared, from_fingerprint
from memory.fingerprint import ChangeFingerprint
from memory.reader import READER_VERSION, read

GIT_TIMEOUT_S = 10


def current_train_py(repo: Path) -> str:
    """The repository's train.py, else the one in the working directory, else the project's own; "" if none."""
    shipped = Path(__file__).resolve().parents[1] / "train.py"
    for candidate in (repo / "train.py", Path.cwd() / "train.py", shipped):
        try:
            return candidate.read_text()
        except OSError:
            continue
    return ""


class BaseTexts:
    """train.py at a commit, from git, cached (several threads may ask; one git call per commit)."""

    def __init__(self, repo: Path):
        self.repo = Path(repo)
        self.fallbacks: dict[str, str] = {}  # commit -> why the current train.py stood in for it
        self._texts: dict[str, str] = {}
        self._lock = threading.Lock()

    def current(self) -> str:
        return self.at("")

    def at(self, commit: str) -> str:
        with self._lock:
            if commit not in self._texts:
                self._texts[commit] = self._read(commit)
            return self._texts[commit]

    def _read(self, commit: str) -> str:
        if commit:
            try:
                done = subprocess.run(["git", "-C", str(self.repo), "show", f"{commit}:train.py"],
                                      capture_output=True, text=True, timeout=GIT_TIMEOUT_S)
                if done.returncode == 0 and done.stdout.strip():
                    return done.stdout
                why = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "no train.py there"
            except (OSError, subprocess.SubprocessError) as exc:
                why = f"git unavailable ({type(exc).__name__})"
            self.fallbacks[commit] = why
        return current_train_py(self.repo)

    def note(self) -> str:
        """One line on the experiments read against the current train.py instead of their own base ("" if none)."""
        if not self.fallbacks:
            return ""
        why = next(iter(self.fallbacks.values()))
        return (f"memory: experiments of {len(self.fallbacks)} base commit(s) were read against the current train.py "
                f"(their own is not in git here: {why})")


def effective(title: str, rationale: str, declared_json: str, fingerprint_json: str, parent_commit: str,
              bases: BaseTexts) -> tuple[str, str]:
    """(Changes JSON, reader version or "") of one experiment."""
    items = parse_declared(declared_json)
    fp = ChangeFingerprint.from_json(fingerprint_json)
    if fp is not None and not fp.empty:
        named = {str(i["part"]): " ".join(str(i.get("technique", "")).split()) for i in items if i.get("part")}
        return from_fingerprint(fp, Changes(parts=named)).to_json(), ""
    base = bases.at(parent_commit)
    try:
        if items:
            return declared(items, base).to_json(), ""
    except (SyntaxError, ValueError, RecursionError):
        pass  # a value that is not Python (or a train.py that does not parse): the words decide
    try:
        return read(title, rationale, base).to_json(), READER_VERSION
    except (SyntaxError, ValueError, RecursionError):
        return Changes(complete=False, source="reading").to_json(), READER_VERSION


def parse_declared(text: str) -> list[dict]:
    """An experiment's declared changes (ExperimentRecord.changes: a JSON list), [] when absent or unreadable."""
    if not text:
        return []
    try:
        items = json.loads(text)
    except ValueError:
        return []
    return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []
