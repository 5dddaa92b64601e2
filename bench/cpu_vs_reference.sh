#!/usr/bin/env bash
# CPU benchmark: wisp vs the reference (faster-whisper / CTranslate2, fp32) on the same weights, the same
# audio and the same thread count, run one after the other on an otherwise idle machine.
#   bench/cpu_vs_reference.sh [MODEL=base] [THREADS=2] [LANG=en]
# Writes out/bench/<model>.{wisp,ref}.json and prints a markdown table (wall time, RTF, WER, identity).
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-base}
THREADS=${2:-2}
LANG_FILTER=${3:-en}
DATA=${WISP_SHARED_DATA:-../shared/data}/eval
OUT=out/bench
mkdir -p "$OUT"
# The dev subset: rows of the manifest in the requested language, with absolute paths, written under out/
# (the shared data folder is read-only by intent and must stay untouched).
MANIFEST=$OUT/manifest.$LANG_FILTER.tsv
awk -F'\t' -v OFS='\t' -v d="$(cd "$DATA" && pwd)" -v l="$LANG_FILTER" \
  'NR==1 || $2==l || l=="all" { if (NR>1) $1 = d "/" $1; print }' "$DATA/manifest.tsv" > "$MANIFEST"

# Greedy decoding without fallback on both sides (ref_transcribe.py's default; wisp's default is beam 5 with
# the temperature fallback, as the reference CLI's — add e.g. --beam-size 5 to both for that mode).
build/wisp eval "$MANIFEST" -m "$MODEL" -t "$THREADS" --beam-size 1 --temperature 0 \
  --save "$OUT/$MODEL.wisp.json" --json > "$OUT/$MODEL.wisp.summary.json"
.venv/bin/python tools/reference/ref_transcribe.py --model "models/ct2/$MODEL" --manifest "$MANIFEST" \
  --threads "$THREADS" --out "$OUT/$MODEL.ref.json" > /dev/null
build/wisp eval "$MANIFEST" --hyp-json "$OUT/$MODEL.ref.json" --json > "$OUT/$MODEL.ref.summary.json"
.venv/bin/python tools/compare_transcripts.py "$OUT/$MODEL.ref.json" "$OUT/$MODEL.wisp.json" --json "$OUT/$MODEL.compare.json" \
  > "$OUT/$MODEL.compare.txt"

.venv/bin/python - "$OUT" "$MODEL" "$THREADS" "$LANG_FILTER" <<'PY'
import json, sys
out, model, threads, lang = sys.argv[1:]
w = json.load(open(f"{out}/{model}.wisp.summary.json"))
r = json.load(open(f"{out}/{model}.ref.summary.json"))
ref = json.load(open(f"{out}/{model}.ref.json"))
c = json.load(open(f"{out}/{model}.compare.json"))
ref_wall = ref["totals"]["transcribe_wall_s"]
audio = w["audio_s"]
print(f"| model | threads | set | files | audio s | wisp wall s | ref wall s | wisp/ref | wisp RTF | ref RTF | wisp WER | ref WER | token-identical |")
print(f"|---|---|---|---|---|---|---|---|---|---|---|---|---|")
print(f"| {model} | {threads} | {lang} | {w['files']} | {audio:.1f} | {w['wall_s']:.1f} | {ref_wall:.1f} | {w['wall_s']/ref_wall:.2f} | "
      f"{w['wall_s']/audio:.3f} | {ref_wall/audio:.3f} | {w['wer']:.4f} | {r['wer']:.4f} | {c['identical']}/{c['files']} |")
PY
