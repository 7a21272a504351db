"""The compile cache: shared compiled code reaches a run only as a private copy, and only trusted runs add to it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agents.bench import compile_cache, sandbox
from agents.bench.compile_cache import provision, publish
from agents.bench.runner import run_training, start_training
from agents.bench.sandbox import bwrap
from tests.test_runner import FAKE_PREPARE

CONFINED = [name for name in sandbox.BACKENDS if sandbox.probe(name) is None]
needs_sandbox = pytest.mark.skipif(not CONFINED, reason="no sandbox starts here (sharing needs one)")


def write_tree(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- the module


def test_a_confined_run_gets_a_private_copy_of_the_shared_cache(tmp_path):
    shared = tmp_path / "shared"
    write_tree(shared, {"inductor/ab/cab.py": "def call(): pass\n", "triton/0/K/k.cubin": "bin"})
    got = provision(tmp_path / "private", "use", shared, "bwrap")
    assert got.copied == 2 and tree(got.private) == tree(shared)
    assert got.env() == {"TORCHINDUCTOR_CACHE_DIR": str(got.private / "inductor"),
                         "TRITON_CACHE_DIR": str(got.private / "triton")}
    copy, original = got.private / "inductor/ab/cab.py", shared / "inductor/ab/cab.py"
    assert os.stat(copy).st_ino != os.stat(original).st_ino  # a copy, not a link to the shared file
    copy.write_text("import builtins; builtins.POISONED = True\n")  # what a run does to its own cache ...
    assert original.read_text() == "def call(): pass\n"  # ... stays its own
    assert "shared: 2 file(s) copied in" in got.describe()


@pytest.mark.parametrize("mode, sandbox_name", [("off", "bwrap"), ("use", "none"), ("publish", "none")])
def test_without_a_sandbox_or_with_the_cache_off_a_run_compiles_cold(tmp_path, mode, sandbox_name):
    shared = tmp_path / "shared"
    write_tree(shared, {"inductor/ab/cab.py": "shared code\n"})
    got = provision(tmp_path / "private", mode, shared, sandbox_name)
    assert got.shared is None and got.copied == 0 and not got.publish
    assert tree(got.private) == {} and (got.private / "inductor").is_dir() and (got.private / "triton").is_dir()
    write_tree(got.private, {"inductor/new.py": "x"})
    assert publish(got) == 0 and tree(shared) == {"inductor/ab/cab.py": "shared code\n"}
    assert got.describe().startswith("private, cold")
    if sandbox_name == "none":
        assert "no sandbox" in got.describe()


def test_publish_adds_new_regular_files_only_and_never_replaces_one(tmp_path):
    shared = tmp_path / "shared"
    write_tree(shared, {"inductor/ab/cab.py": "trusted\n"})
    got = provision(tmp_path / "private", "publish", shared, "landlock")
    write_tree(got.private, {"inductor/ab/cab.py": "poisoned\n", "inductor/cd/ccd.py": "new\n",
                             "inductor/locks/ccd.lock": "", "inductor/ef/x.py.tmp": "half written"})
    (got.private / "inductor/link.py").symlink_to(tmp_path / "outside.py")
    (tmp_path / "outside.py").write_text("not the run's\n")
    assert publish(got) == 1
    assert tree(shared) == {"inductor/ab/cab.py": "trusted\n", "inductor/cd/ccd.py": "new\n"}
    assert publish(got) == 0  # idempotent: everything there is already shared
    assert got.describe(1).endswith("1 new file(s) published")


def test_triton_groups_name_the_run_s_own_copies(tmp_path):
    """Triton finds a kernel through its group file, which names members by absolute path (the publisher's)."""
    import json

    publisher = tmp_path / "gone" / "triton" / "KEY"  # the baseline's scratch, removed since
    shared = tmp_path / "shared"
    members = {"k.cubin": str(publisher / "k.cubin"), "k.json": str(publisher / "k.json")}
    write_tree(shared, {"triton/KEY/k.cubin": "bin", "triton/KEY/k.json": "{}",
                        "triton/KEY/__grp__k.json": json.dumps({"child_paths": members}),
                        "inductor/__grp__not_triton.txt": "left alone"})
    got = provision(tmp_path / "private", "use", shared, "bwrap")
    group = json.loads((got.private / "triton/KEY/__grp__k.json").read_text())["child_paths"]
    assert group == {name: str(got.private / "triton" / "KEY" / name) for name in members}
    assert all(Path(path).is_file() for path in group.values())  # as Triton's get_group checks them
    assert (got.private / "inductor/__grp__not_triton.txt").read_text() == "left alone"
    assert json.loads((shared / "triton/KEY/__grp__k.json").read_text())["child_paths"] == members


def test_an_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="unknown compile cache mode 'sometimes'"):
        compile_cache.check_mode("sometimes")


