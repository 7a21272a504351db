"""Run a command under a Landlock ruleset and reap everything it starts (the `landlock` sandbox's launcher).

    python landlock_launch.py POLICY_JSON -- COMMAND...

POLICY_JSON: {"read": [dirs], "read_write": [dirs], "devices": [paths]}. The launcher applies the ruleset to
itself (inherited by everything it starts), becomes a child subreaper so that orphans of the command are
re-parented to it rather than to init, runs the command, and when it ends kills whatever is left. It exits
as the command did. Run by path, not as a module: it must not depend on the harness's packages.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys

PR_SET_CHILD_SUBREAPER = 36
REQUIRED_ABI = 1


def apply_policy(policy: dict) -> int:
    """Apply the Landlock ruleset; returns the kernel's Landlock ABI version."""
    from py_landlock import AccessFs, Landlock, get_abi_version

    abi = int(get_abi_version())
    ruleset = Landlock(strict=False)  # best effort: features the kernel lacks are dropped, not fatal
    ruleset.add_path_rule(*_existing(policy.get("read", [])),
                          access=AccessFs.READ_FILE | AccessFs.READ_DIR | AccessFs.EXECUTE)
    ruleset.allow_read_write(*_existing(policy.get("read_write", [])))
    devices = AccessFs.READ_FILE | AccessFs.WRITE_FILE
    if hasattr(AccessFs, "IOCTL_DEV"):
        devices |= AccessFs.IOCTL_DEV  # CUDA talks to /dev/nvidia* through ioctls
    for path in _existing(policy.get("devices", [])):  # directory rights are invalid on a file rule
        ruleset.add_path_rule(path, access=devices | AccessFs.READ_DIR if os.path.isdir(path) else devices)
    ruleset.apply()
    return abi


def _existing(paths: list[str]) -> list[str]:
    return [p for p in paths if os.path.exists(p)]


def _reap_all() -> None:
    """Kill every remaining child (orphans were re-parented here) until none is left."""
    while True:
        children = _children()
        if not children:
            try:
                while os.waitpid(-1, os.WNOHANG)[0] > 0:
                    pass
            except ChildProcessError:
                pass
            return
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def _children() -> list[int]:
    me, found = os.getpid(), []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == me:
                found.append(int(entry))
    return found


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: landlock_launch.py POLICY_JSON -- COMMAND...", file=sys.stderr)
        return 2
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print(f"landlock launcher: cannot become a subreaper ({os.strerror(ctypes.get_errno())})", file=sys.stderr)
        return 125
    try:
        apply_policy(json.loads(argv[0]))
    except Exception as exc:  # no Landlock here: the harness's probe reports this line
        print(f"landlock launcher: cannot apply the ruleset: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 125
    child = subprocess.Popen(argv[2:])
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: child.send_signal(signum))
    returncode = child.wait()
    _reap_all()
    if returncode < 0:  # die the way the command died, so the harness reads the same signal
        signal.signal(-returncode, signal.SIG_DFL)
        os.kill(os.getpid(), -returncode)
    return returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
