"""Toy train.py for loop tests: the real one's shape (CAPS constants, budget loop, summary block)."""

import time

from prepare import MAX_SEQ_LEN, TIME_BUDGET, Tokenizer, evaluate_bpb, make_dataloader

CUDA = False
DEPTH = 4 if CUDA else 2
MATRIX_LR = 0.04 if CUDA else 0.01
EMBEDDING_LR = 0.6
WARMDOWN_RATIO = 0.5
DEVICE_BATCH_SIZE = 16

tokenizer = Tokenizer.from_directory()
loader = make_dataloader(tokenizer, DEVICE_BATCH_SIZE, MAX_SEQ_LEN, "train")
model = {"DEPTH": DEPTH, "MATRIX_LR": MATRIX_LR, "EMBEDDING_LR": EMBEDDING_LR, "WARMDOWN_RATIO": WARMDOWN_RATIO}

t0 = time.time()
step = 0
training_time = 0.0
while training_time < TIME_BUDGET:
    x, y, epoch = next(loader)
    time.sleep(0.01)
    step += 1
    training_time = time.time() - t0

val_bpb = evaluate_bpb(model, tokenizer, DEVICE_BATCH_SIZE)
print("---")
print(f"val_bpb:          {val_bpb:.6f}")
print(f"training_seconds: {training_time:.1f}")
print(f"total_seconds:    {training_time:.1f}")
peak_vram_mb = mfu_percent = 0.0  # no device in the toy
print(f"peak_vram_mb:     {peak_vram_mb:.1f}")
print(f"mfu_percent:      {mfu_percent:.2f}")
print(f"total_tokens_M:   {step * DEVICE_BATCH_SIZE * MAX_SEQ_LEN / 1e6:.1f}")
print(f"num_steps:        {step}")
print(f"num_params_M:     {len(model) / 1e6:.1f}")
print(f"depth:            {DEPTH}")
