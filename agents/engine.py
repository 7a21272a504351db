"""Where a run's training happens: this machine with one worker (no Ray), or N workers on Ray.

`open_executor` gives the loop an executor for the run's settings (crew.yaml `cluster:`, or `--workers` /
`--address`) and cleans it up afterwards; a local Ray instance started for the run is stopped with it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from agents.bench.executor import Executor, LocalExecutor, gpu_label


def uses_ray(workers: int | str, address: str | None) -> bool:
    """One worker on this machine needs no Ray; anything else does."""
    return not (workers == 1 and address in (None, "local"))


@contextmanager
def open_executor(settings, run_dir: Path, prepare_py: str, on_note: Callable[[str], None]) -> Iterator[Executor]:
    cluster = settings.config.cluster
    if not uses_ray(cluster.workers, cluster.address):
        visible = gpu_label()  # the GPUs CUDA_VISIBLE_DEVICES names, else "cpu"
        executor = LocalExecutor(run_dir, settings.python,
                                 gpu=visible if visible != "cpu" or settings.device != "cuda" else "cuda")
        try:
            yield executor
        finally:
            executor.close(hurry=_hurry())
        return
    from agents.bench.cluster import ClusterError, RayExecutor, connect, disconnect

    owned = connect(cluster.address)
    try:
        fingerprint = data_fingerprint(settings.repo_dir, cluster.cache)
        executor = RayExecutor(cluster.workers, log_dir=run_dir, prepare_py=prepare_py, fingerprint=fingerprint,
                               cache_dir=cluster.cache, on_note=on_note)
        where = "a local Ray instance" if owned else f"the Ray cluster at {cluster.address or 'this process'}"
        asked = cluster.workers
        on_note(f"{executor.slots} worker(s) on {where}: {', '.join(f'{n.name} x{n.slots}' for n in executor.nodes.values())}"
                + ("" if executor.gpus else " (no GPU: the workers share the cores)")
                + (f"; {asked} asked for, the cluster has room for {executor.slots}"
                   if asked != "auto" and executor.slots < int(asked) else ""))
        if executor.slots == 0:
            raise ClusterError("the Ray cluster has no room for a training run (no GPU or CPU left)")
        try:
            yield executor
        finally:
            executor.close(hurry=_hurry())
    finally:
        disconnect(owned)


def _hurry() -> bool:
    """Leaving on a second Ctrl-C (KeyboardInterrupt): runs are killed without a grace period."""
    return sys.exc_info()[0] is KeyboardInterrupt


def data_fingerprint(repo_dir: Path, cache_dir: str | None) -> dict:
    """This machine's data fingerprint (prepare.py --fingerprint), which every worker node must match."""
    from agents.bench.cluster import ClusterError

    env = None
    if cache_dir:
        import os

        env = dict(os.environ, AUTORESEARCH_CACHE=cache_dir)
    done = subprocess.run([sys.executable, "prepare.py", "--fingerprint"], cwd=repo_dir, env=env,
                          capture_output=True, text=True)
    lines = [line for line in done.stdout.strip().splitlines() if line.strip()]
    if done.returncode != 0 or not lines:
        errors = [line for line in done.stderr.strip().splitlines() if line.strip()]
        raise ClusterError(errors[-1] if errors else "prepare.py --fingerprint gave no fingerprint of the data; "
                           "workers on other machines cannot be checked against it")
    return json.loads(lines[-1])
