"""PyTorch reference for bench/train_bench.cpp: the same GPT (nanoGPT-style: pre-norm
blocks, tied head, GELU-tanh MLP, causal SDPA), bf16 autocast, fused AdamW, tokens/s and
peak memory in eager mode and with torch.compile. Usage: torch_train_bench.py small|gpt2"""
import json
import math
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, C, H):
        super().__init__()
        self.H = H
        self.ln_1, self.ln_2 = nn.LayerNorm(C), nn.LayerNorm(C)
        self.c_attn, self.c_proj = nn.Linear(C, 3 * C), nn.Linear(C, C)
        self.c_fc, self.mlp_proj = nn.Linear(C, 4 * C), nn.Linear(4 * C, C)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.H, C // self.H).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.c_proj(y.transpose(1, 2).reshape(B, T, C))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, V, T, L, H, C):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(V, C), nn.Embedding(T, C)
        self.h = nn.ModuleList(Block(C, H) for _ in range(L))
        self.ln_f = nn.LayerNorm(C)

    def forward(self, idx, targets):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for b in self.h:
            x = b(x)
        logits = F.linear(self.ln_f(x), self.wte.weight)
        return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.view(-1))


def main():
    which = sys.argv[1] if len(sys.argv) > 1 else "small"
    V, T, L, H, C, B = (50257, 1024, 12, 12, 768, 8) if which == "gpt2" else (256, 256, 6, 6, 384, 64)
    dev = "cuda"
    for mode in ("eager", "compile"):
        torch.manual_seed(0)
        model = GPT(V, T, L, H, C).to(dev)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1, fused=True)
        fwd = torch.compile(model) if mode == "compile" else model
        idx = torch.randint(0, V, (B, T), device=dev)
        tgt = torch.randint(0, V, (B, T), device=dev)

        def step():
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = fwd(idx, tgt)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        for _ in range(3):
            step()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        steps = 10
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
        secs = time.perf_counter() - t0
        print(json.dumps({"impl": "torch_" + mode, "model": which, "B": B, "T": T,
                          "tokens_per_s": round(steps * B * T / secs),
                          "step_ms": round(1e3 * secs / steps, 1),
                          "peak_GiB": round(torch.cuda.max_memory_allocated() / 2 ** 30, 2)}),
              flush=True)
        del model, opt, fwd


if __name__ == "__main__":
    main()
