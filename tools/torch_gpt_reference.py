#!/usr/bin/env python3
"""Trains the same GPT as microflex-train in PyTorch and compares the per-step losses.

First, in microflex (CPU is fine):
    ./build/programs/microflex-train --config configs/ref.conf --dump_reference=out/ref
which writes out/ref/init.safetensors (initial weights under nanoGPT's names, the model
config and training flags as metadata), out/ref/batches.safetensors (every micro-batch,
x.NNNNNN / y.NNNNNN) and out/ref/loss.csv (microflex's losses). Then:
    python3 tools/torch_gpt_reference.py out/ref [--device cuda] [--tol 1e-3]
builds nanoGPT's model (GELU with the tanh approximation, as microflex's MLP), loads the
initial weights, replays the batches with AdamW (decay on tensors with dim >= 2), nanoGPT's
warm-up + cosine schedule and gradient clipping in float32, prints both loss columns and
exits with status 1 if any step differs by more than --tol relative. Needs only torch.
"""
import argparse
import csv
import json
import math
import os
import struct
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

DTYPES = {"F32": torch.float32, "F64": torch.float64, "F16": torch.float16,
          "BF16": torch.bfloat16, "I32": torch.int32, "I64": torch.int64, "BOOL": torch.bool}


def load_safetensors(path):
    """(tensors by name, metadata) without the safetensors package."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {}) or {}
    base = 8 + n
    tensors = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        buf = bytearray(data[base + begin:base + end])
        dtype = DTYPES[info["dtype"]]
        t = torch.frombuffer(buf, dtype=dtype) if buf else torch.empty(0, dtype=dtype)
        tensors[name] = t.reshape(info["shape"]).clone()
    return tensors, meta


def parse_train_config(text):
    out = {}
    for line in text.splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip()
    return out


class LayerNorm(nn.Module):
    def __init__(self, ndim, bias):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.n_head, self.n_embd = cfg["n_head"], cfg["n_embd"]
        self.c_attn = nn.Linear(self.n_embd, 3 * self.n_embd, bias=cfg["bias"])
        self.c_proj = nn.Linear(self.n_embd, self.n_embd, bias=cfg["bias"])

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        C = cfg["n_embd"]
        self.c_fc = nn.Linear(C, 4 * C, bias=cfg["bias"])
        self.gelu = nn.GELU(approximate="tanh")
        self.c_proj = nn.Linear(4 * C, C, bias=cfg["bias"])

    def forward(self, x):
        return self.c_proj(self.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.ln_1 = LayerNorm(cfg["n_embd"], cfg["bias"])
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = LayerNorm(cfg["n_embd"], cfg["bias"])
        self.mlp = MLP(cfg)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(cfg["vocab_size"], cfg["n_embd"]),
            wpe=nn.Embedding(cfg["block_size"], cfg["n_embd"]),
            h=nn.ModuleList([Block(cfg) for _ in range(cfg["n_layer"])]),
            ln_f=LayerNorm(cfg["n_embd"], cfg["bias"])))
        self.lm_head = nn.Linear(cfg["n_embd"], cfg["vocab_size"], bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # tied, as nanoGPT

    def forward(self, idx, targets):
        T = idx.size(1)
        pos = torch.arange(0, T, dtype=torch.long, device=idx.device)
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)
        for block in self.transformer.h:
            x = block(x)
        logits = self.lm_head(self.transformer.ln_f(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)


def get_lr(it, lr, min_lr, warmup, decay_iters):
    """microflex's CosineSchedule (nanoGPT's get_lr)."""
    if it < warmup:
        return lr * (it + 1) / (warmup + 1)
    if it > decay_iters:
        return min_lr
    span = decay_iters - warmup
    ratio = (it - warmup) / span if span > 0 else 1.0
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("ref_dir", nargs="?", default="out/ref")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tol", type=float, default=1e-3, help="largest relative loss difference")
    args = ap.parse_args()

    # Plain float32 everywhere: no TF32 matmuls, which round inputs to 10 mantissa bits.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.use_deterministic_algorithms(False)

    init, meta = load_safetensors(os.path.join(args.ref_dir, "init.safetensors"))
    cfg = json.loads(meta["config"])
    tc = parse_train_config(meta["train_config"])
    att = cfg.get("attention", {})
    if (cfg.get("rotary") or cfg.get("dropout", 0) != 0 or not att.get("causal", True)
            or att.get("window") or att.get("prefix") or att.get("document") or att.get("alibi")
            or att.get("softcap")):
        sys.exit("torch_gpt_reference: only the plain causal GPT without dropout is built here; "
                 "use attention=causal, dropout=0, rotary=false")
    batches, bmeta = load_safetensors(os.path.join(args.ref_dir, "batches.safetensors"))
    accum = int(bmeta.get("accum_steps", tc.get("accum_steps", "1")))
    xs = [batches[k] for k in sorted(k for k in batches if k.startswith("x."))]
    ys = [batches[k] for k in sorted(k for k in batches if k.startswith("y."))]
    with open(os.path.join(args.ref_dir, "loss.csv")) as f:
        theirs = [float(r["train_loss"]) for r in csv.DictReader(f)]
    steps = min(len(xs) // accum, len(theirs))

    dev = torch.device(args.device)
    model = GPT(cfg)
    missing, unexpected = model.load_state_dict(init, strict=False)
    if missing or unexpected:
        sys.exit(f"torch_gpt_reference: missing {missing}, unexpected {unexpected}")
    model.to(dev).train()
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": float(tc["weight_decay"])},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=float(tc["lr"]), betas=(float(tc["beta1"]), float(tc["beta2"])), eps=1e-8,
        foreach=False)
    lr, min_lr = float(tc["lr"]), float(tc["min_lr"])
    warmup, total = int(tc["warmup"]), int(tc["steps"])
    grad_clip = float(tc["grad_clip"])

    print(f"{'step':>5} {'pytorch':>12} {'microflex':>12} {'rel diff':>10}")
    worst = 0.0
    for it in range(steps):
        for g in opt.param_groups:
            g["lr"] = get_lr(it, lr, min_lr, warmup, total)
        loss_sum = 0.0
        for micro in range(accum):
            x = xs[it * accum + micro].to(dev)
            y = ys[it * accum + micro].to(dev)
            loss = model(x, y)
            (loss / accum).backward()
            loss_sum += loss.item()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        ours = loss_sum / accum
        rel = abs(ours - theirs[it]) / abs(theirs[it])
        worst = max(worst, rel)
        print(f"{it + 1:>5} {ours:>12.6f} {theirs[it]:>12.6f} {rel:>10.2e}")
    ok = worst <= args.tol
    print(f"{steps} steps on {dev}: largest relative difference {worst:.2e} "
          f"({'within' if ok else 'ABOVE'} {args.tol:g})")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
