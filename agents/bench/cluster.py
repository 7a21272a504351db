"""Training on a Ray cluster: connecting, checking each node's data, and `RayExecutor`.

`connect(address)` starts a local Ray instance for the run (stopped again at the end), or joins a running
cluster (`auto`, `ray://HOST:PORT`, or a head's HOST:PORT). `RayExecutor` runs each training run as a Ray task
holding one GPU (`num_gpus=1`; on machines without GPUs, an equal share of the cores), pinned to a node
whose data was checked first: a node whose cache is missing prepares it in a Ray task of its own; a node
whose data differs from the coordinator's, or that cannot prepare, is reported once and left out.

A run whose worker process or node vanishes comes back as `Finished(lost=...)` so the coordinator can put
it back in the queue. When no node is left at all, `ClusterLost` says so.

Token authentication: Ray 2.60 enables it by default and keeps the token in ~/.ray/auth_token; we leave
that on (it keeps other users of a machine off the instance's ports). A cluster you join decides its own.
"""

from __future__ import annotations

import socket
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from agents.bench import executor as worker_side
from agents.bench import runner as runner_module
from agents.bench.executor import Finished, Running, TrainingTask

INSTALL_HINT = "pip install 'ray>=2.60,<2.61'"
CONNECT_TIMEOUT_S = 5.0
NODE_REFRESH_S = 10.0
MAX_LOSSES = 3  # a run whose worker vanished this many times is recorded as a crash rather than retried forever


class ClusterError(RuntimeError):
    """The cluster cannot be used (not installed, not reachable, no usable node); one line for the user."""


class ClusterLost(ClusterError):
    """Every worker vanished while the run was going on."""


