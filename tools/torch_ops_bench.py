"""PyTorch timings of the ops in bench/cuda_ops_bench.cpp, same sizes, same method (CUDA
events, warm-up, median), printed as the same JSON lines. Run on the GPU machine in the
same call as the C++ benchmark."""
import json

import torch
import torch.nn.functional as F


def time_ms(fn, warmup=5, iters=30):
    for _ in range(warmup):
        fn()
    ms = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        ms.append(a.elapsed_time(b))
    ms.sort()
    return ms[len(ms) // 2]


def report(name, ms, nbytes, flops):
    print(json.dumps({"impl": "torch", "op": name, "ms": round(ms, 4),
                      "GBps": round(nbytes / ms / 1e6, 1), "TFLOPs": round(flops / ms / 1e9, 1)}),
          flush=True)


def main():
    dev = "cuda"
    torch.manual_seed(0)
    with torch.no_grad():
        n = 64 * 1024 * 1024
        a, b = torch.randn(n, device=dev), torch.randn(n, device=dev)
        c = a.clone()
        report("copy_256MB", time_ms(lambda: c.copy_(a)), 2 * n * 4, 0)
        report("add_256MB", time_ms(lambda: a + b), 3 * n * 4, 0)
        report("mul_256MB", time_ms(lambda: a * b), 3 * n * 4, 0)
        report("gelu_256MB", time_ms(lambda: F.gelu(a, approximate="tanh")), 2 * n * 4, 0)
        del a, b, c
        R, C = 32768, 4096
        x = torch.randn(R, C, device=dev)
        report("sum_rows_32768x4096", time_ms(lambda: x.sum(1)), R * C * 4, 0)
        report("softmax_rows_32768x4096", time_ms(lambda: torch.softmax(x, 1)), 2 * R * C * 4, 0)
        del x
        R, C = 8 * 1024, 4096
        x = torch.randn(R, C, device=dev, dtype=torch.bfloat16)
        w, bias = torch.ones(C, device=dev, dtype=torch.bfloat16), torch.zeros(C, device=dev, dtype=torch.bfloat16)
        report("layer_norm_bf16_8192x4096", time_ms(lambda: F.layer_norm(x, (C,), w, bias)), 2 * R * C * 2, 0)
        N, V = 8192, 50257
        logits = torch.randn(N, V, device=dev)
        target = torch.randint(0, V, (N,), device=dev)
        report("cross_entropy_8192x50257", time_ms(lambda: F.cross_entropy(logits, target)), N * V * 4, 0)
    l = logits.detach().requires_grad_()

    def ce_fb():
        F.cross_entropy(l, target).backward()
        l.grad = None
    report("cross_entropy_fwd_bwd_8192x50257", time_ms(ce_fb), 3 * N * V * 4, 0)
    with torch.no_grad():
        n = 8192
        a = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
        b = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
        report("matmul_bf16_8192", time_ms(lambda: a @ b, 3, 10), 0, 2 * n ** 3)
    per = 124439808 // 4
    params = [torch.randn(per, device=dev, requires_grad=True) for _ in range(4)]
    for p in params:
        p.grad = torch.randn(per, device=dev)
    for fused in (False, True):
        opt = torch.optim.AdamW(params, fused=fused, foreach=not fused)
        report("adamw_step_124M" + ("_fused" if fused else "_foreach"), time_ms(opt.step, 3, 10),
               124439808 * 4 * 4 * 2, 0)


if __name__ == "__main__":
    main()
