"""Why every parse of train.py goes through `agents.trainpy`: threads parsing at once, with and without it.

Under the conditions of tests/thread_pressure.py (frequent thread switches, finalisers that yield the GIL during
a collection), THREADS threads parse VERSIONS distinct versions of train.py, first with bare `ast.parse`, then
through `agents.trainpy.read` (one lock, one parse per version). On Python 3.11 the first can raise
`SystemError: AST constructor recursion depth mismatch` (CPython gh-106905); the second must not.

    python benchmarks/parse_race.py [--rounds 5] [--threads 8] [--versions 16]
"""

from __future__ import annotations

import argparse
import ast
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agents import trainpy  # noqa: E402
from tests.thread_pressure import run_threads, thread_pressure  # noqa: E402


def one_round(parse, texts: list[str], threads: int) -> tuple[int, float]:
    """SystemErrors raised and seconds taken for `threads` threads parsing `texts` between them."""
    share = len(texts) // threads
    failures: list[SystemError] = []

    def work(i: int) -> None:
        for text in texts[i * share:(i + 1) * share]:
            try:
                parse(text)
            except SystemError as exc:
                failures.append(exc)

    start = time.perf_counter()
    with thread_pressure():
        _, errors = run_threads(work, threads)
    if errors:
        raise errors[0]
    return len(failures), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--versions", type=int, default=16)
    args = parser.parse_args()
    base = (ROOT / "train.py").read_text()
    print(f"Python {sys.version.split()[0]}; {args.threads} threads, {args.versions} versions per round")
    for label, parse in (("ast.parse", ast.parse), ("trainpy.read", trainpy.read)):
        counts, seconds = [], []
        for r in range(args.rounds):
            texts = [f"{base}\nROUND_{label.replace('.', '_')}_{r}_{i} = {i}\n" for i in range(args.versions)]
            failed, took = one_round(parse, texts, args.threads)
            counts.append(failed)
            seconds.append(took)
        hit = sum(1 for c in counts if c)
        print(f"{label:13s} SystemErrors per round {counts} ({hit}/{args.rounds} rounds hit); "
              f"{sum(seconds) / len(seconds):.1f} s per round")


if __name__ == "__main__":
    main()
