"""The sandbox probe of benchmarks/gpu_check.py: fixed work on the starting train.py's model, run as a train.py.

gpu_check puts the starting train.py's text into TRAIN_SOURCE and runs this file as the train.py of a run, once
unsandboxed and once under a sandbox, through the runner. It builds train.py's model and optimizers (train.py's
own code, loaded as a module so that its main() does not run), takes PROBE_STEPS optimizer steps on the first
training batches (small ones: these steps run eagerly) with deterministic kernels, then scores the model with
prepare.evaluate_bpb, which writes the record the harness reads. The same code, data and seed on the same device
give the same val_bpb to the last bit: a sandbox that changed what runs (another device, another library, a CPU
fallback) shows here. Where an operation has no deterministic kernel, the probe says so and compares the
evaluation of the initial model only.

Not a train.py of the research loop: it reads environment variables of the check (GPU_CHECK_PROBE_STEPS, and
CUBLAS_WORKSPACE_CONFIG, which deterministic cuBLAS needs before CUDA starts; gpu_check sets both).
"""

import contextlib
import hashlib
import os
import sys
import time
import types

import torch
import torch.nn.functional as F

TRAIN_SOURCE = ""  # the starting train.py, written here by gpu_check
PROBE_STEPS = int(os.environ.get("GPU_CHECK_PROBE_STEPS", "8"))


def load_train() -> types.ModuleType:
    """train.py's code as a module named `train` (its `if __name__ == "__main__"` block stays shut)."""
    module = types.ModuleType("train")
    module.__file__ = os.path.abspath("train.py")
    sys.modules["train"] = module
    exec(compile(TRAIN_SOURCE, "train.py", "exec"), module.__dict__)
    return module


def weights_digest(model: torch.nn.Module) -> str:
    data = torch.cat([p.detach().float().flatten().cpu() for p in model.parameters()])
    return hashlib.sha256(data.numpy().tobytes()).hexdigest()[:16]


def main() -> None:
    started = time.time()
    train = load_train()
    from prepare import MAX_SEQ_LEN, SEED, Tokenizer, evaluate_bpb, make_dataloader

    device = torch.device("cuda" if train.CUDA else "cpu")
    if train.CUDA:  # as train.py's main() sets them
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if train.CUDA else contextlib.nullcontext()
    tokenizer = Tokenizer.from_directory()

    def fresh_model():
        torch.manual_seed(SEED)
        return train.build_model(tokenizer.get_vocab_size(), device)

    model = fresh_model()
    optimizers = train.build_optimizers(model)
    # an eighth of train.py's micro-batch: eager (uncompiled) steps hold far more activations than compiled ones
    batch = max(1, train.DEVICE_BATCH_SIZE // 8)
    loader = make_dataloader(tokenizer, batch, MAX_SEQ_LEN, "train", seed=SEED, device=device)
    steps, note = 0, "deterministic kernels"
    torch.use_deterministic_algorithms(True)
    try:
        for _ in range(PROBE_STEPS):
            x, y, _ = next(loader)
            with autocast:
                logits = model(x)
            F.cross_entropy(logits.view(-1, logits.size(-1)).float(), y.view(-1)).backward()
            for opt in optimizers:
                opt.step()
            model.zero_grad(set_to_none=True)
            steps += 1
    except RuntimeError as exc:  # an operation without a deterministic kernel on this device
        note = f"evaluation of the initial model only ({str(exc).splitlines()[0][:160]})"
        model, steps = fresh_model(), 0
    torch.use_deterministic_algorithms(False)  # the evaluation runs as it does after train.py's training
    with autocast:
        val_bpb = evaluate_bpb(model, tokenizer, train.EVAL_BATCH_SIZE)
    print(f"probe: device {device} | steps {steps} | {note} | weights {weights_digest(model)} | "
          f"val_bpb {val_bpb!r} | {time.time() - started:.1f}s", flush=True)


if __name__ == "__main__":
    main()
