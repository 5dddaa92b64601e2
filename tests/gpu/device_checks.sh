#!/usr/bin/env bash
# The CUDA checks of the GPU machine in one device call (docs/cuda.md, "How to build and run on the GPU machine"):
#   bash tests/gpu/device_checks.sh [tests|bench|all]        (default: all)
# Builds the kernels-only tree (build-gpu, or $WISP_GPU_BUILD; sm_90 unless $WISP_CUDA_ARCH) with every core, runs
# each CUDA test binary with its log in the output folder ($OUT on the device machine, else ./device-checks; the
# logs end up packed in logs.tar.gz there, since the device tool returns at most 8 files) and prints one line per
# binary; then (bench, all) the large-v2 decode-step benchmark with random weights — batch 1,
# 8, 16 and 32 with fp16 weights and caches, batch 32 with FP8 K/V and with int8 weights — appending the JSON
# records to step.jsonl and printing a table. $WISP_BENCH_ARGS is added to every benchmark run (an A/B switch such
# as --gemv-wgmma 0). Exits non-zero when the build or any test binary fails.
set -uo pipefail
cd "$(dirname "$0")/../.."
what=${1:-all}
out=${OUT:-device-checks}
build=${WISP_GPU_BUILD:-build-gpu}
logs=$out/logs
mkdir -p "$logs"
status=0
# The configure, build and test logs as one file next to step.jsonl, however the script ends.
trap 'tar -C "$out" -czf "$out/logs.tar.gz" logs && rm -rf "$logs"' EXIT

cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES="${WISP_CUDA_ARCH:-90}" \
  -DWISP_KERNELS_ONLY=ON -DWISP_BUILD_TESTS=ON -DWISP_BUILD_BENCH=ON >"$logs/configure.log" 2>&1 ||
  { tail -20 "$logs/configure.log"; exit 1; }
tests=(cuda_kernels_test cuda_gemv_test cuda_kv_quant_test cuda_log_mel_test cuda_token_select_test
  gpu_whisper_batch_test)
cmake --build "$build" -j"$(nproc)" --target "${tests[@]}" wisp_gpu_bench >"$logs/build.log" 2>&1 ||
  { tail -40 "$logs/build.log"; exit 1; }
echo "built in ${SECONDS} s"

if [ "$what" != bench ]; then
  for t in "${tests[@]}"; do
    start=$SECONDS
    timeout "${WISP_TEST_TIMEOUT:-300}" "$build/tests/$t" >"$logs/$t.log" 2>&1
    rc=$?
    [ "$rc" = 0 ] || status=1
    summary=$(grep -E '^\[  (PASSED|FAILED|SKIPPED) +\] [0-9]+ tests?' "$logs/$t.log" | sed 's/, listed below://' |
      tr '\n' ' ')
    echo "$t: exit $rc, $((SECONDS - start)) s: ${summary:-no summary (see logs/$t.log in logs.tar.gz)}"
    grep -E '^\[  FAILED  \] [A-Za-z]' "$logs/$t.log" | head -5
  done
fi

if [ "$what" != tests ]; then
  bench=$(find "$build" -name wisp_gpu_bench -type f | head -1)
  run() {
    # shellcheck disable=SC2086  # $WISP_BENCH_ARGS holds several words
    timeout 120 "$bench" --random large-v2 --tokens 100 --repeats 3 --json "$@" ${WISP_BENCH_ARGS:-} |
      tail -1 >>"$out/step.jsonl" || status=1
  }
  for b in 1 8 16 32; do run --batch "$b"; done
  run --batch 32 --kv-cache fp8
  run --batch 32 --weights int8
  python3 - "$out/step.jsonl" <<'EOF'
import json, sys
print("| batch | weights | K/V | ms/step | total ms | audio-s/s | peak GB |")
print("|---|---|---|---|---|---|---|")
for line in open(sys.argv[1]):
    try:
        r = json.loads(line)
    except ValueError:
        continue
    weights = r["model"].split("random ")[-1].split(" weights")[0]
    print(f"| {r['batch']} | {weights} | {r['kv_cache']} | {r['decode_ms_per_step']:.3f} | {r['total_ms']:.1f} | "
          f"{r['audio_s_per_s']:.0f} | {r['peak_mem_gb']:.2f} |")
EOF
fi
echo "done in ${SECONDS} s"
exit $status
