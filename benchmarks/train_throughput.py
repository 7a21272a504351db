"""Training throughput of train.py's model on this machine: tokens/s and MFU, plus evaluation time.

The model, optimizers and batch sizes come from train.py itself (its constants, its code); batches come
from the prepared training data (random tokens when nothing is prepared). After a warm-up, optimizer
steps are timed. MFU = model FLOPs per token x tokens/s / peak FLOP/s, where the peak is train.py's dense
bf16 table on a GPU and, on a CPU, the fp32 matmul rate measured here (a practical peak, not a datasheet).

    python benchmarks/train_throughput.py [--steps N] [--warmup N] [--end-to-end SECONDS]

--end-to-end also runs `python train.py` for that budget and reports its start-up + evaluation overhead.
"""

import argparse
import contextlib
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import prepare  # noqa: E402
import train  # noqa: E402


def cpu_matmul_flops(seconds: float = 1.0, n: int = 1024) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    return 2 * n**3 * count / (time.perf_counter() - start)


def batches(vocab_size: int, device: torch.device):
    try:
        tokenizer = prepare.Tokenizer.from_directory()
    except prepare.NotPreparedError:
        print("data: not prepared, using random tokens")
        while True:
            x = torch.randint(0, vocab_size, (train.DEVICE_BATCH_SIZE, prepare.MAX_SEQ_LEN + 1), device=device)
            yield x[:, :-1], x[:, 1:], 0
    print(f"data: prepared training shards ({prepare.ensure_prepared().name})")
    yield from prepare.make_dataloader(tokenizer, train.DEVICE_BATCH_SIZE, prepare.MAX_SEQ_LEN, "train",
                                       device=device)


def measure_training(steps: int, warmup: int) -> None:
    device = torch.device("cuda" if train.CUDA else "cpu")
    if not train.CUDA:
        torch.set_num_threads(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    torch.manual_seed(prepare.SEED)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if train.CUDA else contextlib.nullcontext()
    model = train.build_model(prepare.VOCAB_SIZE, device)
    optimizers = train.build_optimizers(model)

    def train_loss(x, y):  # as in train.py: on a GPU the loss is compiled with the model
        logits = model(x)
        return F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))

    loss_fn = torch.compile(train_loss) if train.CUDA else train_loss
    grad_accum = train.TOTAL_BATCH_SIZE // (train.DEVICE_BATCH_SIZE * prepare.MAX_SEQ_LEN)
    loader = batches(prepare.VOCAB_SIZE, device)
    batch = next(loader)

    def step() -> None:
        nonlocal batch
        for _ in range(grad_accum):
            x, y, _ = batch
            with autocast:
                loss = loss_fn(x, y)
            (loss / grad_accum).backward()
            batch = next(loader)  # as in train.py: the CPU prepares it while the GPU is still busy
        for opt in optimizers:
            opt.step()
        model.zero_grad(set_to_none=True)
        if train.CUDA:
            torch.cuda.synchronize()

    started = time.perf_counter()
    for _ in range(warmup):
        step()
    warm_s = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(steps):
        step()
    elapsed = time.perf_counter() - started

    tokens_per_s = train.TOTAL_BATCH_SIZE * steps / elapsed
    achieved = model.estimate_flops_per_token() * tokens_per_s
    peak = train.peak_flops(device)
    peak_kind = "dense bf16 datasheet"
    if peak is None and device.type == "cpu":
        peak, peak_kind = cpu_matmul_flops(), "measured fp32 1024^3 matmul"
    name = torch.cuda.get_device_name(device) if train.CUDA else f"cpu x{torch.get_num_threads()} threads"
    print(f"device:            {name}")
    print(f"model:             depth {train.DEPTH}, width {model.dim}, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params, seq {prepare.MAX_SEQ_LEN}")
    print(f"batch:             {train.TOTAL_BATCH_SIZE} tokens/step ({grad_accum} x {train.DEVICE_BATCH_SIZE} rows)")
    print(f"warm-up:           {warmup} steps in {warm_s:.2f}s")
    print(f"step time:         {1000 * elapsed / steps:.1f} ms ({steps} steps)")
    print(f"tokens/s:          {tokens_per_s:,.0f}")
    print(f"achieved:          {achieved / 1e12:.4f} TFLOP/s")
    if peak:
        print(f"peak ({peak_kind}): {peak / 1e12:.4f} TFLOP/s")
        print(f"mfu:               {100 * achieved / peak:.2f}%")
    if train.CUDA:
        print(f"peak memory:       {torch.cuda.max_memory_allocated() / 2**20:,.0f} MiB")

    with contextlib.suppress(prepare.NotPreparedError):
        tokenizer = prepare.Tokenizer.from_directory()
        os.environ.pop("AUTORESEARCH_RESULT_PATH", None)
        started = time.perf_counter()
        with autocast:
            prepare.evaluate_bpb(model, tokenizer, train.EVAL_BATCH_SIZE)
        print(f"evaluation:        {time.perf_counter() - started:.2f}s for {prepare.EVAL_TOKENS:,} tokens")


def measure_end_to_end(budget: float) -> None:
    env = {k: v for k, v in os.environ.items() if k != "AUTORESEARCH_RESULT_PATH"} | {
        "AUTORESEARCH_TIME_BUDGET": str(budget)}
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "train.py"], cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        print(proc.stdout[-2000:], proc.stderr[-2000:])
        raise SystemExit(f"train.py exited with {proc.returncode}")
    summary = dict(re.findall(r"(?m)^(\w+):\s+(\S+)$", proc.stdout.split("\n---\n")[-1]))
    training, total = float(summary["training_seconds"]), float(summary["total_seconds"])
    print(f"train.py ({budget:g}s budget): val_bpb {summary['val_bpb']}, {summary['num_steps']} steps, "
          f"{(int(summary['num_steps']) - train.EXCLUDED_STEPS) * train.TOTAL_BATCH_SIZE / training:,.0f} tokens/s of training time")
    print(f"  overhead: {total - training:.1f}s inside train.py (set-up, excluded first steps, evaluation), "
          f"{wall - total:.1f}s interpreter + imports; wall {wall:.1f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20 if train.CUDA else 10)
    parser.add_argument("--warmup", type=int, default=10 if train.CUDA else 2)
    parser.add_argument("--end-to-end", type=float, default=None, metavar="SECONDS")
    args = parser.parse_args()
    measure_training(args.steps, args.warmup)
    if args.end_to_end:
        measure_end_to_end(args.end_to_end)


if __name__ == "__main__":
    main()
