"""The OS sandbox every train.py run goes through: bubblewrap, Landlock, or (announced) none.

What train.py gets inside (docs: README, "The sandbox"):
- bwrap: the whole file system read-only; the experiment's scratch directory writable, with its train.py and
  prepare.py bound read-only; a private /tmp; the user's HOME, /home, /root, /run, /var/tmp, /mnt and /media
  replaced by empty directories (the Python installation and the data cache bound back read-only where they
  live under one of those); a fresh /dev with the NVIDIA/DRI device nodes bound when present (the driver
  libraries stay visible through the read-only root); its own network namespace (no network at all), PID
  namespace (nothing it starts outlives it), IPC and UTS namespaces, a new session, and death with the harness.
- landlock: no namespaces needed: reads limited to the system, the Python installation, the data cache and the
  scratch directory; writes only there and to a few device nodes; no TCP bind/connect (Landlock ABI >= 4),
  abstract UNIX sockets and signals kept inside (ABI >= 6); a launcher reaps everything train.py started.
- none: only what every mode gets: the scrubbed environment, a private HOME and TMPDIR inside the scratch
  directory, the process-group kill, and the harness's hash and record checks.

`select_sandbox("auto")` takes the strongest backend that actually starts a trivial sandboxed command here
(probed once per process); when none does it says so in `Selection.warning`. An explicitly requested backend
that cannot start raises `SandboxUnavailable` with the reason.
"""

from __future__ import annotations

import functools
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

SANDBOXES = ("auto", "bwrap", "landlock", "none")
BACKENDS = ("bwrap", "landlock")  # strongest first: auto takes the first that starts


class SandboxUnavailable(RuntimeError):
    """An explicitly requested sandbox cannot start here; the message says why and what to do."""


@dataclass(frozen=True)
class Selection:
    name: str  # "bwrap" | "landlock" | "none"
    warning: str = ""  # for the user, once at the start of a run: what was wanted and why it is not there
    note: str = ""  # informational: why a stronger backend was passed over


@dataclass
class SandboxSpec:
    """What one run may see: its scratch directory (writable, the working directory) and read-only extras."""

    scratch: Path
    read_only_files: list[Path] = field(default_factory=list)  # inside scratch: train.py, prepare.py
    read_only_dirs: list[Path] = field(default_factory=list)  # the data cache
    home: Path | None = None  # private HOME inside scratch
    tmp: Path | None = None  # private TMPDIR inside scratch (bwrap mounts a private /tmp instead)


def python_paths(python: str = sys.executable) -> list[Path]:
    """Directories the interpreter needs to start and import torch: prefixes, its own folder, sys.path."""
    paths = {Path(sys.prefix), Path(sys.base_prefix), Path(sys.exec_prefix),
             Path(os.path.realpath(python)).parent.parent, Path(python).absolute().parent.parent}
    paths |= {Path(p) for p in sys.path if p and Path(p).is_dir()}
    home = Path(os.path.expanduser("~")).resolve()
    # never HOME itself or a folder above it (a sys.path entry like `~` would re-expose the user's files)
    return sorted({p.resolve() for p in paths if p.exists() and not home.is_relative_to(p.resolve())})


def wrap(name: str, spec: SandboxSpec, argv: list[str], python: str = sys.executable) -> list[str]:
    """The command that runs `argv` inside sandbox `name` ("none": argv itself)."""
    if name == "none":
        return list(argv)
    if name == "bwrap":
        from agents.bench.sandbox import bwrap

        return bwrap.command(spec, argv, python)
    if name == "landlock":
        from agents.bench.sandbox import landlock

        return landlock.command(spec, argv, python)
    raise ValueError(f"unknown sandbox {name!r}; choose one of: {', '.join(SANDBOXES)}")


def sandbox_env(name: str, spec: SandboxSpec) -> dict[str, str]:
    """Variables every mode sets for train.py: a private HOME and temp directory, no bytecode written; under
    Landlock, torch.compile compiling in the train.py process."""
    env = {"PYTHONDONTWRITEBYTECODE": "1"}
    if spec.home is not None:
        home = str(spec.home)
        env.update(HOME=home, XDG_CACHE_HOME=f"{home}/.cache", XDG_CONFIG_HOME=f"{home}/.config",
                   XDG_DATA_HOME=f"{home}/.local/share")
    if name == "bwrap":
        env["TMPDIR"] = "/tmp"  # a private tmpfs
    elif spec.tmp is not None:
        env["TMPDIR"] = str(spec.tmp)
    if name == "landlock":
        # /dev/shm is shared by every process of the machine, so Landlock leaves it unwritable: no POSIX
        # semaphores, hence no multiprocessing pools, and torch.compile's pool of compile workers would fail.
        env["TORCHINDUCTOR_COMPILE_THREADS"] = "1"
    return env


def probe(name: str, python: str = sys.executable) -> str | None:
    """None when backend `name` starts a trivial sandboxed Python here; else the reason it does not."""
    if name == "bwrap":
        from agents.bench.sandbox import bwrap

        return bwrap.probe(bwrap.binary(), python)
    if name == "landlock":
        from agents.bench.sandbox import landlock

        return landlock.probe(python)
    raise ValueError(f"no probe for sandbox {name!r}")


def select_sandbox(choice: str, python: str = sys.executable) -> Selection:
    """The backend a run will use for `choice` (auto | bwrap | landlock | none); see the module docstring."""
    if choice not in SANDBOXES:
        raise ValueError(f"unknown sandbox {choice!r}; choose one of: {', '.join(SANDBOXES)}")
    if choice == "none":
        return Selection("none")
    if choice != "auto":
        reason = _cached_probe(choice, python)
        if reason is not None:
            raise SandboxUnavailable(f"sandbox '{choice}' cannot start here: {reason}")
        return Selection(choice)
    reasons = []
    for name in BACKENDS:
        reason = _cached_probe(name, python)
        if reason is None:
            note = f"sandbox: {name} ({'; '.join(reasons)})" if reasons else ""
            return Selection(name, note=note)
        reasons.append(f"{name}: {reason}")
    return Selection("none", warning="no sandbox works here, train.py runs unconfined (" + "; ".join(reasons) +
                                     "), and every run compiles cold (compiled code is shared only between "
                                     "sandboxed runs); set `sandbox: none` in crew.yaml to accept this without the "
                                     "warning")


@functools.cache
def _probe_key(name: str, python: str, binary: str) -> str | None:
    return probe(name, python)


def _cached_probe(name: str, python: str) -> str | None:
    # keyed on the bwrap binary too, so pointing AUTORESEARCH_BWRAP elsewhere probes again
    binary = os.environ.get("AUTORESEARCH_BWRAP", "") if name == "bwrap" else ""
    return _probe_key(name, python, binary)
