"""Joins bench/flex_gpu_bench's JSON lines with tools/torch_flex_bench.py's (same card,
same run) and prints the microflex / PyTorch FlexAttention ratio per pattern and head dim.
A row whose two mask densities differ compares different masks: it is flagged, and the
script exits with status 1 after the table.
Usage: python3 tools/flex_bench_compare.py microflex.jsonl torch.jsonl
"""
import json, sys

def rows(path):
    out = {}
    for line in open(path):
        line = line.strip()
        if line.startswith("{"):
            r = json.loads(line)
            out[(r["pattern"], r["D"])] = r
    return out

mf, th = rows(sys.argv[1]), rows(sys.argv[2])
mismatched = []
print("| pattern | D | microflex fwd | Flex fwd | ratio | microflex fwd+bwd | Flex fwd+bwd | ratio |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for key, m in mf.items():
    t = th.get(key)
    if t is None:
        continue
    rf = m["fwd_tflops"] / t["flex_fwd_tflops"]
    rb = m["fwdbwd_tflops"] / t["flex_fwdbwd_tflops"]
    name = key[0]
    if abs(m["density"] - t["density"]) > 1e-3:
        name += f" (masks differ: density {m['density']:.4f} vs {t['density']:.4f})"
        mismatched.append(key)
    print(f"| {name} | {key[1]} | {m['fwd_tflops']} | {t['flex_fwd_tflops']} | {rf:.2f} | "
          f"{m['fwdbwd_tflops']} | {t['flex_fwdbwd_tflops']} | {rb:.2f} |")
if mismatched:
    print(f"{len(mismatched)} row(s) compare different masks", file=sys.stderr)
    sys.exit(1)
