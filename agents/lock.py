"""One runner per repository.

An advisory `flock` on `.autoresearch/run.lock`: the kernel releases it when the holder dies, even by
SIGKILL, so a lock file left behind by a crash is simply taken over (and we say so).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class RunLockError(RuntimeError):
    pass


class RunLock:
    def __init__(self, repo_dir: Path):
        self.path = Path(repo_dir) / ".autoresearch" / "run.lock"
        self._fh = None
        self.took_over_from: str | None = None

    def ensure_free(self) -> None:
        """Raise RunLockError now if a run holds the lock (checked before opening shared resources)."""
        if not self.path.exists():
            return
        with open(self.path) as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RunLockError(self._busy_message(fh.read().strip())) from None
            fcntl.flock(fh, fcntl.LOCK_UN)

    def _busy_message(self, holder: str) -> str:
        return (f"another autoresearch run is active in this repository ({holder or 'another process'}); "
                f"wait for it to finish or stop it (lock: {self.path})")

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip()
            fh.close()
            raise RunLockError(self._busy_message(holder)) from None
        fh.seek(0)
        previous = fh.read().strip()
        if previous:
            # the file exists but nobody holds it: its writer died without cleaning up
            self.took_over_from = previous
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}")
        fh.flush()
        self._fh = fh
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fh is not None:
            self._fh.seek(0)
            self._fh.truncate()
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None
