"""Compiled code reused across training runs, without one run being able to change what another executes.

`torch.compile` keeps what it built under TORCHINDUCTOR_CACHE_DIR (FX graphs, AOT-autograd entries, generated
Python wrappers, C++ and Triton kernels) and Triton keeps its kernels under TRITON_CACHE_DIR. Those entries are
code: a process whose own compilation hashes to the path of an existing entry loads and runs that file without
checking what is in it. A cache every run could write would let one train.py plant code in the next one. So:

- **Private.** Every run compiles into its own cache inside its scratch directory (`Scratch.compile_cache`),
  which goes with the scratch when the run ends: what a run writes there never reaches another run.
- **Shared, read by copy.** Before a run starts, the shared cache (`<data cache>/compile-cache` unless named) is
  copied, file by file, into that private cache: copies, never links, so a run cannot reach a shared file
  through its own.
- **Written only from trusted runs.** `publish` adds the new files of a run of the starting train.py (the
  baselines: the researcher's own code, not the crew's), after it ended ok; an existing shared file is never
  replaced, and only regular files are taken (no links, no lock files).
- **Re-rooted.** Triton's group files (`__grp__*.json`) name their members by absolute path, the publishing
  run's; each copy made for a run points them at that run's own copies. Otherwise every kernel would miss: Triton
  counts a member that does not exist as missing, and inductor, finding the kernel's folder already there, leaves
  its own bundled copy unwritten (it re-roots the same way when it does write one).
- **Only inside a sandbox.** The shared cache is copied in and published only when the run was confined
  (bwrap or landlock), where it cannot write the shared folder directly, nor another run's scratch. With the
  sandbox `none` nothing stops a run from doing either, so every run there compiles cold, in private.

This module uses the standard library only (it runs on worker nodes, inside the runner).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

MODES = ("off", "use", "publish")  # off: private and cold; use: start from the shared cache; publish: use + add
CONFINED = ("bwrap", "landlock")  # the sandboxes that keep a run from writing the shared folder or other scratches
SKIPPED_DIRS = {"locks"}  # inductor's lock files: meaningless in another process
INDUCTOR_SUBDIR = "inductor"
TRITON_SUBDIR = "triton"


def default_shared_dir(data_cache: Path) -> Path:
    """Where the shared cache lives unless named: beside the prepared data, so every worker of a node finds it."""
    return Path(data_cache) / "compile-cache"


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"unknown compile cache mode {mode!r}; choose one of: {', '.join(MODES)}")
    return mode


@dataclass
class Provisioned:
    """What one run got: its private cache, how many shared files were copied in, and what it may do at the end."""

    private: Path
    shared: Path | None  # None: the run compiles cold and publishes nothing
    copied: int = 0
    publish: bool = False
    note: str = ""  # why the shared cache was left out, when it was asked for
    warning: str = ""  # the same when it is a fault the user should hear of (the copy failed)

    def env(self) -> dict[str, str]:
        """The variables that point torch.compile and Triton at the private cache."""
        return {"TORCHINDUCTOR_CACHE_DIR": str(self.private / INDUCTOR_SUBDIR),
                "TRITON_CACHE_DIR": str(self.private / TRITON_SUBDIR)}

    def describe(self, published: int | None = None) -> str:
        if self.shared is None:
            reason = self.warning or self.note
            return "private, cold" + (f" ({reason})" if reason else "")
        text = f"shared: {self.copied} file(s) copied in"
        return text + (f", {published} new file(s) published" if published is not None else "")


def provision(private: Path, mode: str, shared: Path | None, sandbox: str) -> Provisioned:
    """Make the run's private cache at `private`; copy the shared cache into it when the mode and sandbox allow."""
    check_mode(mode)
    private = Path(private)
    _make_private(private)
    if mode == "off" or shared is None:
        return Provisioned(private, None)
    if sandbox not in CONFINED:
        return Provisioned(private, None, note="no sandbox: runs do not share compiled code")
    shared = Path(shared)
    try:
        copied = _copy_new_files(shared, private, reroot_groups=True) if shared.is_dir() else 0
    except OSError as exc:  # a cold compile costs time, never the run
        shutil.rmtree(private, ignore_errors=True)
        _make_private(private)
        return Provisioned(private, None, warning=f"the shared compile cache could not be copied: {exc}")
    return Provisioned(private, shared, copied, publish=mode == "publish")


def _make_private(private: Path) -> None:
    (private / INDUCTOR_SUBDIR).mkdir(parents=True, exist_ok=True)
    (private / TRITON_SUBDIR).mkdir(parents=True, exist_ok=True)


def publish(provisioned: Provisioned) -> int:
    """Add the private cache's files that the shared cache lacks; returns how many were added."""
    if not provisioned.publish or provisioned.shared is None:
        return 0
    provisioned.shared.mkdir(parents=True, exist_ok=True)
    return _copy_new_files(provisioned.private, provisioned.shared)


def _regular_files(root: Path):
    """Paths (relative to root) of the regular files under root, neither through links nor in skipped folders."""
    for folder, dirs, files in os.walk(root):  # os.walk does not follow links to folders
        dirs[:] = [d for d in dirs if d not in SKIPPED_DIRS and not d.startswith(".")]
        for name in files:
            path = Path(folder) / name
            if not name.startswith(".") and not name.endswith(".tmp") and path.is_file() and not path.is_symlink():
                yield path.relative_to(root)


def _copy_new_files(source: Path, dest: Path, reroot_groups: bool = False) -> int:
    """Copy every regular file of `source` that `dest` lacks; an existing file of `dest` is never replaced.

    Each file is written under a temporary name in its folder and linked to its final name, which fails when
    that name exists: two runs publishing at once can neither half-write nor overwrite an entry. With
    `reroot_groups`, Triton group files are rewritten to name the copies beside them (`_rerooted_group`).
    """
    added = 0
    for relative in _regular_files(source):
        target = dest / relative
        if target.exists() or target.is_symlink():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".copy-", suffix=".tmp", dir=target.parent)
        os.close(fd)
        try:
            group = _rerooted_group(source / relative, target.parent) if reroot_groups else None
            if group is None:
                shutil.copyfile(source / relative, tmp)
            else:
                Path(tmp).write_text(group, encoding="utf-8")
            os.chmod(tmp, 0o644)
            os.link(tmp, target)
            added += 1
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    return added


def _rerooted_group(path: Path, folder: Path) -> str | None:
    """A Triton group file whose members (absolute paths, in the same key folder) are named in `folder`; None
    for any other file. Triton (triton/runtime/cache.py) keeps a group's members beside its `__grp__` file and
    counts a member whose path does not exist as missing, which makes the whole kernel a miss."""
    if not (path.name.startswith("__grp__") and path.name.endswith(".json")):
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    children = data.get("child_paths") if isinstance(data, dict) else None
    if not isinstance(children, dict) or not all(isinstance(p, str) for p in children.values()):
        return None
    data["child_paths"] = {name: str(folder / Path(p).name) for name, p in children.items()}
    return json.dumps(data)
