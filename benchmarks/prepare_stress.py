"""Stress: many preparing threads against the scripted LLM server, with faults, over many candidates, repeated.

What the crew's preparing threads share (the crew's CrewAI objects and SDK clients, the usage ledger, the memory
and its gate, the guard, the fingerprint's parser) is hit by `--threads` preparations at once, each going
idea → gate → edit → guard → review through the real `openai` SDK (or `anthropic`) on 127.0.0.1, while the
server answers at random with 429s (retry-after), 500s, dropped connections, garbage, placeholder ideas, broken
edits, rejections and slow replies. The outcomes are recorded as the coordinator records them (results, memory,
feedback), in the main thread, as they come back.

A *crash* is an exception that escapes a preparation or the recording: the run would end. A preparation that
failed in the harness itself (an `error` outcome) is that candidate's failure and the run goes on; it is
counted and shown, with its exception, but it is not a crash. Both must be zero; the figures show the rest.

    python benchmarks/prepare_stress.py [--threads 16] [--candidates 200] [--repeats 5] [--fault-rate 0.25]
                                        [--protocol openai|anthropic] [--seed 0]

The last line reads `prepare_stress: <crashes> crashes, <errors> harness errors in <n> candidates x <repeats>`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

for _name, _value in {"CREWAI_DISABLE_TELEMETRY": "true", "CREWAI_TRACING_ENABLED": "false",
                      "CREWAI_DISABLE_VERSION_CHECK": "true", "OTEL_SDK_DISABLED": "true"}.items():
    os.environ.setdefault(_name, _value)

from tests.llm_server import ParsedRequest, Reply, ScriptedLLMServer  # noqa: E402

# knobs of the real train.py the scripted hypothesis moves, and the values it picks from
KNOBS = {"MATRIX_LR": (0.01, 0.2), "EMBEDDING_LR": (0.1, 1.5), "UNEMBEDDING_LR": (0.001, 0.05),
         "SCALAR_LR": (0.1, 1.0), "WARMDOWN_RATIO": (0.1, 0.9), "MUON_MOMENTUM": (0.8, 0.99),
         "WEIGHT_DECAY": (0.0, 0.2), "FINAL_LR_FRAC": (0.0, 0.3)}


class FaultyCrew:
    """Answers every role over the wire; a share of the replies are faults of every kind a server has."""

    def __init__(self, seed: int, fault_rate: float):
        self.rng, self.fault_rate, self.lock = random.Random(seed), fault_rate, threading.Lock()
        self.faults: Counter = Counter()

    def __call__(self, request: ParsedRequest) -> Reply:
        with self.lock:
            roll, pick = self.rng.random(), self.rng.random()
            knob = self.rng.choice(sorted(KNOBS))
            low, high = KNOBS[knob]
            value = round(self.rng.uniform(low, high), 4)
        if roll < self.fault_rate:
            kind = ("429", "500", "drop", "garbage", "slow", "placeholder", "broken-edit", "reject")[int(pick * 8)]
            with self.lock:
                self.faults[kind] += 1
            if kind == "429":
                return Reply.error(429, retry_after=0.05)
            if kind == "500":
                return Reply.error(500)
            if kind == "drop":
                return Reply.dropped()
            if kind == "garbage":
                return Reply.garbage()
            if kind == "slow":
                return self._answer(request, knob, value).after(0.5)
            if kind == "placeholder" and request.schema_name == "Idea":
                return Reply.json({"title": "Explanation", "rationale": "string", "expected_effect": "…",
                                   "category": "other"})
            if kind == "broken-edit" and request.schema_name == "CodeEdit":
                return Reply.json({"path": "train.py", "blocks": [{"search": "", "replace": "x"}], "summary": ""})
            if kind == "reject" and request.schema_name == "Review":
                return Reply.json({"verdict": "reject", "reasons": ["not convinced"]})
        return self._answer(request, knob, value)

    @staticmethod
    def _answer(request: ParsedRequest, knob: str, value: float) -> Reply:
        if request.schema_name == "Idea":
            return Reply.json({"title": f"{knob} -> {value}", "rationale": f"move {knob} to {value} for this budget",
                               "expected_effect": "a lower val_bpb", "category": "learning_rate"})
        if request.schema_name == "CodeEdit":
            title = re.search(r"Title: (\w+) -> (\S+)", request.text)
            if title is None:
                return Reply.json({"path": "train.py", "blocks": [{"search": "", "replace": "x"}], "summary": ""})
            name, new = title.groups()
            line = re.search(rf"^{name} = .*$", request.text, re.MULTILINE)
            if line is None:
                return Reply.json({"path": "train.py", "blocks": [{"search": name, "replace": name}], "summary": ""})
            old = line.group(0)
            code = old.split("#")[0].rstrip()
            replaced = (re.sub(r"else \S+$", f"else {new}", code) if " if CUDA else " in code
                        else f"{name} = {new}")
            return Reply.json({"path": "train.py", "blocks": [{"search": code, "replace": replaced}],
                               "summary": f"{name} -> {new}"})
        if request.schema_name == "Review":
            return Reply.json({"verdict": "approve", "reasons": ["small and clear"]})
        if request.schema_name == "JudgeAnswer":
            return Reply.json({"same_as": None, "reason": "another value"})
        return Reply.json({"explanation": "moved as expected", "lesson": "noted", "rerun": False})


def make_repo(root: Path, server: ScriptedLLMServer, protocol: str, threads: int) -> Path:
    """A project with the real train.py and every role on the scripted server."""
    from tests.toyrepo import make_toy_repo

    role = {"model": f"{protocol}/stress-model", "max_retries": 3, "timeout_s": 10}
    if protocol == "openai":
        role["base_url"] = server.base_url_openai
    config = make_toy_repo(root, preset="full", roles={r: role for r in ("hypothesis", "coder", "reviewer", "analyst")},
                           crew_extra={"degrade_after": 1000, "max_concurrent_calls": threads})
    shutil.copy(ROOT / "train.py", root / "train.py")
    subprocess.run(["git", "-c", "user.name=s", "-c", "user.email=s@l", "commit", "-qam", "real train.py"], cwd=root,
                   check=True)
    return config


def stress_once(work: Path, *, threads: int, candidates: int, fault_rate: float, seed: int,
                protocol: str = "openai") -> dict:
    """One run of `candidates` preparations, `threads` at once; what they came to, and any crash."""
    from agents.assemble import build_settings
    from agents.crew.candidates import Feedback, Workbench, prepare_candidate
    from agents.crew.supply import CandidateSupply
    from agents.record.journal import Journal
    from agents.record.runbook import RunBook

    crew_server = FaultyCrew(seed, fault_rate)
    crashes: list[str] = []
    outcomes: Counter = Counter()
    errors: list[str] = []
    with ScriptedLLMServer(crew_server, lifetime_s=3600, max_requests=100_000) as server:
        if protocol == "anthropic":
            os.environ["ANTHROPIC_API_KEY"] = "sk-ant-stress"
            os.environ["ANTHROPIC_BASE_URL"] = server.base_url_anthropic
        os.environ.setdefault("OPENAI_API_KEY", "sk-stress")
        repo = work / f"repo-{seed}"
        config = make_repo(repo, server, protocol, threads)
        settings = build_settings(repo, config, "stress")
        run_dir = repo / "runs" / "stress"
        journal = Journal(run_dir)
        book = RunBook(run_dir, "stress", "stress", settings.crew, settings.ledger, settings.memory, lambda *a, **k: None)
        base = (repo / "train.py").read_text()
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()

        class Run:  # candidates.RunContext
            def new_exp_id(self) -> str:
                return book.reserve_id(journal)

            def history(self):
                return book.snapshot()

            def best_summary(self) -> str:
                return "best val_bpb 1.000000 at commit " + head[:7]

            def usage_scope(self, exp_id: str):
                return settings.ledger.experiment(exp_id)

        bench = Workbench(crew=settings.crew, memory=settings.memory, run=Run(), program=settings.program,
                          device="cpu", novelty_threshold=0.3, coder_retries=1, review_rounds=1, guard_rules=None,
                          feedback=Feedback())

        def prepare():
            return prepare_candidate(bench, "stress", "stress", head, base)

        supply = CandidateSupply(prepare, max_parallel=threads)
        started = time.monotonic()
        done = 0
        try:
            while done < candidates:
                supply.top_up(threads, limit=candidates - supply.started)
                for p in supply.outcomes():
                    done += 1
                    try:  # recorded as the coordinator records it, in this thread
                        if p.candidate is not None:
                            outcomes["prepared"] += 1
                        elif p.refusal is not None:
                            outcomes[f"refused ({p.refusal.record.status}: {p.refusal.role})"] += 1
                            book.refuse(p.refusal.record)
                            bench.feedback.add(p.refusal.feedback)
                        elif p.error:
                            outcomes["harness error"] += 1
                            errors.append(f"{p.error} (at {_where(p.trace)})")
                            book.refuse(p.failure_record("stress", "stress"))
                        else:
                            outcomes["no idea (the proposal failed)"] += 1
                    except Exception:
                        crashes.append(traceback.format_exc())
                supply.wait_for_one(0.2)
        except Exception:
            crashes.append(traceback.format_exc())
        finally:
            supply.close(wait=True)
            error_records = sum(r.status == "error" and r.decision_reason.startswith("preparing this candidate failed: ")
                                for r in book.snapshot())
            settings.memory.close()
        seconds = time.monotonic() - started
        requests = len(server.requests)
    return {"seed": seed, "threads": threads, "candidates": done, "seconds": round(seconds, 1), "requests": requests,
            "faults_injected": dict(crew_server.faults), "outcomes": dict(outcomes), "harness_errors": errors,
            "error_records": error_records,
            "crashes": crashes, "faults_survived": settings.ledger.faults.by_role()}


def _where(trace: str) -> str:
    """The project's innermost frame in a traceback: where the failure came from."""
    frames = re.findall(r'File "([^"]+)", line (\d+), in (\w+)', trace)
    ours = [(f, n, fn) for f, n, fn in frames if "/site-packages/" not in f and "/lib/python3" not in f]
    if not ours:
        return "?"
    file, line, function = ours[-1]
    return f"{Path(file).relative_to(ROOT) if file.startswith(str(ROOT)) else file}:{line} {function}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--candidates", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--fault-rate", type=float, default=0.25)
    parser.add_argument("--protocol", choices=("openai", "anthropic"), default="openai")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    load = os.getloadavg()[0]
    print(f"load average at start: {load:.1f} on {os.cpu_count()} cores")
    runs = []
    with tempfile.TemporaryDirectory(prefix="prepare-stress-") as tmp:
        for k in range(args.repeats):
            result = stress_once(Path(tmp), threads=args.threads, candidates=args.candidates,
                                 fault_rate=args.fault_rate, seed=args.seed + k, protocol=args.protocol)
            runs.append(result)
            shown = {k: v for k, v in result.items() if k not in ("crashes", "harness_errors")}
            print(json.dumps(shown))
            for text in result["harness_errors"][:3]:
                print("  harness error:", text)
            for text in result["crashes"][:3]:
                print("  CRASH:", text)
    crashes = sum(len(r["crashes"]) for r in runs)
    errors = sum(len(r["harness_errors"]) for r in runs)
    rate = statistics.fmean(r["candidates"] / r["seconds"] for r in runs)
    print(f"candidates per second: {rate:.2f} (mean of {len(runs)} runs); load average now {os.getloadavg()[0]:.1f}")
    print(f"prepare_stress: {crashes} crashes, {errors} harness errors in {args.candidates} candidates x "
          f"{args.repeats} runs, {args.threads} threads, fault rate {args.fault_rate}")


if __name__ == "__main__":
    main()
