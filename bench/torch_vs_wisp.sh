#!/usr/bin/env bash
# wisp bench (GPU runner) against the PyTorch baseline (bench/torch_baseline.py) on the same shapes, in one
# run on one GPU. Writes $OUT/torch_vs_wisp.md (a table with ratios) and $OUT/torch_vs_wisp.jsonl.
#   SIZE=large-v2 BATCHES="1 32" NTOK=100 WISP_BENCH=build-gpu/wisp_gpu_bench bench/torch_vs_wisp.sh
# WISP_BENCH is `wisp_gpu_bench` (kernels-only builds) or "wisp bench" (full builds). MODES lists the wisp
# variants, each "weights[:flag[:value]...]" (e.g. "fp16 fp16:--no-gemv int8 int4 int4:--group-size:128"); the
# first one is the one the PyTorch ratios are taken against. TORCH=0 skips PyTorch (wisp variants only, e.g.
# MODES="fp16 fp16:--no-pdl fp16:--norms:separate int8" for a quick A/B of the decode step).
set -euo pipefail
SIZE=${SIZE:-large-v2}
BATCHES=${BATCHES:-"1 32"}
NTOK=${NTOK:-100}
REPEATS=${REPEATS:-5}
WISP_BENCH=${WISP_BENCH:-build-gpu/wisp_gpu_bench}
MODES=${MODES:-fp16}
TORCH=${TORCH:-1}
OUT=${OUT:-.}
here=$(cd "$(dirname "$0")" && pwd)
jsonl=$OUT/torch_vs_wisp.jsonl
: > "$jsonl"
for b in $BATCHES; do
  for mode in $MODES; do
    weights=${mode%%:*}
    extra=$([ "$mode" != "$weights" ] && echo "${mode#*:}" | tr ':' ' ' || true)
    # shellcheck disable=SC2086
    $WISP_BENCH --random "$SIZE" --batch "$b" --tokens "$NTOK" --repeats "$REPEATS" --weights "$weights" $extra \
      --json | python3 -c "import json,sys; r=json.loads(sys.stdin.read()); r['mode']='$mode'; print(json.dumps(r))" \
      | tee -a "$jsonl"
  done
done
if [ "$TORCH" = 0 ]; then
  echo "TORCH=0: PyTorch columns left empty" >&2
elif python3 -c "import torch, transformers" 2>/dev/null; then
  SIZE=$SIZE NTOK=$NTOK REPEATS=$REPEATS BATCHES=$(echo $BATCHES | tr ' ' ',') python3 "$here/torch_baseline.py" \
    | grep '^{' | tee -a "$jsonl" || echo "torch baseline failed" >&2
else
  echo "no torch/transformers here: PyTorch columns left empty" >&2
fi
python3 - "$jsonl" "$OUT/torch_vs_wisp.md" "$SIZE" "$NTOK" "$MODES" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
modes = sys.argv[5].split()
w = {(r["batch"], r["mode"]): r for r in rows if r["engine"] == "wisp"}
t = {r["batch"]: r for r in rows if r["engine"] == "torch"}
card = next((r["card"] for r in rows), "?")
batches = sorted({b for b, _ in w})
out = [f"# wisp vs PyTorch: {sys.argv[3]}, random weights, {sys.argv[4]} greedy steps, {card}", "",
       "PyTorch: " + (", ".join(f"{k} {v}" for k, v in next(iter(t.values())).items() if k in ("torch", "transformers", "attn")) if t else "not run"),
       "", "| batch | metric | " + " | ".join(f"wisp {m}" for m in modes) + f" | PyTorch fp16 | PyTorch / wisp {modes[0]} |",
       "|---|---|" + "---|" * (len(modes) + 2)]
for b in batches:
    for k in ["mel_ms", "encoder_ms", "decode_ms_per_step", "total_ms", "audio_s_per_s", "weights_gb", "peak_mem_gb"]:
        vals = [w.get((b, m), {}).get(k) for m in modes]
        tv = t.get(b, {}).get(k)
        ratio = ""
        if vals[0] and tv:
            ratio = f"{(vals[0] / tv if k == 'audio_s_per_s' else tv / vals[0]):.2f}×"
        cells = " | ".join("—" if v is None else f"{v:g}" for v in vals)
        out.append(f"| {b} | {k} | {cells} | {tv if tv is not None else '—'} | {ratio} |")
for b in batches:
    g = t.get(b, {})
    if "generate_total_ms" in g and w.get((b, modes[0])):
        wt = w[(b, modes[0])]["total_ms"]
        cells = [f"{wt:g} (total)"] + [""] * (len(modes) - 1) + [str(g["generate_total_ms"]), f"{g['generate_total_ms'] / wt:.2f}×"]
        out.append("| " + " | ".join([str(b), "HF generate total_ms"] + cells) + " |")
    elif "generate_error" in g:
        cells = [""] * len(modes) + [f"failed: {g['generate_error']}", ""]
        out.append("| " + " | ".join([str(b), "HF generate"] + cells) + " |")
out += ["", "Ratios are speed-ups of wisp (PyTorch time / wisp time; for audio_s_per_s wisp / PyTorch; for memory PyTorch / wisp).",
        "wisp total_ms = GPU log-mel + encoder + cross-K/V + N decode steps; PyTorch (no mel) computes the cross-K/V inside its first step.",
        "wisp peak_mem_gb is cudaMemGetInfo growth (weights + all buffers + cuBLAS workspace); PyTorch's is max_memory_allocated."]
open(sys.argv[2], "w").write("\n".join(out) + "\n")
print("\n".join(out))
PY
