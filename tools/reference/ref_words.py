#!/usr/bin/env python3
"""Reference word timestamps from faster-whisper (CTranslate2), greedy, temperature 0, fp32, CPU.

For each clip it runs

    WhisperModel(DIR, device="cpu", compute_type="float32", cpu_threads=T, num_workers=1)
    model.transcribe(path, beam_size=1, best_of=1, temperature=0.0,
                     condition_on_previous_text=True, vad_filter=False,
                     without_timestamps=False, word_timestamps=True,
                     language=None (multilingual: auto-detect) | "en" (English-only))

and records, besides the yielded segments with their words, every call of
`WhisperModel.add_word_timestamps` (one per 30 s window): its inputs (window seek, num_frames,
SOT sequence, language, last_speech_timestamp, the window's segments with their tokens and
timestamps, before any segment is dropped) and its outputs (segment start/end after the
adjustment, words).  The CTranslate2 `align()` result of the call is kept in compact form: for
every row of the DTW matrix (the <|notimestamps|> row, then one per text token) the first
encoder frame the path reaches in that row, and the text-token probabilities.

So a test can feed its own alignment the same window and tokens and compare word for word.

Usage:
  ref_words.py --model DIR --clips DIR_OF_AUDIO FILE [FILE ...] --out OUT.json [--threads 2]
"""
import argparse
import copy
import dataclasses
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

_INT_LIST = re.compile(r"\[\s*(-?\d+(?:,\s*-?\d+)*)\s*\]")


def write_json(path: Path, obj) -> None:
    text = json.dumps(obj, ensure_ascii=False, indent=1)
    text = _INT_LIST.sub(lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", text)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(text + "\n")
    os.replace(tmp, path)


class AlignRecorder:
    """Stands in for the ctranslate2 Whisper object: forwards everything, remembers align() results."""

    def __init__(self, inner):
        self._inner = inner
        self.last = None

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def align(self, *args, **kwargs):
        results = self._inner.align(*args, **kwargs)
        self.last = []
        for r in results:
            first_frame = {}
            for i, j in r.alignments:
                first_frame.setdefault(int(i), int(j))
            rows = [first_frame[i] for i in range(len(first_frame))]
            self.last.append({
                "row_first_frame": rows,
                "text_token_probs": [float(p) for p in r.text_token_probs],
            })
        return results


def word_dict(w):
    return {"word": w["word"], "start": float(w["start"]), "end": float(w["end"]),
            "probability": float(w["probability"])}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="CTranslate2 Whisper model directory")
    ap.add_argument("--clips", required=True, help="folder the clip paths are relative to")
    ap.add_argument("files", nargs="+", help="clip paths relative to --clips")
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import ctranslate2
    import faster_whisper
    import numpy
    from faster_whisper import WhisperModel

    model = WhisperModel(args.model, device="cpu", compute_type="float32", cpu_threads=args.threads,
                         num_workers=1)
    multilingual = bool(model.model.is_multilingual)
    recorder = AlignRecorder(model.model)
    model.model = recorder

    calls = []
    original = model.add_word_timestamps

    def add_word_timestamps(segments, tokenizer, encoder_output, num_frames, prepend, append,
                            last_speech_timestamp):
        assert len(segments) == 1, "the sequential loop aligns one window per call"
        window = segments[0]
        rec = {
            "seek": window[0]["seek"],
            "num_frames": int(num_frames),
            "sot_sequence": list(tokenizer.sot_sequence),
            "language": tokenizer.language_code,
            "last_speech_timestamp": float(last_speech_timestamp),
            "segments_in": [{"start": float(s["start"]), "end": float(s["end"]),
                             "tokens": list(s["tokens"])} for s in copy.deepcopy(window)],
        }
        recorder.last = None
        out = original(segments, tokenizer, encoder_output, num_frames, prepend, append,
                       last_speech_timestamp)
        rec["align"] = recorder.last[0] if recorder.last else None
        rec["segments_out"] = [{"start": float(s["start"]), "end": float(s["end"]),
                                "words": [word_dict(w) for w in s.get("words", [])]} for s in window]
        calls.append(rec)
        return out

    model.add_word_timestamps = add_word_timestamps

    options = dict(task="transcribe", beam_size=1, best_of=1, temperature=0.0,
                   condition_on_previous_text=True, vad_filter=False, without_timestamps=False,
                   word_timestamps=True)
    result = {
        "tool": "tools/reference/ref_words.py",
        "model_dir": str(Path(args.model).resolve()),
        "model_multilingual": multilingual,
        "transcribe_options": dict(options, language=None if multilingual else "en",
                                   note="all other options at faster-whisper defaults "
                                        "(prepend/append punctuations, hallucination_silence_threshold None)"),
        "versions": {"ctranslate2": ctranslate2.__version__, "faster_whisper": faster_whisper.__version__,
                     "numpy": numpy.__version__, "python": platform.python_version()},
        "files": [],
    }
    out_path = Path(args.out)
    for rel in args.files:
        calls.clear()
        t = time.perf_counter()
        segments, info = model.transcribe(str(Path(args.clips) / rel),
                                          language=None if multilingual else "en", **options)
        segs = [{"id": s.id, "seek": s.seek, "start": s.start, "end": s.end, "text": s.text,
                 "tokens": list(s.tokens), "words": [word_dict(dataclasses.asdict(w)) for w in (s.words or [])]}
                for s in segments]
        result["files"].append({"file": rel, "language": info.language, "duration": info.duration,
                                "windows": copy.deepcopy(calls), "segments": segs})
        print(f"{rel}: {time.perf_counter() - t:.1f}s, {len(calls)} windows, {len(segs)} segments",
              file=sys.stderr, flush=True)
        write_json(out_path, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