def test_a_shared_cache_that_cannot_be_copied_means_a_cold_run_and_a_warning(tmp_path, monkeypatch):
    shared = tmp_path / "shared"
    write_tree(shared, {"inductor/ab/cab.py": "x"})

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(compile_cache.shutil, "copyfile", broken)
    got = provision(tmp_path / "private", "publish", shared, "bwrap")
    assert got.shared is None and not got.publish and "No space left" in got.warning
    assert (got.private / "inductor").is_dir() and tree(got.private) == {}


# ---------------------------------------------------------------- through the runner

CACHE_WRITER = """
import os, pathlib, prepare
cache = pathlib.Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])
print("inside scratch:", cache.is_relative_to(pathlib.Path.cwd()), "| triton:", os.environ["TRITON_CACHE_DIR"])
print("seen:", sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file()))
(cache / "{name}.py").write_text("compiled by {name}")
prepare.write_record(1.0)
"""


def run_writer(tmp_path: Path, name: str, mode: str, sandbox_name: str, shared: Path):
    workdir = tmp_path / f"work-{name}"
    workdir.mkdir()
    (workdir / "prepare.py").write_text(FAKE_PREPARE)
    (workdir / "train.py").write_text(textwrap.dedent(CACHE_WRITER.format(name=name)))
    return run_training(workdir, tmp_path / "runs", name, time_budget=1, seed=1, sandbox=sandbox_name,
                        compile_cache_mode=mode, compile_cache_dir=shared)


@needs_sandbox
def test_only_a_publishing_run_adds_to_the_shared_cache(tmp_path):
    shared = tmp_path / "shared"
    name = CONFINED[0]
    first = run_writer(tmp_path, "baseline", "publish", name, shared)
    assert first.ok, first.log_tail
    assert "inside scratch: True" in first.log_tail and "seen: []" in first.log_tail
    assert first.compile_cache == "shared: 0 file(s) copied in, 1 new file(s) published"
    assert tree(shared) == {"inductor/baseline.py": "compiled by baseline"}
    second = run_writer(tmp_path, "candidate", "use", name, shared)
    assert second.ok and "seen: ['baseline.py']" in second.log_tail
    assert second.compile_cache == "shared: 1 file(s) copied in"
    third = run_writer(tmp_path, "next", "use", name, shared)
    assert "seen: ['baseline.py']" in third.log_tail  # the candidate's file did not reach it
    assert tree(shared) == {"inductor/baseline.py": "compiled by baseline"}


def test_an_unsandboxed_run_neither_sees_nor_publishes_shared_code(tmp_path):
    shared = tmp_path / "shared"
    write_tree(shared, {"inductor/trusted.py": "x"})
    result = run_writer(tmp_path, "baseline", "publish", "none", shared)
    assert result.ok and "inside scratch: True" in result.log_tail and "seen: []" in result.log_tail
    assert result.compile_cache.startswith("private, cold (no sandbox")
    assert tree(shared) == {"inductor/trusted.py": "x"}


def test_the_runner_owns_the_compile_cache_variables(tmp_path):
    workdir = tmp_path / "work"
    workdir.mkdir()
    (workdir / "train.py").write_text("pass\n")
    for key in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):
        with pytest.raises(ValueError, match=f"extra_env may not set {key}: the runner owns it"):
            start_training(workdir, tmp_path / "runs", "x", time_budget=1, seed=1, extra_env={key: "/tmp/shared"})
    with pytest.raises(ValueError, match="unknown compile cache mode"):
        start_training(workdir, tmp_path / "runs", "x", time_budget=1, seed=1, compile_cache_mode="yes")


def test_bwrap_binds_each_gpu_device_node_once(monkeypatch, tmp_path):
    found = {"/dev/nvidia*": ["/dev/nvidia0", "/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-caps"],
             "/dev/nvidia-caps": ["/dev/nvidia-caps"], "/dev/dri": []}
    monkeypatch.setattr(bwrap.glob, "glob", lambda pattern: found.get(pattern, []))
    args = bwrap.command(sandbox.SandboxSpec(scratch=tmp_path), ["python", "train.py"], bwrap="bwrap")
    bound = [args[i + 1] for i, arg in enumerate(args) if arg == "--dev-bind"]
    assert sorted(bound) == ["/dev/nvidia-caps", "/dev/nvidia-uvm", "/dev/nvidia0", "/dev/nvidiactl"]
    assert args.index("--dev") < args.index("--dev-bind")  # bound into the fresh /dev, not hidden by it


