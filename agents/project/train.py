"""Pretrain a small GPT for a fixed wall-clock budget, then report val_bpb. Single file, single device.

This is the file the research crew edits. Data, tokenizer and the evaluator live in prepare.py (locked).
Run: python train.py   (after `python prepare.py`)
"""

import contextlib
import math
import os
import resource
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.optim.adamw import adamw

from prepare import MAX_SEQ_LEN, SEED, TIME_BUDGET, Tokenizer, evaluate_bpb, make_dataloader

CUDA = torch.cuda.is_available()

# ---------------------------------------------------------------------------------------------------
# Hyperparameters: edit these directly. `A if CUDA else B`: A on a GPU, B for the tiny CPU profile.
# ---------------------------------------------------------------------------------------------------

# Model
DEPTH = 8 if CUDA else 2  # number of transformer blocks
ASPECT_RATIO = 64  # model width = DEPTH * ASPECT_RATIO, rounded up to a multiple of HEAD_DIM
HEAD_DIM = 128 if CUDA else 64
MLP_RATIO = 4
ROPE_BASE = 10000.0
LOGIT_SOFTCAP = 15.0 if CUDA else 0.0  # logits = cap * tanh(logits / cap); 0 = off (it triples CPU step time)

# Batch
TOTAL_BATCH_SIZE = 2**19 if CUDA else 2**12  # tokens per optimizer step (gradient accumulation fills it)
DEVICE_BATCH_SIZE = 128 if CUDA else 16  # sequences per forward/backward pass
EVAL_BATCH_SIZE = 128 if CUDA else 16

# Optimization: Muon for the 2-D matrices inside blocks, AdamW for embeddings, lm_head and scalars
MATRIX_LR = 0.04 if CUDA else 0.05
EMBEDDING_LR = 0.6
UNEMBEDDING_LR = 0.004 if CUDA else 0.02
SCALAR_LR = 0.5
MUON_MOMENTUM = 0.95
NS_STEPS = 5  # Newton-Schulz iterations
WEIGHT_DECAY = 0.0  # decoupled, on the Muon matrices
ADAM_BETAS = (0.8, 0.95)

# Schedule: progress = training time / TIME_BUDGET
WARMUP_RATIO = 0.0
WARMDOWN_RATIO = 0.5
FINAL_LR_FRAC = 0.0
EXCLUDED_STEPS = 10 if CUDA else 1  # first steps (compilation, allocation) do not count as training time


# ---------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------


def norm(x):
    return F.rms_norm(x, (x.size(-1),))


def rotary_tables(seq_len, head_dim, base, device):
    inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim)
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float32, device=device), inv_freq)
    return angles.cos()[None, :, None, :], angles.sin()[None, :, None, :]  # [1, T, 1, head_dim / 2]


def apply_rotary(x, cos, sin):
    x1, x2 = x.chunk(2, dim=-1)
    cos, sin = cos[:, : x.size(1)].to(x.dtype), sin[:, : x.size(1)].to(x.dtype)
    return torch.cat((x1 * cos + x2 * sin, x2 * cos - x1 * sin), dim=-1)


class CausalSelfAttention(nn.Module):
    def __init__(self, dim, head_dim):
        super().__init__()
        self.n_head, self.head_dim = dim // head_dim, head_dim
        self.c_q = nn.Linear(dim, dim, bias=False)
        self.c_k = nn.Linear(dim, dim, bias=False)
        self.c_v = nn.Linear(dim, dim, bias=False)
        self.c_proj = nn.Linear(dim, dim, bias=False)

    def forward(self, x, cos, sin):
        B, T, C = x.shape
        q = self.c_q(x).view(B, T, self.n_head, self.head_dim)
        k = self.c_k(x).view(B, T, self.n_head, self.head_dim)
        v = self.c_v(x).view(B, T, self.n_head, self.head_dim)
        q, k = norm(apply_rotary(q, cos, sin)), norm(apply_rotary(k, cos, sin))  # QK-norm
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
        return self.c_proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.c_fc = nn.Linear(dim, MLP_RATIO * dim, bias=False)
        self.c_proj = nn.Linear(MLP_RATIO * dim, dim, bias=False)

    def forward(self, x):
        return self.c_proj(F.relu(self.c_fc(x)).square())  # ReLU^2


