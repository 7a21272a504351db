"""Decision quality of the embedded default: does what the offline crew keeps hold up on fresh seeds?

A keep is a claim. This benchmark runs the offline crew several times (each crew in a fresh project made from
this repository's train.py, prepare.py, program.md and crew.yaml, with its own loop seed), then re-runs every
kept change with fresh seeds against its base (the start, or the keep before it) run with the same fresh seeds:

    python benchmarks/decision_quality.py [--crews 5] [--experiments 12] [--budget 20] [--seeds 3]
                                          [--main-job 4] [--workdir DIR]

A keep is confirmed when the fresh runs agree with its claim, with se = σ·√(2/seeds) the standard error of the
difference of two means of `seeds` runs (σ: the pooled spread of all fresh runs of one commit):
    kept as a gain                      fresh delta < -se   (better than its base by more than one se)
    kept as simpler, within noise       fresh delta < +se   (not worse than its base by more than one se)

Printed: each crew's keeps (claimed delta, fresh delta), then the keep rate, the share of keeps confirmed, the
share of keeps that deleted code, the final gain of each crew in σ units (the start's fresh mean less its last
kept commit's: positive is better), and how often the main job (`--experiments 4 --budget 20`: the first 4 trained
experiments of a crew, which is what that command runs) ends with a confirmed keep. Last line:

    decision_quality: NN % of keeps confirmed

Sizes: the default (5 crews x 12 experiments at 20 s, 3 fresh seeds) takes about an hour on 2 quiet cores;
`--crews 2 --experiments 4 --budget 10 --seeds 2` about ten minutes. The data must be prepared
(`autoresearch prepare`); the cache in AUTORESEARCH_CACHE (or ~/.cache/autoresearch) is used as it is.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from cpu_profile import train_seeds  # noqa: E402

from agents.record.results import ExperimentRecord, ResultsStore  # noqa: E402

PROJECT_FILES = ("train.py", "prepare.py", "program.md", "crew.yaml")
TAG = "dq"
FRESH_SEED = 7001  # fresh seeds: far from the runs' own (42 and up, re-runs 1042 and up)
SECRETS = ("ANTHROPIC_API_KEY", "OPENAI_API_KEY")


@dataclass
class Keep:
    crew: int
    record: ExperimentRecord
    fresh: list[float] = field(default_factory=list)
    base_fresh: list[float] = field(default_factory=list)

    @property
    def simpler(self) -> bool:
        return self.record.kept_as == "simpler"

    @property
    def deletion(self) -> bool:
        return self.record.lines_removed > self.record.lines_added

    @property
    def fresh_delta(self) -> float | None:
        if not self.fresh or not self.base_fresh:
            return None
        return statistics.fmean(self.fresh) - statistics.fmean(self.base_fresh)


@dataclass
class Crew:
    index: int
    path: Path
    records: list[ExperimentRecord]
    keeps: list[Keep]


def make_project(path: Path, seed: int) -> None:
    """A fresh project: this repository's four files under git, the offline crew, the loop seed `seed`."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    for name in PROJECT_FILES:
        shutil.copy(REPO / name, path / name)
    config = yaml.safe_load((path / "crew.yaml").read_text())
    for role in ("hypothesis", "coder", "reviewer", "analyst"):
        config.setdefault("roles", {}).setdefault(role, {})["model"] = "offline"
    config.setdefault("loop", {})["seed"] = seed
    config["tracking"] = False
    (path / "crew.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (path / ".gitignore").write_text("runs/\n.autoresearch/\n__pycache__/\n")
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=path, check=True)
    subprocess.run(git + ["add", "."], cwd=path, check=True)
    subprocess.run(git + ["commit", "-qm", "start"], cwd=path, check=True)


def run_crew(path: Path, experiments: int, budget: float) -> list[ExperimentRecord]:
    env = {k: v for k, v in os.environ.items() if k not in SECRETS}
    command = [sys.executable, "-m", "agents.cli", "run", "--tag", TAG, "--experiments", str(experiments),
               "--budget", f"{budget:g}", "--no-live"]
    done = subprocess.run(command, cwd=path, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-5:])
        raise RuntimeError(f"the crew in {path} failed (exit {done.returncode}):\n{tail}")
    return ResultsStore(path / "runs" / TAG).load()


def train_py_at(path: Path, commit: str) -> str:
    return subprocess.run(["git", "show", f"{commit}:train.py"], cwd=path, capture_output=True, text=True,
                          check=True).stdout


def confirmed(keep: Keep, se: float) -> bool | None:
    delta = keep.fresh_delta
    if delta is None:
        return None
    return delta < se if keep.simpler else delta < -se