def import_ray():
    try:
        import ray
    except ImportError:
        raise ClusterError(f"more than one worker needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


def connect(address: str | None) -> bool:
    """Connect this process to Ray; True when it started a local instance that `disconnect` must stop.

    A process that is already connected (a notebook, a test) keeps its connection and owns nothing.
    """
    ray = import_ray()
    if ray.is_initialized():
        return False
    if address in (None, "local"):
        # Not RAY_kill_child_processes_on_worker_exit_with_raylet_subreaper: with it this process reads every
        # child's exit status as 0 (git's, train.py's). A train.py whose worker was killed ends with its budget.
        try:
            ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
        except Exception as exc:  # Ray raises many kinds here; the user needs one line either way
            raise ClusterError(f"could not start a local Ray instance: {_one_line(exc)}") from None
        return True
    if address != "auto":
        _check_reachable(address)
    try:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
    except Exception as exc:
        raise ClusterError(f"cannot join the Ray cluster at {address}: {_one_line(exc)}") from None
    return False


def disconnect(owned: bool) -> None:
    ray = import_ray()
    if owned and ray.is_initialized():
        ray.shutdown()


def _check_reachable(address: str) -> None:
    """Fail in seconds on an address nothing listens at (Ray itself waits half a minute or more)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except (OSError, ValueError) as exc:
        raise ClusterError(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}; start it with "
                           "`ray start --head` there, or check the address") from None


# ------------------------------------------------------------------------------------------ nodes and slots


@dataclass
class _Node:
    node_id: str
    name: str
    gpus: int
    cpus: float
    slots: int = 0
    cpus_per_run: float = 1.0
    busy: dict[str, int] = field(default_factory=dict)  # exp_id -> slot number, for the live view's labels

    def take_slot(self, exp_id: str) -> int:
        number = min(set(range(1, self.slots + 1)) - set(self.busy.values()))
        self.busy[exp_id] = number
        return number


class RayExecutor:
    """Runs training tasks on a Ray cluster, at most `slots` at once, each pinned to a checked node."""

    def __init__(self, workers: int | str, *, log_dir: Path, prepare_py: str, fingerprint: dict,
                 cache_dir: str | None = None, on_note: Callable[[str], None] = lambda text: None):
        self.ray = import_ray()
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self._strategy = NodeAffinitySchedulingStrategy
        # the worker-side code travels with the task: nodes need Ray and the training stack, not this package
        self.ray.cloudpickle.register_pickle_by_value(worker_side)
        self.ray.cloudpickle.register_pickle_by_value(runner_module)
        self.log_dir, self.prepare_py, self.fingerprint = Path(log_dir), prepare_py, fingerprint
        self.cache_dir, self.on_note = cache_dir, on_note
        self.scratch_root = str(Path(tempfile.gettempdir()) / "autoresearch" / uuid.uuid4().hex[:12])
        self._train = self.ray.remote(max_retries=0)(worker_side.run_on_worker)
        self._check = self.ray.remote(max_retries=0, num_cpus=0)(worker_side.check_node)
        self._refs: dict[object, tuple[TrainingTask, Running, _Node]] = {}
        self._losses: dict[str, int] = {}
        self._left_out: set[str] = set()
        self._checked_at = 0.0
        self.gpus = self._cluster_gpus()
        self.requested = workers
        self.nodes: dict[str, _Node] = {}
        self._add_nodes(self._alive_nodes())
        if not self.nodes:
            raise ClusterError("no node of the Ray cluster can train: " + ("; ".join(sorted(self._left_out)) or
                                                                           "it has no nodes"))

    # ------------------------------------------------------------------ the Executor interface
    @property
    def slots(self) -> int:
        return sum(n.slots for n in self.nodes.values())

    def free_slots(self) -> int:
        return sum(n.slots - len(n.busy) for n in self.nodes.values())

    def submit(self, task: TrainingTask) -> Running:
        node = max(self.nodes.values(), key=lambda n: (n.slots - len(n.busy), -len(n.busy)))
        if node.slots - len(node.busy) <= 0:
            raise RuntimeError("submit() with no free slot")
        # a GPU run also holds its share of the node's cores, so every slot's task fits (Ray's default is 1 CPU)
        resources = {"num_gpus": 1, "num_cpus": node.cpus_per_run} if self.gpus else {"num_cpus": node.cpus_per_run}
        ref = self._train.options(**resources, scheduling_strategy=self._strategy(node.node_id, soft=False)).remote(
            task, self.scratch_root)
        number = node.take_slot(task.exp_id)
        running = Running(task.exp_id, node.name, f"{node.name} #{number}", time.time())
        self._refs[ref] = (task, running, node)
        return running

    def wait(self, timeout: float) -> list[Finished]:
        if not self._refs:
            time.sleep(timeout)
            return self._refresh_nodes()
        ready, _ = self.ray.wait(list(self._refs), num_returns=len(self._refs), timeout=timeout)
        done = [self._collect(ref) for ref in ready]
        return done + self._refresh_nodes()

    def running(self) -> dict[str, Running]:
        return {task.exp_id: running for task, running, _ in self._refs.values()}

    def close(self, hurry: bool = False) -> None:
        """Cancel what still runs: politely first (the task then stops its train.py), by force after 10 s (1 s
        when the user asked to stop now)."""
        refs = list(self._refs)
        for force in (False, True):
            for ref in refs:
                try:
                    self.ray.cancel(ref, force=force)
                except Exception:  # already finished or its node is gone: nothing left to stop
                    pass
            if not force and refs:
                _, refs = self.ray.wait(refs, num_returns=len(refs), timeout=1.0 if hurry else 10.0)
        self._refs.clear()

    # ------------------------------------------------------------------ results
    def _collect(self, ref) -> Finished:
        task, running, node = self._refs.pop(ref)
        node.busy.pop(task.exp_id, None)
        try:
            result, log, host, gpu = self.ray.get(ref)
        except self.ray.exceptions.RayTaskError as exc:  # our own code failed on the worker: a crash, not a loss
            result = worker_side.failed_result(task.exp_id, self.log_dir, f"the worker failed: {_one_line(exc)}")
            return Finished(task.exp_id, result, running.node, "")
        except Exception as exc:  # the worker process or its node vanished
            self._losses[task.exp_id] = self._losses.get(task.exp_id, 0) + 1
            reason = f"worker on {running.node} lost ({type(exc).__name__})"
            self._checked_at = 0.0  # look at the nodes again now
            if self._losses[task.exp_id] >= MAX_LOSSES:
                result = worker_side.failed_result(task.exp_id, self.log_dir,
                                                   f"{reason}, {MAX_LOSSES} times: not retried again")
                return Finished(task.exp_id, result, running.node, "")
            return Finished(task.exp_id, None, running.node, "", lost=reason)
        log_path = self.log_dir / f"{task.exp_id}.log"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path.write_text(log, encoding="utf-8")  # the coordinator keeps every log, wherever it ran
        result.log_path, result.result_path = log_path, None
        return Finished(task.exp_id, result, host, gpu)

    # ------------------------------------------------------------------ nodes
    def _cluster_gpus(self) -> bool:
        return self.ray.cluster_resources().get("GPU", 0) > 0

    def _alive_nodes(self) -> list[dict]:
        return [n for n in self.ray.nodes() if n.get("Alive")]

    def _refresh_nodes(self) -> list[Finished]:
        """Drop dead nodes (their runs come back as lost), take in new ones; raise when none is left."""
        if time.monotonic() - self._checked_at < NODE_REFRESH_S:
            return []
        self._checked_at = time.monotonic()
        alive = self._alive_nodes()
        alive_ids = {n["NodeID"] for n in alive}
        lost = []
        for node_id, node in list(self.nodes.items()):
            if node_id in alive_ids:
                continue
            self.on_note(f"node {node.name} left the cluster; its runs go back in the queue")
            del self.nodes[node_id]
            for ref, (task, _, owner) in list(self._refs.items()):
                if owner is node:
                    self._refs.pop(ref)
                    lost.append(Finished(task.exp_id, None, node.name, "", lost=f"node {node.name} left the cluster"))
        new = [n for n in alive if n["NodeID"] not in self.nodes and n["NodeID"] not in self._left_out_ids]
        if new and self._slots_wanted() > self.slots:
            self._add_nodes(new)
        if not self.nodes:
            raise ClusterLost("every worker of the Ray cluster vanished; nothing is lost: run the same command again "
                              "once the cluster is back, and the runs in flight are trained again")
        return lost

    @property
    def _left_out_ids(self) -> set[str]:
        return {entry.split(" ", 1)[0] for entry in self._left_out}

    def _slots_wanted(self) -> int:
        return 1 << 30 if self.requested == "auto" else int(self.requested)

    def _add_nodes(self, candidates: list[dict]) -> None:
        """Check each node's data (preparing it where missing), then give the good ones slots."""
        checks = {n["NodeID"]: self._check.options(scheduling_strategy=self._strategy(n["NodeID"], soft=False)).remote(
            self.prepare_py, self.cache_dir, self.fingerprint.get("prepare_args"), self.scratch_root)
            for n in candidates}
        good = []
        for info in candidates:
            node_id = info["NodeID"]
            try:
                answer = self.ray.get(checks[node_id])
            except Exception as exc:
                answer = {"node": info.get("NodeManagerHostname", node_id[:8]), "error": _one_line(exc)}
            name = answer.get("node") or info.get("NodeManagerHostname", node_id[:8])
            found = answer.get("fingerprint")
            if found is None or found.get("data") != self.fingerprint.get("data"):
                why = answer.get("error") or "its data differs from this machine's (another corpus or tokenizer)"
                self._left_out.add(f"{node_id} {name}: {why}")
                self.on_note(f"node {name} left out: {why}")
                continue
            good.append((node_id, name, info.get("Resources", {})))
        for node_id, name, resources in good:
            self.nodes[node_id] = _Node(node_id, name, int(resources.get("GPU", 0)), float(resources.get("CPU", 1)))
        self._share_slots()

    def _share_slots(self) -> None:
        """GPUs: one slot per GPU, up to the workers asked for. CPUs only: the workers share the cores."""
        wanted = self._slots_wanted()
        if self.gpus:
            total = 0
            for node in self.nodes.values():
                node.slots = max(0, min(node.gpus, wanted - total))
                node.cpus_per_run = node.cpus / max(1, node.gpus)
                total += node.slots
            return
        if self.requested == "auto":
            wanted = len(self.nodes)  # no GPU: one worker per node
        nodes = sorted(self.nodes.values(), key=lambda n: -n.cpus)
        cores = sum(n.cpus for n in nodes)
        for i, node in enumerate(nodes):
            rest = wanted - sum(n.slots for n in nodes[:i])
            node.slots = rest if i == len(nodes) - 1 else min(rest, round(wanted * node.cpus / cores))
            node.cpus_per_run = node.cpus / max(1, node.slots)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."
