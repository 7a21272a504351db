"""Landlock: file-system and TCP rules the kernel enforces on train.py, no namespaces needed.

Reads: the system directories, the Python installation, the data cache and the scratch directory; writes: the
scratch directory and a few device nodes. The launcher (landlock_launch.py) applies the rules, keeps what the
run starts as its children and kills them when the run ends. Files inside the scratch directory stay writable
(Landlock only adds permissions beneath a directory): a changed prepare.py there is caught by the harness's
hash check instead.
"""

from __future__ import annotations

import glob
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from agents.bench.sandbox import SandboxSpec, python_paths

LAUNCHER = Path(__file__).with_name("landlock_launch.py")
SYSTEM_READ = ("/usr", "/lib", "/lib32", "/lib64", "/libx32", "/bin", "/sbin", "/etc", "/opt", "/proc", "/sys")
DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty", "/dev/nvidia*",
           "/dev/nvidia-caps", "/dev/dri")
PROBE_TIMEOUT_S = 20.0


def policy(spec: SandboxSpec, python: str = sys.executable) -> dict:
    devices = sorted({d for pattern in DEVICES for d in glob.glob(pattern)})
    read = [*SYSTEM_READ, *map(str, python_paths(python)), *map(str, spec.read_only_dirs)]
    return {"read": read, "read_write": [str(spec.scratch)], "devices": devices}


def command(spec: SandboxSpec, argv: list[str], python: str = sys.executable) -> list[str]:
    # the launcher runs on the harness's interpreter, which has py_landlock installed
    return [sys.executable, str(LAUNCHER), json.dumps(policy(spec, python)), "--", *argv]


def probe(python: str = sys.executable) -> str | None:
    """None when the launcher applies a ruleset and runs the interpreter under it; else why not."""
    try:
        import py_landlock
    except ImportError:
        return "the py-landlock package is not installed"
    try:
        abi = int(py_landlock.get_abi_version())
    except Exception as exc:
        return f"Landlock is not available in this kernel ({type(exc).__name__}: {exc})"
    if abi < 4:
        return f"Landlock ABI {abi} cannot restrict TCP (needs ABI 4, Linux 6.7)"
    with tempfile.TemporaryDirectory(prefix="autoresearch-probe-") as scratch:
        spec = SandboxSpec(scratch=Path(scratch).resolve())
        try:
            done = subprocess.run(command(spec, [python, "-c", ""], python), capture_output=True, text=True,
                                  timeout=PROBE_TIMEOUT_S, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"the Landlock launcher could not run ({exc})"
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        return f"the Landlock launcher failed ({lines[-1] if lines else f'exit {done.returncode}'})"
    return None
