"""benchmarks/gpu_check.py: its CPU dry mode runs every part, and nothing it needs imports the crew's packages."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agents.bench import sandbox

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("crewai", "chromadb", "ray", "mlflow", "git")
FINAL = re.compile(r"^gpu_check: MFU (n/a|\d+\.\d) %, eval (n/a|\d+\.\d) s, compile cold (n/a|\d+) s / warm (n/a|\d+) s, "
                   r"sandbox (ok|FAILED)$")

# Installed first in every Python process of the check (train.py's too, through PYTHONPATH): importing one of the
# packages a stock GPU image lacks fails as it would there.
BLOCKER = textwrap.dedent(
    f"""
    import importlib.abc, sys

    class _Missing(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {HEAVY!r}:
                raise ModuleNotFoundError(f"No module named {{name!r}} (not on a stock GPU image)")
            return None

    sys.meta_path.insert(0, _Missing())
    """
)


@pytest.fixture
def without_heavy_packages(tmp_path) -> dict:
    site = tmp_path / "blocker"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)])}


def test_the_blocker_blocks(without_heavy_packages):
    done = subprocess.run([sys.executable, "-c", "import chromadb"], env=without_heavy_packages, capture_output=True,
                          text=True)
    assert done.returncode != 0 and "not on a stock GPU image" in done.stderr


def test_the_check_and_everything_it_runs_import_without_the_crews_packages(without_heavy_packages):
    code = textwrap.dedent(
        """
        import runpy, sys
        runpy.run_path("benchmarks/gpu_check.py", run_name="gpu_check")   # the check, not run
        import prepare                                                     # what train.py imports
        from agents.bench import compile_cache, executor, runner, scratch, decide
        from agents.bench.sandbox import bwrap, landlock
        probe = open("benchmarks/gpu_probe.py").read()
        compile(probe, "gpu_probe.py", "exec")
        print("loaded:", sorted({m.split(".")[0] for m in sys.modules} & {"crewai", "chromadb", "ray", "mlflow", "git"}))
        """
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=without_heavy_packages, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "loaded: []" in done.stdout


def test_bad_usage_is_named_in_one_line(tmp_path):
    done = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--budget", "0"], cwd=REPO, capture_output=True,
                          text=True)
    assert done.returncode == 2 and "--budget and --limit must be positive" in done.stderr
    done = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--project", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True)
    assert done.returncode == 2 and f"no train.py in {tmp_path}" in done.stderr


def test_without_a_gpu_the_check_says_so_and_points_at_the_dry_run():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    done = subprocess.run([sys.executable, "benchmarks/gpu_check.py"], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 2
    assert "gpu_check: error: no GPU visible to torch" in done.stderr and "--dry" in done.stderr


def test_compile_time_is_the_first_steps_excess_over_a_steady_step(tmp_path):
    import runpy

    check = runpy.run_path(str(REPO / "benchmarks" / "gpu_check.py"), run_name="gpu_check")
    log = tmp_path / "train.log"
    dts = [41000, 900, 310, 300, 300] + [300] * 10  # compile in the first step, a recompile in the second
    log.write_text("device: cuda | params: 50.00M\n" + "".join(
        f"step {i:05d} ({i:.1f}%) | loss: 9.0000 | lrm: 1.00 | dt: {dt}ms | tok/sec: {524288 * 1000 // dt:,} | "
        "epoch: 1\n" for i, dt in enumerate(dts)) + "---\nval_bpb:          1.000000\n")
    steps = check["read_steps"](log)
    assert [s[0] for s in steps] == list(range(len(dts)))
    run = check["TrainRun"](result=None, startup_s=1.0, steps=steps)
    assert run.compile_s == pytest.approx(40.7 + 0.6 + 0.01)
    assert run.tokens_per_s == 524288 * 1000 // 300
    assert check["TrainRun"](result=None, startup_s=None, steps=steps[:5]).compile_s is None


@pytest.mark.slow
def test_the_dry_run_goes_through_every_part(tmp_path, prepared_cache, without_heavy_packages):
    report = tmp_path / "check.json"
    env = {**without_heavy_packages, "AUTORESEARCH_CACHE": str(prepared_cache)}
    done = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--dry", "--out", str(tmp_path / "out"),
                           "--json", str(report)], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    lines = done.stdout.strip().splitlines()
    final = FINAL.match(lines[-1])
    assert final, done.stdout + done.stderr
    parts = {p["name"]: p for p in json.loads(report.read_text())["parts"]}
    assert list(parts) == ["device", "packages", "data", "sandbox", "baseline", "warm", "imports"]
    confined = sandbox.select_sandbox("auto").name != "none"
    if confined:
        assert done.returncode == 0, done.stdout + done.stderr
        assert all(p["status"] == "ok" for p in parts.values()), done.stdout
        assert final[5] == "ok"
        probe = parts["sandbox"]["figures"]["probe"]
        chosen = parts["sandbox"]["figures"]["loop_choice"]
        assert probe[chosen]["val_bpb"] == probe["none"]["val_bpb"] and "bit-identical" in parts["sandbox"]["text"]
    else:  # no sandbox here: the check says so, and the rest still runs
        assert done.returncode == 1 and final[5] == "FAILED" and parts["baseline"]["status"] == "ok"
    baseline, warm = parts["baseline"]["figures"], parts["warm"]["figures"]
    assert baseline["status"] == warm["status"] == "ok"
    assert baseline["num_steps"] >= 1 and baseline["eval_s"] > 0 and baseline["startup_s"] > 0
    assert baseline["steps_parsed"] == baseline["num_steps"]  # the check reads train.py's step lines as printed
    assert final[2] == f"{baseline['eval_s']:.1f}"
    assert baseline["compile_cache"].startswith("shared" if confined else "private")
    assert warm["budget_stretch"] is None
    assert parts["imports"]["text"] == "none of crewai, chromadb, ray, mlflow, git imported"
    assert final[1] == "n/a"  # no MFU on a CPU


def _load_check_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check_under_test", REPO / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _make_wheel(folder: Path) -> Path:
    import zipfile

    dist = "gpucheck_fake_pkg-1.0"
    files = {"gpucheck_fake_pkg/__init__.py": "VALUE = 7\n",
             f"{dist}.dist-info/METADATA": "Metadata-Version: 2.1\nName: gpucheck-fake-pkg\nVersion: 1.0\n",
             f"{dist}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    wheel = folder / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
        archive.writestr(f"{dist}.dist-info/RECORD", "".join(f"{n},,\n" for n in [*files, f"{dist}.dist-info/RECORD"]))
    return wheel


def test_a_missing_small_package_is_installed_from_the_wheels_folder_or_named(tmp_path, monkeypatch):
    import argparse

    module = _load_check_module()
    monkeypatch.setattr(module, "SMALL_PACKAGES", {"gpucheck_fake_pkg": ("gpucheck-fake-pkg", "a test")})
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("PYTHONPATH", "/somewhere/else")
    wheels = tmp_path / "wheels"
    wheels.mkdir()

    def check(out: str):
        args = argparse.Namespace(project=str(REPO), out=str(tmp_path / out), python=sys.executable, dry=True,
                                  budget=1.0, limit=60.0, wheels=str(wheels), json=None)
        return module.Check(args)

    part = module.Part("packages")
    with pytest.raises(module.PartFailed, match=r"missing: gpucheck-fake-pkg \(a test\); bring their wheels"):
        check("first").check_packages(part)
    _make_wheel(wheels)
    part = module.Part("packages")
    check("second").check_packages(part)
    site = tmp_path / "second" / "site"
    assert part.text == f"installed 1 wheel(s) from {wheels} into {site}; present: gpucheck-fake-pkg"
    assert os.environ["PYTHONPATH"] == f"{site}{os.pathsep}/somewhere/else"  # for every process the check starts
    done = subprocess.run([sys.executable, "-c", "import gpucheck_fake_pkg; print(gpucheck_fake_pkg.VALUE)"],
                          capture_output=True, text=True, env=os.environ.copy())
    assert done.stdout.strip() == "7", done.stderr
    sys.modules.pop("gpucheck_fake_pkg", None)