@pytest.mark.skipif("landlock" not in CONFINED, reason="Landlock does not start here")
def test_under_landlock_torch_compile_compiles_in_the_run_s_own_process(tmp_path):
    """Landlock leaves /dev/shm unwritable: no semaphores, so no pool of compile workers (they would fail)."""
    code = ("import os, multiprocessing\nprint('threads', os.environ.get('TORCHINDUCTOR_COMPILE_THREADS'))\n"
            "try:\n    multiprocessing.Lock()\n    print('semaphores: yes')\nexcept OSError:\n    print('semaphores: no')\n")
    spec = sandbox.SandboxSpec(scratch=tmp_path.resolve())
    env = {**os.environ, **sandbox.sandbox_env("landlock", spec)}
    done = subprocess.run(sandbox.wrap("landlock", spec, [sys.executable, "-c", code]), cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.stdout.split("\n")[:2] == ["threads 1", "semaphores: no"], done.stdout + done.stderr
    assert "TORCHINDUCTOR_COMPILE_THREADS" not in sandbox.sandbox_env("bwrap", spec)  # bwrap has its own /dev/shm


# ---------------------------------------------------------------- a poisoned entry, with torch.compile itself

COMPILING = """
import builtins, os, pathlib
import torch
from torch._dynamo.utils import counters
import prepare

@torch.compile
def f(x):
    return (x * 2 + 1).sin()

x = torch.arange(8.0)
right = torch.allclose(f(x), (x * 2 + 1).sin())
print("hits", counters["inductor"]["fxgraph_cache_hit"], "poisoned", getattr(builtins, "POISONED", False),
      "right", right, flush=True)
if os.environ.get("POISON"):
    cache = pathlib.Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])
    for path in cache.rglob("*.py"):  # every generated wrapper this run loaded or wrote
        path.write_text(path.read_text() + "\\nimport builtins; builtins.POISONED = True\\n")
    try:
        (pathlib.Path(os.environ["AUTORESEARCH_CACHE"]) / "compile-cache" / "planted.py").write_text("x")
        print("planted in the shared cache")
    except OSError as exc:
        print("shared cache not writable:", type(exc).__name__)
prepare.write_record(1.0)
"""


@pytest.mark.slow
@needs_sandbox
def test_a_poisoned_entry_does_not_change_what_the_next_run_executes(tmp_path, monkeypatch):
    data = tmp_path / "data"  # the data cache: the shared compile cache lives in it, read-only to runs
    data.mkdir()
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(data))
    workdir = tmp_path / "work"
    workdir.mkdir()
    (workdir / "prepare.py").write_text(FAKE_PREPARE)
    (workdir / "train.py").write_text(textwrap.dedent(COMPILING))
    name = CONFINED[0]

    def run(exp_id, mode, poison=False, keep=False):
        job = start_training(workdir, tmp_path / "runs", exp_id, time_budget=1, seed=1, sandbox=name,
                             compile_cache_mode=mode, extra_env={"POISON": "1"} if poison else {},
                             keep_scratch=keep, hard_timeout_s=600)
        result = job.wait()
        assert result.ok, result.log_tail
        return result, job.scratch

    trusted, _ = run("baseline", "publish")  # compiles cold, then shares what it compiled
    assert "hits 0 poisoned False right True" in trusted.log_tail
    assert list((data / "compile-cache" / "inductor").rglob("*.py")), trusted.compile_cache
    attacker, attacker_scratch = run("attacker", "use", poison=True, keep=True)
    assert "hits 1 poisoned False" in attacker.log_tail  # it started from the shared cache
    assert "shared cache not writable" in attacker.log_tail
    victim, _ = run("victim", "use")
    assert "hits 1 poisoned False right True" in victim.log_tail, victim.log_tail
    assert not (data / "compile-cache" / "planted.py").exists()

    # The control: the attacker's cache, had it been shared, would have run its code in the next process.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTORESEARCH_RESULT")}
    env["TORCHINDUCTOR_CACHE_DIR"] = str(attacker_scratch.compile_cache / "inductor")
    env["PYTHONPATH"] = os.pathsep.join([str(workdir), *sys.path])
    done = subprocess.run([sys.executable, str(workdir / "train.py")], cwd=workdir, env=env, capture_output=True,
                          text=True, timeout=600)
    assert "hits 1 poisoned True" in done.stdout, done.stdout + done.stderr
    attacker_scratch.remove()


# ---------------------------------------------------------------- the loop: who publishes


@pytest.mark.slow
def test_the_loop_shares_compiled_code_only_from_the_starting_train_py(tmp_path, monkeypatch):
    from agents.bench import executor
    from tests.toyrepo import check_consistency, make_toy_repo, run_toy

    repo = tmp_path / "repo"
    config = make_toy_repo(repo, loop={"max_experiments": 2})
    start = (repo / "train.py").read_text()
    seen: dict[str, tuple[str, bool]] = {}
    real = executor.start_training

    def spy(workdir, run_dir, exp_id, **kwargs):
        seen[exp_id] = (kwargs.get("compile_cache_mode", "use"), (Path(workdir) / "train.py").read_text() == start)
        return real(workdir, run_dir, exp_id, **kwargs)

    monkeypatch.setattr(executor, "start_training", spy)
    run_toy(repo, config)
    records = check_consistency(repo, "t1")
    baselines = {r.exp_id for r in records if r.status == "baseline"}
    assert baselines and baselines < set(seen)
    for exp_id, (mode, is_start) in seen.items():
        assert mode == ("publish" if exp_id in baselines else "use"), (exp_id, mode)
        assert is_start or exp_id not in baselines
    assert any(not is_start for _, is_start in seen.values())  # the experiments ran edited code, and only used
