"""Toy train.py for loop tests: same shape as the real one (CAPS constants, summary block)."""

from prepare import evaluate_bpb, train_for_budget

CUDA = False
DEPTH = 4 if CUDA else 2
MATRIX_LR = 0.04 if CUDA else 0.01
EMBEDDING_LR = 0.6
WARMDOWN_RATIO = 0.5

training_seconds = train_for_budget()
val_bpb = evaluate_bpb({"DEPTH": DEPTH, "MATRIX_LR": MATRIX_LR, "EMBEDDING_LR": EMBEDDING_LR,
                        "WARMDOWN_RATIO": WARMDOWN_RATIO})
print("---")
print(f"val_bpb:          {val_bpb:.6f}")
print(f"training_seconds: {training_seconds:.1f}")
print(f"total_seconds:    {training_seconds:.1f}")
print("peak_vram_mb:     0.0")
print("mfu_percent:      0.00")
print("total_tokens_M:   0.0")
print("num_steps:        1")
print("num_params_M:     0.0")
print(f"depth:            {DEPTH}")
