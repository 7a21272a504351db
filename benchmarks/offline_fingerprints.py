"""Does an offline run ever train the same change twice? The real loop, the offline crew, fingerprints counted.

Runs `autoresearch run` in-process on a fresh repository (the toy train.py of the tests by default: a run takes a
fraction of a second; `--project` uses this project's own train.py with `--budget` seconds per run) for `--runs`
runs of `--experiments` experiments each, one after another on the same memory, as nights follow each other in a
repository. Every trained experiment (keep, discard, crash) has a fingerprint; the same fingerprint twice means
the memory let a repeat reach the GPU. Also reported: how many ideas each gate refused, and the ids of any
duplicates.

    python benchmarks/offline_fingerprints.py                      # 2 runs x 12 experiments on the toy
    python benchmarks/offline_fingerprints.py --runs 1 --experiments 24
    python benchmarks/offline_fingerprints.py --project --budget 20 --experiments 24   # minutes on a CPU
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.record.results import ResultsStore  # noqa: E402
from memory.fingerprint import ChangeFingerprint  # noqa: E402
from tests.toyrepo import make_toy_repo, run_toy  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TRAINED = ("keep", "discard", "crash")


def project_repo(path: Path, experiments: int, budget: float) -> Path:
    """A copy of this project's prepare.py, train.py and program.md under git, with the offline preset."""
    repo = make_toy_repo(path, loop={"max_experiments": experiments, "time_budget": budget}).parent
    for name in ("prepare.py", "train.py"):
        shutil.copy(ROOT / name, repo / name)
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
    subprocess.run(git + ["commit", "-qam", "the project's own train.py"], cwd=repo, check=True)
    return repo


def run(root: Path, runs: int, experiments: int, project: bool = False, budget: float = 20.0) -> dict:
    """Run the offline loop `runs` times on one repository and memory; count fingerprints of what trained."""
    if project:
        repo = project_repo(root / "repo", experiments, budget)
    else:
        repo = make_toy_repo(root / "repo", loop={"max_experiments": experiments}).parent
    records = []
    for k in range(runs):
        run_toy(repo, repo / "crew.yaml", tag=f"night{k + 1}")
        records += ResultsStore(repo / "runs" / f"night{k + 1}").load()
    trained = [r for r in records if r.status in TRAINED]
    keys = {f"{r.tag}/{r.exp_id}": ChangeFingerprint.from_json(r.fingerprint) for r in trained}
    counts = Counter(fp.key for fp in keys.values() if fp is not None)
    duplicates = {key: [rid for rid, fp in keys.items() if fp is not None and fp.key == key]
                  for key, n in counts.items() if n > 1}
    refused = Counter(r.rule for r in records if r.status == "repeat")
    return {"trained": len(trained), "fingerprinted": sum(counts.values()), "distinct": len(counts),
            "duplicates": duplicates, "refused": dict(refused), "records": len(records)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=2, help="runs one after another on the same memory")
    parser.add_argument("--experiments", type=int, default=12, help="experiments per run")
    parser.add_argument("--project", action="store_true", help="this project's train.py instead of the toy")
    parser.add_argument("--budget", type=float, default=20.0, help="training seconds per run with --project")
    args = parser.parse_args()
    if args.project:
        import prepare  # noqa: F401  (the data must be prepared: `autoresearch prepare`)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        report = run(Path(tmp), args.runs, args.experiments, args.project, args.budget)
    print(f"{args.runs} run(s) x {args.experiments} experiments ({'project' if args.project else 'toy'} train.py), "
          f"{time.perf_counter() - started:.0f} s")
    print(f"  trained {report['trained']} experiments, {report['fingerprinted']} with a fingerprint, "
          f"{report['distinct']} distinct")
    print(f"  refused as repeats before training, by rule: {report['refused'] or 'none'}")
    if report["duplicates"]:
        print(f"  SAME FINGERPRINT TRAINED MORE THAN ONCE: {report['duplicates']}")
        sys.exit(1)
    print("  no fingerprint trained twice")


if __name__ == "__main__":
    main()
