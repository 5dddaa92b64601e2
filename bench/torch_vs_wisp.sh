#!/usr/bin/env bash
# wisp bench (GPU runner) against the PyTorch baseline (bench/torch_baseline.py) on the same shapes, in one
# run on one GPU. Writes $OUT/torch_vs_wisp.md (a table with ratios) and $OUT/torch_vs_wisp.jsonl.
#   SIZE=large-v2 BATCHES="1 32" NTOK=100 WISP_BENCH=build-gpu/wisp_gpu_bench bench/torch_vs_wisp.sh
# WISP_BENCH is `wisp_gpu_bench` (kernels-only builds) or "wisp bench" (full builds).
set -euo pipefail
SIZE=${SIZE:-large-v2}
BATCHES=${BATCHES:-"1 32"}
NTOK=${NTOK:-100}
REPEATS=${REPEATS:-5}
WISP_BENCH=${WISP_BENCH:-build-gpu/wisp_gpu_bench}
OUT=${OUT:-.}
here=$(cd "$(dirname "$0")" && pwd)
jsonl=$OUT/torch_vs_wisp.jsonl
: > "$jsonl"
for b in $BATCHES; do
  $WISP_BENCH --random "$SIZE" --batch "$b" --tokens "$NTOK" --repeats "$REPEATS" --json | tee -a "$jsonl"
done
if python3 -c "import torch, transformers" 2>/dev/null; then
  SIZE=$SIZE NTOK=$NTOK REPEATS=$REPEATS BATCHES=$(echo $BATCHES | tr ' ' ',') python3 "$here/torch_baseline.py" \
    | grep '^{' | tee -a "$jsonl" || echo "torch baseline failed" >&2
else
  echo "no torch/transformers here: PyTorch columns left empty" >&2
fi
python3 - "$jsonl" "$OUT/torch_vs_wisp.md" "$SIZE" "$NTOK" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
w = {r["batch"]: r for r in rows if r["engine"] == "wisp"}
t = {r["batch"]: r for r in rows if r["engine"] == "torch"}
card = next((r["card"] for r in rows), "?")
out = [f"# wisp vs PyTorch: {sys.argv[3]}, random fp16 weights, {sys.argv[4]} greedy steps, {card}", "",
       "PyTorch: " + (", ".join(f"{k} {v}" for k, v in next(iter(t.values())).items() if k in ("torch", "transformers", "attn")) if t else "not run"),
       "", "| batch | metric | wisp | PyTorch | PyTorch / wisp |", "|---|---|---|---|---|"]
for b in sorted(w):
    for k, unit in [("encoder_ms", "ms"), ("decode_ms_per_step", "ms"), ("total_ms", "ms"), ("audio_s_per_s", ""), ("peak_mem_gb", "GB")]:
        wv = w[b].get(k); tv = t.get(b, {}).get(k)
        ratio = ""
        if wv and tv:
            ratio = f"{(wv / tv if k == 'audio_s_per_s' else tv / wv):.2f}×"
        out.append(f"| {b} | {k} | {wv} | {tv if tv is not None else '—'} | {ratio} |")
out += ["", "Ratios are speed-ups of wisp (PyTorch time / wisp time; for audio_s_per_s wisp / PyTorch; for memory PyTorch / wisp).",
        "wisp total_ms = encoder + cross-K/V + N decode steps; PyTorch computes the cross-K/V inside its first step.",
        "wisp peak_mem_gb is cudaMemGetInfo growth (weights + all buffers + cuBLAS workspace); PyTorch's is max_memory_allocated."]
open(sys.argv[2], "w").write("\n".join(out) + "\n")
print("\n".join(out))
PY