class Block(nn.Module):
    def __init__(self, dim, head_dim):
        super().__init__()
        self.attn = CausalSelfAttention(dim, head_dim)
        self.mlp = MLP(dim)

    def forward(self, x, cos, sin):
        x = x + self.attn(norm(x), cos, sin)
        return x + self.mlp(norm(x))


class GPT(nn.Module):
    def __init__(self, vocab_size, depth, dim, head_dim, seq_len):
        super().__init__()
        self.depth, self.dim, self.head_dim, self.seq_len = depth, dim, head_dim, seq_len
        self.wte = nn.Embedding(vocab_size, dim)
        self.blocks = nn.ModuleList(Block(dim, head_dim) for _ in range(depth))
        self.lm_head = nn.Linear(dim, vocab_size, bias=False)  # untied from wte
        # Per-block mix of the residual stream and the initial embedding (learned scalars).
        self.resid_lambdas = nn.Parameter(torch.ones(depth))
        self.x0_lambdas = nn.Parameter(torch.zeros(depth))
        cos, sin = rotary_tables(seq_len, head_dim, ROPE_BASE, self.wte.weight.device)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    @torch.no_grad()
    def init_weights(self):
        bound = (3 / self.dim) ** 0.5  # uniform with std 1/sqrt(dim)
        nn.init.normal_(self.wte.weight, std=1.0)
        nn.init.normal_(self.lm_head.weight, std=0.001)
        for block in self.blocks:
            for linear in (block.attn.c_q, block.attn.c_k, block.attn.c_v, block.mlp.c_fc):
                nn.init.uniform_(linear.weight, -bound, bound)
            nn.init.zeros_(block.attn.c_proj.weight)  # each block starts as the identity
            nn.init.zeros_(block.mlp.c_proj.weight)

    def forward(self, idx):
        x = x0 = norm(self.wte(idx))
        for i, block in enumerate(self.blocks):
            x = self.resid_lambdas[i] * x + self.x0_lambdas[i] * x0
            x = block(x, self.cos, self.sin)
        logits = self.lm_head(norm(x)).float()
        if LOGIT_SOFTCAP:
            logits = LOGIT_SOFTCAP * torch.tanh(logits / LOGIT_SOFTCAP)
        return logits

    def estimate_flops_per_token(self):
        """Forward + backward FLOPs per token: 6 per matmul weight, plus attention scores and values."""
        matmul_params = sum(p.numel() for p in self.parameters() if p.dim() == 2) - self.wte.weight.numel()
        return 6 * matmul_params + 12 * self.depth * self.dim * self.seq_len


# ---------------------------------------------------------------------------------------------------
# Optimizer
# ---------------------------------------------------------------------------------------------------


def newton_schulz(G, steps):
    """Approximately orthogonalise G (its singular values pushed towards 1) with a quintic iteration;
    coefficients from Keller Jordan's Muon (2024). bf16 on GPU; fp32 on CPU, where bf16 is far slower."""
    a, b, c = 3.4445, -4.7750, 2.0315
    X = G.to(torch.bfloat16 if G.is_cuda else torch.float32)
    tall = X.size(0) > X.size(1)
    if tall:
        X = X.T
    X = X / (X.norm() + 1e-7)
    for _ in range(steps):
        A = X @ X.T
        X = a * X + (b * A + c * A @ A) @ X
    return X.T if tall else X


# Plain classes rather than torch.optim.Optimizer subclasses: constructing one of those imports torch._dynamo,
# two extra seconds of start-up on a CPU. Each keeps `param_groups` (dicts with "lr") for the schedule.


