"""Run `python train.py` in a subprocess, inside the OS sandbox, and turn what happened into a `RunResult`.

train.py runs from a per-experiment scratch directory holding copies of train.py and prepare.py (scratch.py),
inside the sandbox chosen for the run (sandbox/: bwrap, landlock or none), with a scrubbed environment (no API
keys or other secrets), a private HOME, its own process group (so a hard kill takes its children too) and a
hard time limit. The harness owns the log (everything train.py prints goes through a pipe to
`run_dir/<exp_id>.log`), the hard kill and the checks afterwards. The score comes only from the evaluator's JSON
record that `prepare.evaluate_bpb` writes to `AUTORESEARCH_RESULT_PATH` (inside the scratch directory; copied to
`run_dir/<exp_id>.result.json`), checked against the harness: prepare.py's hash before and after (the copy that
ran and the original), the time budget and seed the harness set, and the harness's own clock. torch.compile's
caches point into the scratch directory too: a private copy of the shared compile cache (compile_cache.py).
"""

from __future__ import annotations

import glob
import hashlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from agents.bench import compile_cache
from agents.bench.sandbox import SandboxSpec, sandbox_env, select_sandbox, wrap
from agents.bench.scratch import Scratch, make_scratch

DEFAULT_TIME_BUDGET_S = 300.0  # prepare.py's default when AUTORESEARCH_TIME_BUDGET is unset
# Start-up (imports, data loading, torch.compile on CUDA) plus the final evaluation run outside the
# training budget; two minutes covers both on the profiles prepare.py knows.
STARTUP_AND_EVAL_ALLOWANCE_S = 120.0
KILL_GRACE_S = 3.0  # between SIGTERM and SIGKILL
LOG_TAIL_LINES = 50
_KEPT_LINES = 1000  # enough for a long traceback and the summary block

HARNESS_VARIABLES = ("AUTORESEARCH_TIME_BUDGET", "AUTORESEARCH_SEED", "AUTORESEARCH_RESULT_PATH")
COMPILE_CACHE_VARIABLES = ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")  # set by the runner to the run's own
SUMMARY_FIELDS = {
    "val_bpb": float,
    "training_seconds": float,
    "total_seconds": float,
    "peak_vram_mb": float,
    "mfu_percent": float,
    "total_tokens_M": float,
    "num_steps": int,
    "num_params_M": float,
    "depth": int,
}
STATUSES = ("ok", "crash", "timeout", "killed")
CLOCK_SLACK_S = 1.0  # rounding and process start-up between the harness's clock and train.py's

# --- secrets -------------------------------------------------------------------------------------

