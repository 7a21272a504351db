"""train.py: a short CPU run learns, reports the upstream summary block, and fails loudly on divergence."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import prepare

REPO = Path(__file__).resolve().parents[1]
SUMMARY_KEYS = ["val_bpb", "training_seconds", "total_seconds", "peak_vram_mb", "mfu_percent", "total_tokens_M",
                "num_steps", "num_params_M", "depth"]
BUDGET_S = 15  # ~300 optimizer steps on 2 quiet cores; still clearly ahead when the machine is shared


def run_train(workdir: Path, cache: Path, budget: float, result: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTORESEARCH_")}
    env |= {"AUTORESEARCH_CACHE": str(cache), "AUTORESEARCH_TIME_BUDGET": str(budget),
            "AUTORESEARCH_RESULT_PATH": str(result)}
    return subprocess.run([sys.executable, "train.py"], cwd=workdir, env=env, capture_output=True, text=True,
                          timeout=budget * 3 + 120)


def parse_summary(stdout: str) -> dict[str, float]:
    block = stdout.split("\n---\n")[-1].strip().splitlines()
    pairs = [re.fullmatch(r"(\w+):\s+(\S+)", line).groups() for line in block]
    assert [key for key, _ in pairs] == SUMMARY_KEYS
    return {key: float(value) for key, value in pairs}


@pytest.mark.slow
def test_short_cpu_run_beats_the_untrained_model(prepared_cache, tmp_path):
    import train

    torch.manual_seed(prepare.SEED)
    tokenizer = prepare.Tokenizer.from_directory()
    untrained = prepare.evaluate_bpb(train.build_model(tokenizer.get_vocab_size(), "cpu"), tokenizer,
                                     train.EVAL_BATCH_SIZE)

    result = tmp_path / "result.json"
    proc = run_train(REPO, prepared_cache, BUDGET_S, result)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = parse_summary(proc.stdout)
    assert summary["val_bpb"] < untrained - 0.25, (summary, untrained)
    assert json.loads(result.read_text())["val_bpb"] == pytest.approx(summary["val_bpb"], abs=1e-6)
    # it stops before a step that would end past the budget: never more than 5 % over it, and one step short at most
    assert BUDGET_S / 2 <= summary["training_seconds"] <= 1.05 * BUDGET_S < summary["total_seconds"]
    assert summary["num_steps"] >= 3 and summary["depth"] == train.DEPTH
    assert re.search(r"step 00001 \(\d+\.\d%\) \| loss: \d+\.\d+ .* tok/sec: [\d,]+", proc.stdout)


@pytest.mark.slow
def test_diverging_loss_prints_fail_and_exits_1(prepared_cache, tmp_path):
    source = (REPO / "train.py").read_text()
    # An absurd lm_head learning rate: one update sends the logits, and the loss, through the roof.
    diverging, count = re.subn(r"(?m)^UNEMBEDDING_LR = .*$", "UNEMBEDDING_LR = 1e6", source)
    assert count == 1
    (tmp_path / "train.py").write_text(diverging)
    (tmp_path / "prepare.py").write_bytes((REPO / "prepare.py").read_bytes())
    result = tmp_path / "result.json"
    proc = run_train(tmp_path, prepared_cache, 30, result)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stdout.rstrip().endswith("FAIL")
    assert not result.exists()


def test_device_dependent_constants_are_one_regex_editable_line():
    """The offline search policy edits `NAME = <cuda> if CUDA else <cpu>` lines by regex."""
    top = (REPO / "train.py").read_text().split("\ndef ", 1)[0]
    profiled = [line for line in top.splitlines() if " if CUDA else " in line and not line.startswith("#")]
    assert len(profiled) >= 5
    for line in profiled:
        assert re.fullmatch(r"[A-Z][A-Z0-9_]* = [^#]+ if CUDA else [^#]+?(\s+#.*)?", line), line