class AdamW:
    """AdamW on parameter groups, through torch's own functional update."""

    def __init__(self, groups, betas, eps, weight_decay):
        self.param_groups = [dict(g, initial_lr=g["lr"]) for g in groups]
        self.betas, self.eps, self.weight_decay = betas, eps, weight_decay
        self.state = {}  # param -> (exp_avg, exp_avg_sq, step)

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            states = [self.state.setdefault(p, (torch.zeros_like(p), torch.zeros_like(p), torch.tensor(0.0)))
                      for p in params]
            adamw(
                params, [p.grad for p in params], [s[0] for s in states], [s[1] for s in states], [],
                [s[2] for s in states], amsgrad=False, beta1=self.betas[0], beta2=self.betas[1], lr=group["lr"],
                weight_decay=self.weight_decay, eps=self.eps, maximize=False,
            )


class Muon:
    """SGD with Nesterov momentum whose update of each 2-D weight is orthogonalised (Newton-Schulz)."""

    def __init__(self, params, lr, momentum, weight_decay, ns_steps):
        self.param_groups = [dict(params=list(params), lr=lr, initial_lr=lr)]
        self.momentum, self.weight_decay, self.ns_steps = momentum, weight_decay, ns_steps
        self.state = {}  # param -> momentum buffer

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            lr = group["lr"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                buf = self.state.setdefault(p, torch.zeros_like(p))
                buf.lerp_(p.grad, 1 - self.momentum)
                update = newton_schulz(p.grad.lerp(buf, self.momentum), self.ns_steps)
                scale = max(1.0, p.size(0) / p.size(1)) ** 0.5  # same update RMS for tall matrices
                p.mul_(1 - lr * self.weight_decay)
                p.add_(update.to(p.dtype), alpha=-lr * scale)


def build_optimizers(model):
    matrices = [p for p in model.blocks.parameters() if p.dim() == 2]
    scalars = [model.resid_lambdas, model.x0_lambdas]
    dim_scale = (model.dim / 768) ** -0.5  # AdamW rates were tuned at width 768
    adamw = AdamW(
        [
            dict(params=[model.wte.weight], lr=EMBEDDING_LR * dim_scale),
            dict(params=[model.lm_head.weight], lr=UNEMBEDDING_LR * dim_scale),
            dict(params=scalars, lr=SCALAR_LR),
        ],
        betas=ADAM_BETAS, eps=1e-10, weight_decay=0.0,
    )
    muon = Muon(matrices, lr=MATRIX_LR, momentum=MUON_MOMENTUM, weight_decay=WEIGHT_DECAY, ns_steps=NS_STEPS)
    return [adamw, muon]


def lr_multiplier(progress):
    if progress < WARMUP_RATIO:
        return progress / WARMUP_RATIO
    if progress < 1.0 - WARMDOWN_RATIO:
        return 1.0
    cooldown = (1.0 - progress) / WARMDOWN_RATIO
    return cooldown + (1.0 - cooldown) * FINAL_LR_FRAC


# ---------------------------------------------------------------------------------------------------
# Setup helpers
# ---------------------------------------------------------------------------------------------------


def build_model(vocab_size, device):
    dim = math.ceil(DEPTH * ASPECT_RATIO / HEAD_DIM) * HEAD_DIM
    with torch.device(device):
        model = GPT(vocab_size, DEPTH, dim, HEAD_DIM, MAX_SEQ_LEN)
    model.init_weights()
    return model


def peak_flops(device):
    """Dense bf16 peak of known GPUs, for MFU; None where unknown (and on CPU)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    table = {"H100": 989.5e12, "H200": 989.5e12, "B200": 2250e12, "A100": 312e12, "L40S": 362e12, "4090": 165.2e12}
    return next((flops for key, flops in table.items() if key in name), None)


def peak_memory_mb(device):
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # CPU: peak resident memory (Linux: KiB)


# ---------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------


def main():
    t_start = time.time()
    torch.manual_seed(SEED)
    device = torch.device("cuda" if CUDA else "cpu")
    if CUDA:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    else:
        torch.set_num_threads(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if CUDA else contextlib.nullcontext()

    tokenizer = Tokenizer.from_directory()
    vocab_size = tokenizer.get_vocab_size()
    model = build_model(vocab_size, device)
    num_params = sum(p.numel() for p in model.parameters())
    flops_per_token = model.estimate_flops_per_token()
    optimizers = build_optimizers(model)

    def train_loss(x, y):
        logits = model(x)
        return F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))

    # Compiled together, the softcap and the loss never hold float32 logits of the whole batch in memory.
    loss_fn = torch.compile(train_loss) if CUDA else train_loss

    tokens_per_pass = DEVICE_BATCH_SIZE * MAX_SEQ_LEN
    if TOTAL_BATCH_SIZE % tokens_per_pass:
        sys.exit(f"TOTAL_BATCH_SIZE ({TOTAL_BATCH_SIZE}) must be a multiple of DEVICE_BATCH_SIZE * MAX_SEQ_LEN "
                 f"({tokens_per_pass})")
    grad_accum_steps = TOTAL_BATCH_SIZE // tokens_per_pass
    loader = make_dataloader(tokenizer, DEVICE_BATCH_SIZE, MAX_SEQ_LEN, "train", seed=SEED, device=device)
    x, y, epoch = next(loader)
    print(f"device: {device} | params: {num_params / 1e6:.2f}M | depth {DEPTH}, width {model.dim} | "
          f"grad accumulation: {grad_accum_steps} | time budget: {TIME_BUDGET:.0f}s | seed {SEED}", flush=True)

    training_time, step, smooth_loss = 0.0, 0, 0.0
    while True:
        t0 = time.time()
        for _ in range(grad_accum_steps):
            with autocast:
                loss = loss_fn(x, y)
            (loss / grad_accum_steps).backward()
            x, y, epoch = next(loader)
        progress = min(training_time / TIME_BUDGET, 1.0)
        lrm = lr_multiplier(progress)
        for opt in optimizers:
            for group in opt.param_groups:
                group["lr"] = group["initial_lr"] * lrm
            opt.step()
        model.zero_grad(set_to_none=True)
        loss_value = loss.item()  # also waits for the device, so dt below is the real step time
        dt = time.time() - t0
        if step >= EXCLUDED_STEPS:
            training_time += dt
        if not math.isfinite(loss_value) or loss_value > 100:
            print(f"step {step}: loss {loss_value}", flush=True)
            print("FAIL")
            sys.exit(1)

        smooth_loss = 0.9 * smooth_loss + 0.1 * loss_value
        shown_loss = smooth_loss / (1 - 0.9 ** (step + 1))  # bias-corrected running mean
        print(f"step {step:05d} ({100 * progress:.1f}%) | loss: {shown_loss:.4f} | lrm: {lrm:.2f} | "
              f"dt: {dt * 1000:.0f}ms | tok/sec: {int(TOTAL_BATCH_SIZE / dt):,} | epoch: {epoch}", flush=True)
        step += 1
        if step > EXCLUDED_STEPS and training_time >= TIME_BUDGET:
            break

    with autocast:
        val_bpb = evaluate_bpb(model, tokenizer, EVAL_BATCH_SIZE)
    counted_steps = step - EXCLUDED_STEPS
    peak = peak_flops(device)
    mfu = 100 * flops_per_token * TOTAL_BATCH_SIZE * counted_steps / training_time / peak if peak else 0.0
    print("---")
    print(f"val_bpb:          {val_bpb:.6f}")
    print(f"training_seconds: {training_time:.1f}")
    print(f"total_seconds:    {time.time() - t_start:.1f}")
    print(f"peak_vram_mb:     {peak_memory_mb(device):.1f}")
    print(f"mfu_percent:      {mfu:.2f}")
    print(f"total_tokens_M:   {step * TOTAL_BATCH_SIZE / 1e6:.1f}")
    print(f"num_steps:        {step}")
    print(f"num_params_M:     {num_params / 1e6:.1f}")
    print(f"depth:            {DEPTH}")


if __name__ == "__main__":
    main()