_SECRET_SUBSTRINGS = ("SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "APIKEY", "API_KEY", "PRIVATE_KEY", "ACCESS_KEY")
_SECRET_WORDS = {"TOKEN", "TOKENS", "AUTH", "PAT", "KEY"}  # whole `_`-separated words: keeps TOKENIZERS_PARALLELISM
_SECRET_PREFIXES = (
    "AWS_", "ANTHROPIC_", "OPENAI_", "AZURE_", "GOOGLE_", "GEMINI_", "COHERE_", "MISTRAL_", "GROQ_",
    "DEEPSEEK_", "TOGETHER_", "XAI_", "OPENROUTER_", "FIREWORKS_", "REPLICATE_",
)
_SECRET_NAMES = {"SSH_AUTH_SOCK", "GIT_ASKPASS", "SSH_ASKPASS", "NETRC"}
# Values shaped like well-known keys, whatever the variable is called.
_SECRET_VALUE = re.compile(r"^(sk-|sk_|ghp_|gho_|ghs_|github_pat_|glpat-|hf_|xox[abp]-|AKIA[0-9A-Z]{12})")
_URL_WITH_PASSWORD = re.compile(r"://[^/\s:@]+:[^/\s@]+@")


def looks_secret(name: str, value: str = "") -> bool:
    """True when an environment variable's name or value looks like a credential."""
    upper = name.upper()
    if upper in _SECRET_NAMES or upper.startswith(_SECRET_PREFIXES):
        return True
    if any(s in upper for s in _SECRET_SUBSTRINGS):
        return True
    if _SECRET_WORDS & set(upper.split("_")):
        return True
    return bool(_SECRET_VALUE.match(value) or _URL_WITH_PASSWORD.search(value))


def scrubbed_env(base: Mapping[str, str]) -> dict[str, str]:
    """`base` without anything that looks like a secret and without the harness's own variables.

    PATH, HOME, LANG, CUDA_VISIBLE_DEVICES and the like pass through; so does AUTORESEARCH_CACHE.
    """
    return {k: v for k, v in base.items() if k not in HARNESS_VARIABLES and not looks_secret(k, v)}


def hard_timeout_for(time_budget: float | None) -> float:
    """Default hard limit: twice the training budget plus the start-up and evaluation allowance.

    `2 * budget + 120 s`, e.g. 720 s for upstream's 300 s budget (upstream kills runs past 10 minutes).
    """
    budget = DEFAULT_TIME_BUDGET_S if time_budget is None else float(time_budget)
    return 2.0 * budget + STARTUP_AND_EVAL_ALLOWANCE_S


# --- result --------------------------------------------------------------------------------------


@dataclass
class RunResult:
    status: str  # one of STATUSES
    val_bpb: float | None  # from the evaluator's record, only when status == "ok"
    record: dict | None  # the evaluator's JSON record as written
    summary: dict  # parsed from the printed summary block (informational)
    returncode: int | None
    wall_seconds: float
    log_path: Path
    log_tail: str  # last LOG_TAIL_LINES lines
    error: str = ""  # one-line reason when status != "ok"
    warnings: list[str] = field(default_factory=list)
    exp_id: str = ""
    result_path: Path | None = None
    sandbox: str = "none"  # the sandbox the run went through: bwrap | landlock | none
    compile_cache: str = ""  # what the run's compile cache was: "private, cold" or "shared: N file(s) copied in..."

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def eval_seconds(self) -> float | None:
        """The evaluation's own duration, from the evaluator's record."""
        value = (self.record or {}).get("eval_seconds")
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None

    @property
    def train_wall_seconds(self) -> float:
        """The harness's wall time of the run less the evaluation: start-up plus training, as the harness saw it."""
        return max(0.0, self.wall_seconds - (self.eval_seconds or 0.0))


def parse_summary(lines: list[str]) -> tuple[dict, dict[str, str]]:
    """Fields of the last `---` summary block: (typed values, the raw printed strings)."""
    start = max((i for i, line in enumerate(lines) if line.strip() == "---"), default=None)
    values: dict = {}
    raw: dict[str, str] = {}
    if start is None:
        return values, raw
    for line in lines[start + 1 :]:
        key, sep, text = line.partition(":")
        key, text = key.strip(), text.strip()
        if not sep or key not in SUMMARY_FIELDS:
            continue
        try:
            number = float(text)
            values[key] = int(number) if SUMMARY_FIELDS[key] is int else number
            raw[key] = text
        except ValueError:
            continue
    return values, raw


def crash_reason(lines: list[str]) -> str:
    """One line saying why train.py failed, read from the end of its output."""
    text = "\n".join(lines)
    if re.search(r"out of memory|OutOfMemoryError|\bMemoryError\b", text, re.IGNORECASE):
        return "out of memory"
    if any(line.strip() == "FAIL" for line in lines):
        return "FAIL"
    tb = max((i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last)")), default=None)
    if tb is not None:
        # the exception line is the last unindented line of the last traceback
        candidates = [line for line in lines[tb + 1 :] if line.strip() and not line[0].isspace()]
        if candidates:
            return candidates[-1].strip()[:300]
    return ""


def _is_printed_equal(printed: str, value: float) -> bool:
    """Does `printed` (as train.py wrote it) round-trip to `value` at its own precision?"""
    decimals = len(printed.split(".")[1]) if "." in printed and "e" not in printed.lower() else 6
    return abs(float(printed) - value) <= 0.5 * 10.0**-decimals + 1e-12


def _same_number(got: object, wanted: float) -> bool:
    try:
        return math.isclose(float(got), float(wanted), rel_tol=1e-9, abs_tol=1e-9)
    except (TypeError, ValueError):
        return False


def _sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


# --- running -------------------------------------------------------------------------------------


class TrainingJob:
    """A running `python train.py`; poll it while the crew prepares the next experiment."""

    def __init__(
        self,
        workdir: Path,
        run_dir: Path,
        exp_id: str,
        *,
        env: dict[str, str],
        hard_timeout_s: float,
        argv: list[str],
        scratch: Scratch,
        sandbox: str,
        expected: dict,
        keep_scratch: bool,
        on_output: Callable[[str], None] | None,
        compiled: compile_cache.Provisioned | None = None,
    ):
        self.workdir = workdir
        self.exp_id = exp_id
        self.log_path = run_dir / f"{exp_id}.log"
        self.result_path = (run_dir / f"{exp_id}.result.json").resolve()
        self.scratch, self.sandbox, self.expected, self.keep_scratch = scratch, sandbox, expected, keep_scratch
        self.hard_timeout_s = hard_timeout_s
        self.compiled = compiled
        self._on_output = on_output
        self._lines: deque[str] = deque(maxlen=_KEPT_LINES)
        self._warnings: list[str] = []
        self._timed_out = False
        self._kill_requested = False
        self._result: RunResult | None = None
        self._prepare_sha_at_start = _sha256(workdir / "prepare.py")
        self._gpu_visible = gpu_visible(env)
        self._log = open(self.log_path, "w", encoding="utf-8", buffering=1)
        self._started = time.monotonic()
        self._ended: float | None = None
        try:
            self._proc = subprocess.Popen(
                argv,
                cwd=scratch.dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                encoding="utf-8",
                errors="replace",
                start_new_session=True,  # own process group: a kill reaches dataloader workers too
            )
        except OSError:
            self._log.close()
            if not keep_scratch:
                scratch.remove()
            raise
        self._reader = threading.Thread(target=self._read_output, name=f"train-log-{exp_id}", daemon=True)
        self._watchdog = threading.Thread(target=self._supervise, name=f"train-watchdog-{exp_id}", daemon=True)
        self._reader.start()
        self._watchdog.start()

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def elapsed(self) -> float:
        """Seconds since start, frozen once the process has exited."""
        return (self._ended or time.monotonic()) - self._started

    @property
    def running(self) -> bool:
        return self._watchdog.is_alive() or self._reader.is_alive()

    def poll(self) -> RunResult | None:
        """The result once the run is over, else None (never blocks)."""
        if self.running:
            return None
        return self.wait()

    def wait(self) -> RunResult:
        """Block until the run is over (the hard limit bounds this) and return its result."""
        self._watchdog.join()
        self._reader.join()
        if self._result is None:
            self._log.close()
            try:
                self._result = self._build_result()
                self._settle_compile_cache(self._result)
            finally:
                if not self.keep_scratch:
                    self.scratch.remove()  # checkpoints and whatever else the run left go with it
        return self._result

    def kill(self, now: bool = False) -> None:
        """Stop the run and all its children; the result gets status "killed". `now`: SIGKILL, no grace period."""
        if self._proc.poll() is None:
            self._kill_requested = True
            if now:
                self._signal_group(signal.SIGKILL)
            else:
                self._terminate_group()

    def _settle_compile_cache(self, result: RunResult) -> None:
        """Publish a trusted run's new compiled code (before its scratch goes) and say what the run had."""
        if self.compiled is None:
            return
        if self.compiled.warning:
            result.warnings.append(f"compile cache: {self.compiled.warning}")
        published = None
        if self.compiled.publish and result.ok:
            try:
                published = compile_cache.publish(self.compiled)
            except OSError as exc:  # a full disk must not lose the run's result
                result.warnings.append(f"compile cache: publishing failed ({exc})")
        result.compile_cache = self.compiled.describe(published)

    # threads

    def _read_output(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            self._log.write(line)
            text = line.rstrip("\n")
            self._lines.append(text)
            if self._on_output is not None:
                try:
                    self._on_output(text)
                except Exception as exc:  # a broken display must not stop the log
                    self._warnings.append(f"on_output callback failed, streaming stopped: {exc!r}")
                    self._on_output = None
        self._proc.stdout.close()

    def _supervise(self) -> None:
        try:
            self._proc.wait(timeout=self.hard_timeout_s)
        except subprocess.TimeoutExpired:
            self._timed_out = True
            self._terminate_group()
        self._ended = time.monotonic()
        # children that outlive train.py would keep the log pipe open and hold the GPU
        self._signal_group(signal.SIGKILL)

    def _terminate_group(self) -> None:
        self._signal_group(signal.SIGTERM)
        try:
            self._proc.wait(timeout=KILL_GRACE_S)
        except subprocess.TimeoutExpired:
            self._signal_group(signal.SIGKILL)
            self._proc.wait()

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self._proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    # result

    def _build_result(self) -> RunResult:
        lines = list(self._lines)
        summary, printed = parse_summary(lines)
        rc = self._proc.returncode
        if self.sandbox == "bwrap" and rc is not None and rc > 128 and (rc - 128) in signal.valid_signals():
            rc = -(rc - 128)  # bwrap reports a child killed by signal N as exit status 128 + N
        record, record_error = self._read_record()
        result = RunResult(
            status="ok",
            val_bpb=None,
            record=record,
            summary=summary,
            returncode=rc,
            wall_seconds=round(self.elapsed, 3),
            log_path=self.log_path,
            log_tail="\n".join(lines[-LOG_TAIL_LINES:]),
            warnings=list(self._warnings),
            exp_id=self.exp_id,
            result_path=self.result_path,
            sandbox=self.sandbox,
        )
        result.status, result.error = self._judge(rc, lines, record, record_error)
        if result.status == "ok":
            result.status, result.error = self._check_against_harness(record, result)
        result.warnings += self._clock_warnings(summary, result)
        if result.status == "ok":
            assert record is not None
            result.val_bpb = float(record["val_bpb"])
            if "val_bpb" in printed and not _is_printed_equal(printed["val_bpb"], result.val_bpb):
                result.warnings.append(
                    f"train.py printed val_bpb {printed['val_bpb']} but the evaluator recorded "
                    f"{result.val_bpb:.6f}: the printed number is not the score"
                )
        elif record is not None and record.get("prepare_sha256") != self._prepare_sha_at_start:
            result.warnings.append(
                f"record prepare_sha256 {str(record.get('prepare_sha256'))[:12]} != "
                f"prepare.py at start {str(self._prepare_sha_at_start)[:12]}"
            )
        return result

    def _judge(self, rc: int | None, lines: list[str], record: dict | None, record_error: str) -> tuple[str, str]:
        if self._timed_out:
            return "timeout", f"hard timeout after {self.hard_timeout_s:g} s"
        if self._kill_requested:
            return "killed", "killed by request"
        if rc is not None and rc < 0:
            name = signal.Signals(-rc).name if -rc in signal.valid_signals() else "?"
            return "killed", f"killed by signal {-rc} ({name})"
        if rc != 0:
            return "crash", crash_reason(lines) or f"exit code {rc}"
        if record is None:
            return "crash", record_error
        if self._prepare_sha_at_start is None:
            return "crash", "no prepare.py in the working directory: the record cannot be verified"
        shas_now = {_sha256(self.workdir / "prepare.py"), _sha256(self.scratch.prepare_py)}
        if record.get("prepare_sha256") != self._prepare_sha_at_start or shas_now != {self._prepare_sha_at_start}:
            return "crash", "prepare.py changed during the run"
        value = record.get("val_bpb")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "crash", f"result record has no numeric val_bpb (got {value!r})"
        if not math.isfinite(value):
            return "crash", "NaN"
        return "ok", ""

    def _check_against_harness(self, record: dict, result: RunResult) -> tuple[str, str]:
        """The record must describe the run the harness started: its budget and seed, within its wall time."""
        for key, wanted in self.expected.items():
            got = record.get(key)
            if got is not None and not _same_number(got, wanted):
                return "crash", (f"the evaluator ran with {key} {got} but the harness set {wanted}: the run changed "
                                 "its own settings")
        device = record.get("device")
        if self._gpu_visible and isinstance(device, str) and device.split(":")[0] == "cpu":
            # inside the sandbox CUDA was missing: the run trained the CPU profile, which no GPU result compares to
            return "crash", ("train.py ran on the CPU although this machine has a GPU the run may use (in a sandbox, "
                             "a GPU device node such as /dev/nvidia-uvm may be missing until CUDA is first used "
                             "outside it: see docs/GPU.md)")
        eval_seconds = result.eval_seconds
        if eval_seconds is not None and eval_seconds > result.wall_seconds + CLOCK_SLACK_S:
            return "crash", (f"the record's eval_seconds ({eval_seconds:g} s) exceed the run's wall time "
                             f"({result.wall_seconds:g} s by the harness's clock): not this run's record")
        return "ok", ""

    def _clock_warnings(self, summary: dict, result: RunResult) -> list[str]:
        """train.py's own training clock, cross-checked against the harness's."""
        printed = summary.get("training_seconds")
        if isinstance(printed, int | float) and printed > result.train_wall_seconds + CLOCK_SLACK_S:
            return [f"train.py reports {printed:g} training seconds, but the run took {result.train_wall_seconds:g} "
                    "s outside evaluation by the harness's clock"]
        return []

    def _read_record(self) -> tuple[dict | None, str]:
        produced = self.scratch.result_path
        if produced.is_file():
            try:
                shutil.copyfile(produced, self.result_path)  # kept with the log after the scratch is removed
            except OSError as exc:
                return None, f"result record could not be copied: {exc}"
        if not self.result_path.exists():
            return None, "no result record"
        try:
            record = json.loads(self.result_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            return None, f"result record unreadable: {exc}"
        if not isinstance(record, dict):
            return None, "result record is not a JSON object"
        return record, ""


def gpu_visible(env: Mapping[str, str]) -> bool:
    """This machine has an NVIDIA GPU that a run with this environment may use (its device nodes exist and
    CUDA_VISIBLE_DEVICES does not hide every device)."""
    if env.get("CUDA_VISIBLE_DEVICES", "all").strip() in ("", "-1"):
        return False
    return os.path.exists("/dev/nvidiactl") and bool(glob.glob("/dev/nvidia[0-9]*"))


_EXP_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def start_training(
    workdir: Path,
    run_dir: Path,
    exp_id: str,
    *,
    time_budget: float | None,
    seed: int,
    hard_timeout_s: float | None = None,
    python: str = sys.executable,
    extra_env: dict | None = None,
    on_output: Callable[[str], None] | None = None,
    sandbox: str = "auto",
    scratch_root: Path | None = None,
    keep_scratch: bool = False,
    compile_cache_mode: str = "use",
    compile_cache_dir: Path | None = None,
) -> TrainingJob:
    """Start `python train.py` (workdir's train.py and prepare.py, copied to a scratch directory) and return at
    once; see `run_training`. `on_output` is called from a background thread, once per line of output.

    Raises `SandboxUnavailable` when an explicitly requested sandbox cannot start here.
    """
    compile_cache.check_mode(compile_cache_mode)
    workdir, run_dir = Path(workdir), Path(run_dir)
    if not (workdir / "train.py").is_file():
        raise FileNotFoundError(f"no train.py in {workdir}")
    if not _EXP_ID.match(exp_id):
        raise ValueError(f"experiment id {exp_id!r} is not usable as a file name (letters, digits, . _ -)")
    for key, value in (extra_env or {}).items():
        if key in HARNESS_VARIABLES or key in COMPILE_CACHE_VARIABLES:
            raise ValueError(f"extra_env may not set {key}: the runner owns it")
        if looks_secret(key, str(value)):
            raise ValueError(f"extra_env variable {key} looks like a secret; train.py must not see secrets")
    selection = select_sandbox(sandbox, python)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / f"{exp_id}.result.json").unlink(missing_ok=True)  # a stale record must never be read as this run's

    env = scrubbed_env(os.environ)
    env.update({k: str(v) for k, v in (extra_env or {}).items()})
    # HOME is private inside: the data cache is named explicitly, resolved with the harness's HOME
    cache = Path(env.get("AUTORESEARCH_CACHE") or "~/.cache/autoresearch").expanduser().resolve()
    env["AUTORESEARCH_CACHE"] = str(cache)
    scratch = make_scratch(workdir, exp_id, scratch_root)
    spec = SandboxSpec(scratch=scratch.dir, read_only_files=[p for p in (scratch.train_py, scratch.prepare_py)
                                                             if p.exists()],
                       read_only_dirs=[cache] if cache.is_dir() else [], home=scratch.home, tmp=scratch.tmp)
    env.update(sandbox_env(selection.name, spec))
    shared = Path(compile_cache_dir) if compile_cache_dir else compile_cache.default_shared_dir(cache)
    compiled = compile_cache.provision(scratch.compile_cache, compile_cache_mode, shared, selection.name)
    env.update(compiled.env())
    expected: dict = {"seed": int(seed)}
    if time_budget is not None:
        env["AUTORESEARCH_TIME_BUDGET"] = f"{float(time_budget):g}"
        expected["time_budget"] = float(time_budget)
    env["AUTORESEARCH_SEED"] = str(int(seed))
    env["AUTORESEARCH_RESULT_PATH"] = str(scratch.result_path)
    env["PYTHONUNBUFFERED"] = "1"
    limit = hard_timeout_for(time_budget) if hard_timeout_s is None else float(hard_timeout_s)
    argv = wrap(selection.name, spec, [python, "train.py"], python)
    return TrainingJob(workdir, run_dir, exp_id, env=env, hard_timeout_s=limit, argv=argv, scratch=scratch,
                       sandbox=selection.name, expected=expected, keep_scratch=keep_scratch, on_output=on_output,
                       compiled=compiled)


def run_training(
    workdir: Path,
    run_dir: Path,
    exp_id: str,
    *,
    time_budget: float | None,
    seed: int,
    hard_timeout_s: float | None = None,
    python: str = sys.executable,
    extra_env: dict | None = None,
    on_output: Callable[[str], None] | None = None,
    sandbox: str = "auto",
    scratch_root: Path | None = None,
    keep_scratch: bool = False,
    compile_cache_mode: str = "use",
    compile_cache_dir: Path | None = None,
) -> RunResult:
    """Run workdir's `train.py` to completion (or the hard limit) inside `sandbox` and return its result.

    `time_budget` None leaves prepare.py's default (300 s). `hard_timeout_s` None means
    `hard_timeout_for(time_budget)`. `sandbox`: auto | bwrap | landlock | none (sandbox/); the result names the
    one used. The run happens in a fresh scratch directory under `scratch_root` (default: the system temp
    directory), removed afterwards unless `keep_scratch`. The log goes to `run_dir/<exp_id>.log`, the evaluator's
    record to `run_dir/<exp_id>.result.json`; nothing else is written to `run_dir` or `workdir`.

    `compile_cache_mode` (compile_cache.py): "use" starts torch.compile from a private copy of the shared compile
    cache (`compile_cache_dir`, default `<data cache>/compile-cache`) when the run is sandboxed; "publish" also adds
    what the run compiled to the shared cache once it ended ok: only for the starting train.py; "off" compiles cold.
    """
    job = start_training(
        workdir,
        run_dir,
        exp_id,
        time_budget=time_budget,
        seed=seed,
        hard_timeout_s=hard_timeout_s,
        python=python,
        extra_env=extra_env,
        on_output=on_output,
        sandbox=sandbox,
        scratch_root=scratch_root,
        keep_scratch=keep_scratch,
        compile_cache_mode=compile_cache_mode,
        compile_cache_dir=compile_cache_dir,
    )
    return job.wait()
