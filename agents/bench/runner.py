"""Run `python train.py` in a subprocess and turn what happened into a `RunResult`.

The child gets a scrubbed environment (no API keys or other secrets), its own process group (so a hard
kill takes its children too) and a hard time limit. Everything it prints goes to `run_dir/<exp_id>.log`.
The score comes only from the evaluator's JSON record that `prepare.evaluate_bpb` writes to
`AUTORESEARCH_RESULT_PATH`; a number printed by train.py is informational and never trusted.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_TIME_BUDGET_S = 300.0  # prepare.py's default when AUTORESEARCH_TIME_BUDGET is unset
# Start-up (imports, data loading, torch.compile on CUDA) plus the final evaluation run outside the
# training budget; two minutes covers both on the profiles prepare.py knows.
STARTUP_AND_EVAL_ALLOWANCE_S = 120.0
KILL_GRACE_S = 3.0  # between SIGTERM and SIGKILL
LOG_TAIL_LINES = 50
_KEPT_LINES = 1000  # enough for a long traceback and the summary block

HARNESS_VARIABLES = ("AUTORESEARCH_TIME_BUDGET", "AUTORESEARCH_SEED", "AUTORESEARCH_RESULT_PATH")
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

    @property
    def ok(self) -> bool:
        return self.status == "ok"


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
        python: str,
        on_output: Callable[[str], None] | None,
    ):
        self.workdir = workdir
        self.exp_id = exp_id
        self.log_path = run_dir / f"{exp_id}.log"
        self.result_path = Path(env["AUTORESEARCH_RESULT_PATH"])
        self.hard_timeout_s = hard_timeout_s
        self._on_output = on_output
        self._lines: deque[str] = deque(maxlen=_KEPT_LINES)
        self._warnings: list[str] = []
        self._timed_out = False
        self._kill_requested = False
        self._result: RunResult | None = None
        self._prepare_sha_at_start = _sha256(workdir / "prepare.py")
        self._log = open(self.log_path, "w", encoding="utf-8", buffering=1)
        self._started = time.monotonic()
        self._ended: float | None = None
        try:
            self._proc = subprocess.Popen(
                [python, "train.py"],
                cwd=workdir,
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
            self._result = self._build_result()
        return self._result

    def kill(self) -> None:
        """Stop the run and all its children now; the result gets status "killed"."""
        if self._proc.poll() is None:
            self._kill_requested = True
            self._terminate_group()

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
        )
        result.status, result.error = self._judge(rc, lines, record, record_error)
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
        sha_now = _sha256(self.workdir / "prepare.py")
        if record.get("prepare_sha256") != self._prepare_sha_at_start or sha_now != self._prepare_sha_at_start:
            return "crash", "prepare.py changed during the run"
        value = record.get("val_bpb")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "crash", f"result record has no numeric val_bpb (got {value!r})"
        if not math.isfinite(value):
            return "crash", "NaN"
        return "ok", ""

    def _read_record(self) -> tuple[dict | None, str]:
        if not self.result_path.exists():
            return None, "no result record"
        try:
            record = json.loads(self.result_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            return None, f"result record unreadable: {exc}"
        if not isinstance(record, dict):
            return None, "result record is not a JSON object"
        return record, ""


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
) -> TrainingJob:
    """Start `python train.py` in `workdir` and return at once; see `run_training`.

    `on_output` is called from a background thread, once per line of output.
    """
    workdir, run_dir = Path(workdir), Path(run_dir)
    if not (workdir / "train.py").is_file():
        raise FileNotFoundError(f"no train.py in {workdir}")
    if not _EXP_ID.match(exp_id):
        raise ValueError(f"experiment id {exp_id!r} is not usable as a file name (letters, digits, . _ -)")
    for key, value in (extra_env or {}).items():
        if key in HARNESS_VARIABLES:
            raise ValueError(f"extra_env may not set {key}: the runner owns it")
        if looks_secret(key, str(value)):
            raise ValueError(f"extra_env variable {key} looks like a secret; train.py must not see secrets")
    run_dir.mkdir(parents=True, exist_ok=True)
    result_path = (run_dir / f"{exp_id}.result.json").resolve()
    result_path.unlink(missing_ok=True)  # a stale record must never be read as this run's

    env = scrubbed_env(os.environ)
    env.update({k: str(v) for k, v in (extra_env or {}).items()})
    if time_budget is not None:
        env["AUTORESEARCH_TIME_BUDGET"] = f"{float(time_budget):g}"
    env["AUTORESEARCH_SEED"] = str(int(seed))
    env["AUTORESEARCH_RESULT_PATH"] = str(result_path)
    env["PYTHONUNBUFFERED"] = "1"
    limit = hard_timeout_for(time_budget) if hard_timeout_s is None else float(hard_timeout_s)
    return TrainingJob(workdir, run_dir, exp_id, env=env, hard_timeout_s=limit, python=python, on_output=on_output)


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
) -> RunResult:
    """Run `python train.py` in `workdir` to completion (or the hard limit) and return its result.

    `time_budget` None leaves prepare.py's default (300 s). `hard_timeout_s` None means
    `hard_timeout_for(time_budget)`. The log goes to `run_dir/<exp_id>.log`, the evaluator's record to
    `run_dir/<exp_id>.result.json`.
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
    )
    return job.wait()
