#!/usr/bin/env bash
# Prepares the GPU transcript check (docs/cuda.md, "End to end on the GPU machine") in parts that each fit the
# device machine's 64 MiB carry next to the working tree, and prints the device commands, one per part.
#   [REUSE_KIT=1] [LANES=2|4] [WISP_GPU_KIT_MODES=greedy,...] tests/gpu/make_kit.sh MODEL.wisp [MANIFEST.tsv] [OUT]
# OUT (default build-kit-data, git-ignored) must be inside the repository, since carried paths are relative to
# its root. The model travels as LANES byte lanes (byte i of the file goes to lane i mod LANES, each xz'd: the
# fp16 high bytes compress well): 2 lanes for tiny (73 MB), 4 for base (146 MB). Part 1 holds the check binary
# (static CPU dependencies), the CPU transcripts and what else fits; the other parts the remaining lanes and the
# clips' samples. Run the device commands back to back: the parts are copied into build-kitdev/, which
# survives only while the machine stays warm (30 s). For --kv-cache int8 runs, MODEL must come from
# `wisp calibrate`. WISP_GPU_KIT_MODES records only those modes (gpu_transcript_modes.h; the check skips the
# others): a larger model's CPU transcripts in a few minutes.
set -euo pipefail
MODEL=$1
MANIFEST=${2:-../shared/data/eval/manifest.tsv}
OUT=${3:-build-kit-data}
LANES=${LANES:-2}
cmake -S . -B build-kit -DCMAKE_BUILD_TYPE=Release -DWISP_STATIC_DEPS=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
  -DWISP_BUILD_BENCH=OFF >/dev/null
cmake --build build-kit -j"$(nproc)" --target gpu_transcripts_test gpu_kit_make
# REUSE_KIT=1 keeps the CPU transcripts and clips of an earlier run with the same model and manifest (4 min of
# CPU on 2 cores for tiny.en) and only rebuilds the binary and the parts: for re-checking a GPU-side change.
# Only kit/ and part*/ of OUT are replaced: OUT may hold other files (the model itself, say).
rm -rf "$OUT"/part*
if [ "${REUSE_KIT:-0}" = 1 ] && [ -f "$OUT/kit/expected.json" ] && [ "$OUT/kit/expected.json" -nt "$MODEL" ]; then
  echo "reusing $OUT/kit"
else
  rm -rf "$OUT/kit"
  mkdir -p "$OUT/kit"
  OMP_WAIT_POLICY=passive build-kit/tests/gpu_kit_make "$MANIFEST" "$MODEL" "$OUT/kit"
fi
staging=$OUT/staging
rm -rf "$staging" && mkdir -p "$staging"
xz -T0 -6 -c build-kit/tests/gpu_transcripts_test >"$staging/gpu_transcripts_test.xz"
# The OpenMP runtime travels with the binary (the GPU machine's image need not have GCC's libgomp).
cp "$(ldd build-kit/tests/gpu_transcripts_test | awk '/libgomp/ {print $3}')" "$staging/"
xz -T0 -6 -c "$OUT/kit/expected.json" >"$staging/expected.json.xz"
tar -C "$OUT/kit" -cf - clips | xz -T0 -6 >"$staging/clips.tar.xz"
# Split the model into lanes, then pack everything into parts of at most 46 MB (the tree takes ~15 MB of the
# 64 MiB carry), part 1 first with the binary, the OpenMP runtime and the transcripts.
python3 - "$MODEL" "$staging" "$OUT" "$LANES" <<'PY'
import lzma, os, shutil, sys
model, staging, out, lanes = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
data = open(model, "rb").read()
for i in range(lanes):
    open(f"{staging}/lane{i}.xz", "wb").write(lzma.compress(data[i::lanes], preset=6))
cap = 46 << 20
first = ["gpu_transcripts_test.xz", "libgomp.so.1", "expected.json.xz"]
rest = sorted((f for f in os.listdir(staging) if f not in first), key=lambda f: -os.path.getsize(f"{staging}/{f}"))
parts = [list(first)]
size = lambda names: sum(os.path.getsize(f"{staging}/{n}") for n in names)
for f in rest:  # first fit, largest first
    for p in parts:
        if size(p) + os.path.getsize(f"{staging}/{f}") <= cap:
            p.append(f)
            break
    else:
        parts.append([f])
for k, p in enumerate(parts, 1):
    os.makedirs(f"{out}/part{k}", exist_ok=True)
    for f in p:
        shutil.move(f"{staging}/{f}", f"{out}/part{k}/{f}")
    print(f"part{k}: {', '.join(p)} ({sum(os.path.getsize(f'{out}/part{k}/{f}') for f in p) >> 20} MB)")
PY
rmdir "$staging"
n_parts=$(ls -d "$OUT"/part* | wc -l)
echo "device call 1 (carry [\"$OUT/part1\"]):"
echo "  rm -rf build-kitdev && mkdir -p build-kitdev && cp -r $OUT/part1/. build-kitdev/ && xz -dc build-kitdev/gpu_transcripts_test.xz >build-kitdev/gpu_transcripts_test && chmod +x build-kitdev/gpu_transcripts_test"
for k in $(seq 2 "$n_parts"); do
  echo "device call $k (carry [\"$OUT/part$k\"]), right after:"
  if [ "$k" -lt "$n_parts" ]; then echo "  cp -r $OUT/part$k/. build-kitdev/"; fi
done
[ "$n_parts" -gt 1 ] || echo "device call 1, continued:"
cat <<CMDS
  $([ "$n_parts" -gt 1 ] && echo "cp -r $OUT/part$n_parts/. build-kitdev/ && ")K=build-kitdev/kit; mkdir -p \$K && python3 -c "import lzma; L=$LANES; lanes=[lzma.decompress(open(f'build-kitdev/lane{i}.xz','rb').read()) for i in range(L)]; out=bytearray(sum(map(len, lanes))); [out.__setitem__(slice(i, None, L), lanes[i]) for i in range(L)]; open('\$K/model.wisp','wb').write(out)" && tar -C \$K -xJf build-kitdev/clips.tar.xz && xz -dc build-kitdev/expected.json.xz >\$K/expected.json && LD_LIBRARY_PATH=/usr/local/cuda/lib64:build-kitdev WISP_GPU_KIT=\$K WISP_GPU_KIT_OUT=\$OUT ./build-kitdev/gpu_transcripts_test
CMDS
