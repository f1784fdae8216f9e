"""Generates tests/data/flex_attention_fixtures.safetensors with PyTorch's FlexAttention.

Runs where PyTorch is installed (the GPU machine): eager flex_attention in float64 for a
dozen variants, saving inputs, out, lse and the gradients (dq, dk, dv, and dbias for
learnable biases) under "<variant>.<name>". microflex's tests rebuild the same variants
in C++ and compare. Usage: python3 tools/make_flex_fixtures.py [out_path]
"""
import json
import struct
import sys

import torch
from torch.nn.attention.flex_attention import (and_masks, create_block_mask,
                                               flex_attention, or_masks)

DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.int32: "I32", torch.int64: "I64"}


def save_safetensors(path, tensors, metadata):
    header, blobs, offset = {"__metadata__": metadata}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        data = t.view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def main():
    out_path = sys.argv[1] if len(sys.argv) > 1 else "tests/data/flex_attention_fixtures.safetensors"
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(1234)
    f64 = dict(dtype=torch.float64, device=dev)
    tensors, meta = {}, {}

    def causal(b, h, q, kv):
        return q >= kv

    def run(name, B, Hq, Hkv, M, N, D, Dv=None, score_mod=None, mask_mod=None, block=16,
            scale=None, extra=None, learnable=None):
        Dv = Dv or D
        q = torch.randn(B, Hq, M, D, **f64).requires_grad_()
        k = torch.randn(B, Hkv, N, D, **f64).requires_grad_()
        v = torch.randn(B, Hkv, N, Dv, **f64).requires_grad_()
        bm = None
        if mask_mod is not None:
            bm = create_block_mask(mask_mod, None, None, M, N, device=dev, BLOCK_SIZE=block)
        out, lse = flex_attention(q, k, v, score_mod=score_mod, block_mask=bm, scale=scale,
                                  enable_gqa=Hq != Hkv, return_lse=True)
        g = torch.randn_like(out)
        params = [q, k, v] + ([learnable] if learnable is not None else [])
        grads = torch.autograd.grad(out, params, g)
        for key, t in [("q", q), ("k", k), ("v", v), ("out", out), ("lse", lse), ("grad_out", g),
                       ("dq", grads[0]), ("dk", grads[1]), ("dv", grads[2])]:
            tensors[f"{name}.{key}"] = t
        if learnable is not None:
            tensors[f"{name}.bias"] = learnable
            tensors[f"{name}.dbias"] = grads[3]
        for key, t in (extra or {}).items():
            tensors[f"{name}.{key}"] = t
        meta[name] = json.dumps({"block": block, "scale": scale})

    S = 45
    run("causal", 1, 2, 2, S, S, 8, mask_mod=causal)
    W = 12
    run("sliding_window", 1, 2, 2, S, S, 8,
        mask_mod=and_masks(causal, lambda b, h, q, kv: q - kv <= W))
    P = 18
    run("prefix_lm", 1, 2, 2, S, S, 8,
        mask_mod=or_masks(causal, lambda b, h, q, kv: kv < P))
    doc = torch.tensor([0] * 12 + [1] * 20 + [2] * 13, dtype=torch.int32, device=dev)
    run("document", 1, 2, 2, S, S, 8, extra={"doc_ids": doc},
        mask_mod=lambda b, h, q, kv: (doc[q] == doc[kv]) & (q >= kv))
    H = 4
    slopes = torch.tensor([2.0 ** (-8.0 * (i + 1) / H) for i in range(H)], **f64)
    run("alibi", 1, H, H, S, S, 8, extra={"slopes": slopes}, mask_mod=causal,
        score_mod=lambda s, b, h, q, kv: s + slopes[h] * (kv - q))
    run("softcap", 1, 2, 2, S, S, 8, score_mod=lambda s, b, h, q, kv: 2.0 * torch.tanh(s / 2.0))
    rel = (0.5 * torch.randn(2 * S - 1, **f64)).requires_grad_()
    run("relative_bias", 1, 2, 2, S, S, 8, learnable=rel,
        score_mod=lambda s, b, h, q, kv: s + rel[q - kv + S - 1])
    bias = (0.5 * torch.randn(S, S, **f64)).requires_grad_()
    run("learnable_bias", 1, 2, 2, S, S, 8, learnable=bias, mask_mod=causal,
        score_mod=lambda s, b, h, q, kv: s + bias[q, kv])
    run("gqa", 1, 4, 2, S, S, 8, mask_mod=causal)
    run("m_ne_n", 1, 2, 2, 30, 52, 8, Dv=12)
    run("tail_128", 1, 2, 2, 130, 130, 4, mask_mod=causal, block=128)
    run("custom_scale", 1, 2, 2, S, S, 8, scale=0.3, mask_mod=causal)
    save_safetensors(out_path, tensors, meta)
    print(f"wrote {len(tensors)} tensors for {len(meta)} variants to {out_path}")


if __name__ == "__main__":
    main()