def pooled_sigma(groups: list[list[float]]) -> float:
    """The spread of one run around its commit's mean, pooled over every commit's fresh runs."""
    squares = sum(sum((v - statistics.fmean(g)) ** 2 for v in g) for g in groups if len(g) > 1)
    dof = sum(len(g) - 1 for g in groups if len(g) > 1)
    return math.sqrt(squares / dof) if dof else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--crews", type=int, default=5, help="offline crew runs, each with its own seed (default 5)")
    parser.add_argument("--experiments", type=int, default=12, help="trained experiments per crew (default 12)")
    parser.add_argument("--budget", type=float, default=20.0, help="training seconds per run (default 20)")
    parser.add_argument("--seeds", type=int, default=3, help="fresh seeds per kept change and its base (default 3)")
    parser.add_argument("--main-job", type=int, default=4, help="experiments of the main job (default 4)")
    parser.add_argument("--workdir", type=Path, default=None, help="where the projects go (default: a temp dir, "
                        "removed at the end)")
    args = parser.parse_args(argv)
    if args.crews < 1 or args.experiments < 1 or args.seeds < 2 or not args.budget > 0 or args.main_job < 1:
        parser.error("--crews, --experiments and --main-job must be >= 1, --seeds >= 2, --budget > 0")
    root = args.workdir or Path(tempfile.mkdtemp(prefix="autoresearch-dq-"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"decision quality: {args.crews} crews x {args.experiments} experiments at {args.budget:g} s, "
          f"{args.seeds} fresh seeds per keep; load {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; in {root}",
          flush=True)
    try:
        return _measure(args, root)
    finally:
        if args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)


def _measure(args, root: Path) -> int:
    crews = []
    for i in range(args.crews):
        path = root / f"crew{i}"
        make_project(path, seed=42 + 1000 * i)
        records = run_crew(path, args.experiments, args.budget)
        keeps = [Keep(i, r) for r in records if r.status == "keep"]
        crews.append(Crew(i, path, records, keeps))
        trained = [r for r in records if r.status in ("keep", "discard", "crash")]
        print(f"crew {i}: {len(trained)} trained, {len(keeps)} kept: "
              + (", ".join(f"{k.record.exp_id} {k.record.description} ({k.record.kept_as or 'keep'})" for k in keeps)
                 or "nothing"), flush=True)

    seeds = [FRESH_SEED + k for k in range(args.seeds)]
    fresh: dict[str, list[float]] = {}  # train.py text -> fresh val_bpb
    start_text = (REPO / "train.py").read_text()

    def fresh_runs(text: str, label: str) -> list[float]:
        if text not in fresh:
            runs = train_seeds(text, seeds, args.budget, label=label)
            fresh[text] = [r.val_bpb for r in runs if r.val_bpb is not None]
            print(f"  fresh {label}: " + ", ".join(f"{v:.4f}" for v in fresh[text]), flush=True)
        return fresh[text]

    fresh_runs(start_text, "start")
    for crew in crews:
        for keep in crew.keeps:
            keep.fresh = fresh_runs(train_py_at(crew.path, keep.record.commit), f"crew{crew.index}-{keep.record.exp_id}")
            keep.base_fresh = fresh_runs(train_py_at(crew.path, keep.record.parent_commit),
                                         f"crew{crew.index}-{keep.record.exp_id}-base")

    sigma = pooled_sigma(list(fresh.values()))
    se = sigma * math.sqrt(2 / args.seeds)
    keeps = [k for c in crews for k in c.keeps]
    verdicts = {id(k): confirmed(k, se) for k in keeps}
    print(f"\nfresh runs: {len(fresh)} commits x {args.seeds} seeds; σ (pooled) {sigma:.6f}, se of a difference "
          f"{se:.6f}")
    print(f"{'crew':>4} {'id':>5} {'kind':>8} {'claimed Δ':>10} {'fresh Δ':>10}  confirmed  change")
    for k in keeps:
        delta = k.fresh_delta
        print(f"{k.crew:>4} {k.record.exp_id:>5} {'simpler' if k.simpler else 'gain':>8} "
              f"{k.record.delta if k.record.delta is not None else float('nan'):>+10.5f} "
              f"{delta if delta is not None else float('nan'):>+10.5f}  {str(verdicts[id(k)]):>9}  "
              f"{k.record.description}")

    trained = [r for c in crews for r in c.records if r.status in ("keep", "discard", "crash")]
    done = [k for k in keeps if verdicts[id(k)] is not None]
    share = sum(bool(verdicts[id(k)]) for k in done) / len(done) if done else float("nan")
    print(f"\nkeep rate:            {len(keeps)}/{len(trained)} trained experiments "
          f"({100 * len(keeps) / max(1, len(trained)):.0f} %)")
    print(f"keeps confirmed:      {sum(bool(verdicts[id(k)]) for k in done)}/{len(done)}")
    print(f"kept deletions:       {sum(k.deletion for k in keeps)}/{len(keeps)} "
          f"({sum(k.simpler for k in keeps)} kept as simpler within noise)")
    start = statistics.fmean(fresh[start_text])
    for crew in crews:
        final = crew.keeps[-1].fresh if crew.keeps else fresh[start_text]
        gain = (start - statistics.fmean(final)) / sigma if sigma == sigma and sigma > 0 else float("nan")
        print(f"final gain, crew {crew.index}: {gain:+.1f} σ (fresh mean {statistics.fmean(final):.6f} vs start "
              f"{start:.6f})")
    main_hits = 0
    for crew in crews:
        first = [r.exp_id for r in crew.records if r.status in ("keep", "discard", "crash")][:args.main_job]
        main_hits += any(verdicts[id(k)] for k in crew.keeps if k.record.exp_id in first)
    print(f"main job (first {args.main_job} trained experiments) ends with a confirmed keep: "
          f"{main_hits}/{len(crews)} crews")
    print(f"decision_quality: {100 * share:.0f} % of keeps confirmed" if done else
          "decision_quality: no keeps to confirm")
    return 0


if __name__ == "__main__":
    sys.exit(main())
