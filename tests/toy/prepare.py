"""Toy stand-in for the locked prepare.py, for fast loop tests.

It offers the same public names as the real one. `evaluate_bpb` turns the "model" (train.py's constants)
into a smooth, seeded val_bpb with its minimum at OPTIMUM, and writes the result record where the
harness asked, as the real evaluator does.
"""

import hashlib
import json
import math
import os
import random
from pathlib import Path

TIME_BUDGET = float(os.environ.get("AUTORESEARCH_TIME_BUDGET", "0.2"))
SEED = int(os.environ.get("AUTORESEARCH_SEED", "42"))
MAX_SEQ_LEN = 256
OPTIMUM = {"MATRIX_LR": 0.04, "EMBEDDING_LR": 0.6, "WARMDOWN_RATIO": 0.5, "DEPTH": 4}
NOISE = 0.0003


def ensure_prepared():
    return Path(__file__).parent  # the toy needs no data


class Tokenizer:
    @classmethod
    def from_directory(cls):
        return cls()


def make_dataloader(tokenizer, batch_size, seq_len, split, seed=SEED):
    while True:
        yield None, None, 0


def evaluate_bpb(model, tokenizer, batch_size):
    rng = random.Random(SEED)
    loss = 1.0
    for name, best in OPTIMUM.items():
        value = model.get(name, best)
        loss += 0.05 * math.log(max(value, 1e-9) / best) ** 2
    val_bpb = loss + rng.gauss(0.0, NOISE)
    path = os.environ.get("AUTORESEARCH_RESULT_PATH")
    if path:
        record = {"val_bpb": val_bpb, "tokens": 1000, "bytes": 3650, "eval_seconds": 0.0,
                  "prepare_sha256": hashlib.sha256(Path(__file__).read_bytes()).hexdigest()}
        Path(path).write_text(json.dumps(record))
    return val_bpb


def data_fingerprint():
    return {"source": "toy", "data": "toy-data-v1", "prepare_args": None}


if __name__ == "__main__":
    import sys

    if "--fingerprint" in sys.argv:
        print(json.dumps(data_fingerprint()))
