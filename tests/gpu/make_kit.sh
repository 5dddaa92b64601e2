#!/usr/bin/env bash
# Prepares the GPU transcript check (docs/cuda.md, "End to end on the GPU machine") in two parts that each fit
# the device machine's 64 MiB carry next to the working tree, and prints the two device commands.
#   [REUSE_KIT=1] tests/gpu/make_kit.sh MODEL.wisp [MANIFEST.tsv] [OUT]   (OUT: default build-kit-data,
#   git-ignored; it must be inside the repository, since carried paths are relative to its root)
# Part 1: the check binary (static CPU dependencies), the CPU transcripts, the model's even bytes.
# Part 2: the model's odd bytes (the fp16 high bytes, xz) and the clips' samples (tar.xz).
# Run the two device calls back to back: part 1 is copied into build-kitdev/, which survives only while the
# machine stays warm. For --kv-cache int8 runs, MODEL must come from `wisp calibrate`.
set -euo pipefail
MODEL=$1
MANIFEST=${2:-../shared/data/eval/manifest.tsv}
OUT=${3:-build-kit-data}
cmake -S . -B build-kit -DCMAKE_BUILD_TYPE=Release -DWISP_STATIC_DEPS=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
  -DWISP_BUILD_BENCH=OFF >/dev/null
cmake --build build-kit -j"$(nproc)" --target gpu_transcripts_test gpu_kit_make
# REUSE_KIT=1 keeps the CPU transcripts and clips of an earlier run with the same model and manifest (4 min of
# CPU on 2 cores for tiny.en) and only rebuilds the binary and the parts: for re-checking a GPU-side change.
if [ "${REUSE_KIT:-0}" = 1 ] && [ -f "$OUT/kit/expected.json" ] && [ "$OUT/kit/expected.json" -nt "$MODEL" ]; then
  rm -rf "$OUT/part1" "$OUT/part2"
  mkdir -p "$OUT/part1" "$OUT/part2"
else
  rm -rf "$OUT"
  mkdir -p "$OUT/kit" "$OUT/part1" "$OUT/part2"
  OMP_WAIT_POLICY=passive build-kit/tests/gpu_kit_make "$MANIFEST" "$MODEL" "$OUT/kit"
fi
python3 - "$MODEL" "$OUT" <<'PY'
import lzma, sys
data = open(sys.argv[1], "rb").read()
open(f"{sys.argv[2]}/part1/model.lo", "wb").write(data[0::2])
open(f"{sys.argv[2]}/part2/model.hi.xz", "wb").write(lzma.compress(data[1::2], preset=6))
PY
xz -T0 -6 -c build-kit/tests/gpu_transcripts_test >"$OUT/part1/gpu_transcripts_test.xz"
# The OpenMP runtime travels with the binary (the GPU machine's image need not have GCC's libgomp).
cp "$(ldd build-kit/tests/gpu_transcripts_test | awk '/libgomp/ {print $3}')" "$OUT/part1/"
xz -T0 -6 -c "$OUT/kit/expected.json" >"$OUT/part1/expected.json.xz"
tar -C "$OUT/kit" -cf - clips | xz -T0 -6 >"$OUT/part2/clips.tar.xz"
du -sh "$OUT/part1" "$OUT/part2"
cat <<CMDS
device call 1 (carry ["$OUT/part1"]):
  rm -rf build-kitdev && mkdir -p build-kitdev && cp -r $OUT/part1/. build-kitdev/ && xz -dc build-kitdev/gpu_transcripts_test.xz >build-kitdev/gpu_transcripts_test && chmod +x build-kitdev/gpu_transcripts_test
device call 2 (carry ["$OUT/part2"]), right after:
  K=build-kitdev/kit; mkdir -p \$K && cp -r $OUT/part2/. build-kitdev/ && python3 -c "import lzma; lo=open('build-kitdev/model.lo','rb').read(); hi=lzma.decompress(open('build-kitdev/model.hi.xz','rb').read()); out=bytearray(len(lo)+len(hi)); out[0::2]=lo; out[1::2]=hi; open('\$K/model.wisp','wb').write(out)" && tar -C \$K -xJf build-kitdev/clips.tar.xz && xz -dc build-kitdev/expected.json.xz >\$K/expected.json && LD_LIBRARY_PATH=/usr/local/cuda/lib64:build-kitdev WISP_GPU_KIT=\$K WISP_GPU_KIT_OUT=\$OUT ./build-kitdev/gpu_transcripts_test
CMDS
