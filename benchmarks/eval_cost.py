"""Evaluation cost: validation batches from the tokens prepare stored, against re-tokenising the text each run.

1. The data side at the two device profiles' sizes, with no model: the old path (make_dataloader's "val" split,
   which tokenises the validation text) against the new one (prepare's stored tokens, hash-checked, packed the
   same way). Both must give identical batches.
2. A whole `evaluate_bpb` on the CPU profile with a small model, new path against the old one.

    python benchmarks/eval_cost.py [--builtin-mb 16] [--cuda-rows 10240]

The GPU estimate in the project notes adds the measured data side at the CUDA size to the forward passes'
arithmetic (2 x non-embedding parameters x tokens) at a stated throughput.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def data_side(prepare, tokenizer, rows: int, batch: int, seq_len: int) -> tuple[float, float]:
    import torch

    dataset = prepare._active_dataset()
    steps = max(1, rows // batch)
    started = time.perf_counter()
    old = prepare.make_dataloader(tokenizer, batch, seq_len, "val")
    old_batches = [next(old)[:2] for _ in range(steps)]
    before = time.perf_counter() - started
    started = time.perf_counter()
    new = prepare._val_batches(dataset, tokenizer, batch, seq_len, torch.device("cpu"))
    new_batches = [next(new) for _ in range(steps)]
    after = time.perf_counter() - started
    for (a, b), (c, d) in zip(old_batches, new_batches, strict=True):
        assert torch.equal(a, c) and torch.equal(b, d), "stored tokens give other batches than the text"
    return before, after


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--builtin-mb", type=float, default=16.0, help="size of the builtin corpus to prepare")
    parser.add_argument("--cuda-rows", type=int, default=40 * 2**19 // 2048, help="rows scored on the CUDA profile")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="eval-cost-") as tmp:
        os.environ["AUTORESEARCH_CACHE"] = tmp
        import torch

        import prepare

        prepare.run_prepare("builtin", builtin_mb=args.builtin_mb, cache_dir=tmp)
        tokenizer = prepare.Tokenizer.from_directory()
        entry = prepare._active_dataset().manifest()[prepare._active_dataset().val_key]
        print(f"validation split: {entry['count']:,} tokens in {entry['documents']:,} documents "
              f"({'whole split stored' if entry['complete'] else 'first part stored'})")

        cpu_rows = 2**13 // 256
        before, after = data_side(prepare, tokenizer, cpu_rows, 32, 256)
        print(f"data, CPU profile ({cpu_rows} rows x 257): text {before * 1000:.0f} ms -> stored tokens "
              f"{after * 1000:.0f} ms")
        before, after = data_side(prepare, tokenizer, args.cuda_rows, 64, 2048)
        print(f"data, CUDA profile ({args.cuda_rows} rows x 2049 = {args.cuda_rows * 2049 / 1e6:.1f} M tokens, "
              f"on this CPU): text {before:.2f} s -> stored tokens {after:.2f} s")

        class Small(torch.nn.Module):  # causal by construction: each position sees only its own token
            def __init__(self, vocab: int, width: int = 128):
                super().__init__()
                self.wte, self.head = torch.nn.Embedding(vocab, width), torch.nn.Linear(width, vocab)

            def forward(self, idx):
                return self.head(torch.tanh(self.wte(idx)))

        model = Small(tokenizer.get_vocab_size())
        prepare.evaluate_bpb(model, tokenizer, 32)  # warm-up: imports, allocator, file cache
        timings = {}
        for label in ("stored tokens", "text"):
            if label == "text":  # the old path: the validation text tokenised inside the evaluation
                prepare._val_batches = lambda dataset, tok, b, t, device: (
                    xy[:2] for xy in prepare.make_dataloader(tok, b, t, "val", device=device))
            runs = []
            for _ in range(5):
                started = time.perf_counter()
                prepare.evaluate_bpb(model, tokenizer, 32)
                runs.append(time.perf_counter() - started)
            timings[label] = sorted(runs)[len(runs) // 2]
        print(f"evaluate_bpb, CPU profile, small model (median of 5): text {timings['text'] * 1000:.0f} ms -> "
              f"stored tokens {timings['stored tokens'] * 1000:.0f} ms")


if __name__ == "__main__":
    main()
