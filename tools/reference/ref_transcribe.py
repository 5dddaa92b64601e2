#!/usr/bin/env python3
"""Reference transcripts from faster-whisper (CTranslate2), fp32, CPU.

This is the behaviour wisp must reproduce token-for-token.  For every file of one or more
eval manifests it runs

    WhisperModel(DIR, device="cpu", compute_type="float32", cpu_threads=T, num_workers=1)
    model.transcribe(path, beam_size=1, best_of=1, temperature=0.0,
                     condition_on_previous_text=True, vad_filter=False,
                     without_timestamps=False, word_timestamps=False,
                     language=None (multilingual: auto-detect) | "en" (English-only))

with every other option at faster-whisper's defaults, and records per file the detected
language, duration, wall time (transcribe() + consuming the segment generator; the model load
is excluded, audio decoding is included) and every segment with its tokens and scores.

Without decoding options this is greedy decoding at temperature 0 with no fallback (the
foundation's fixtures).  The decoding options below change that, e.g. beam search as the
reference CLI runs it:  --beam-size 5   (temperature stays 0.0 unless --temperature is given;
--temperature 0,0.2,0.4,0.6,0.8,1.0 --best-of 5 gives faster-whisper's full defaults).

Usage:
  ref_transcribe.py --model DIR --manifest TSV [--manifest TSV2] --out OUT.json
                    [--threads 2] [--limit N] [--only SUBSTRING ...] [--language-from-manifest]
                    [--beam-size N] [--best-of N] [--patience P] [--length-penalty L]
                    [--temperature T[,T2,...]] [--compression-ratio-threshold X|none]
                    [--logprob-threshold X|none] [--no-speech-threshold X|none]
                    [--condition-on-previous-text true|false] [--prompt-reset-on-temperature X]
                    [--initial-prompt TEXT] [--prefix TEXT] [--suppress-tokens "-1"|"1,2,3"|""]
                    [--clip-timestamps "0,10,20"] [--without-timestamps]
                    [--word-timestamps] [--hallucination-silence-threshold S] [--seed N]

--language-from-manifest: for multilingual models, pass the manifest's `language` column
(when it is a language the model knows) instead of auto-detecting.
--only: keep only the manifest rows whose file path contains one of the substrings.
--seed: ctranslate2.set_random_seed(N) before every file (sampling at temperature > 0).

A file that fails is recorded with its error; the script does not stop.  The output is
rewritten after every file, so an interrupted run leaves a valid partial JSON ("complete": false).
"""
import argparse
import csv
import json
import os
import platform
import re
import sys
import time
import traceback
from pathlib import Path

csv.field_size_limit(sys.maxsize)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def read_manifest(path: Path):
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        for row in reader:
            if not row.get("file"):
                continue
            yield row


_INT_LIST = re.compile(r"\[\s*(-?\d+(?:,\s*-?\d+)*)\s*\]")


def write_json(path: Path, obj) -> None:
    text = json.dumps(obj, ensure_ascii=False, indent=1)
    # keep token lists on one line
    text = _INT_LIST.sub(lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", text)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(text + "\n")
    os.replace(tmp, path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="CTranslate2 Whisper model directory")
    ap.add_argument("--manifest", required=True, action="append", help="eval manifest TSV (repeatable)")
    ap.add_argument("--out", required=True, help="output JSON")
    ap.add_argument("--threads", type=int, default=2, help="CTranslate2 intra-op threads (cpu_threads)")
    ap.add_argument("--limit", type=int, default=0, help="only the first N files overall (0 = all)")
    ap.add_argument("--language-from-manifest", action="store_true",
                    help="multilingual models: use the manifest language instead of auto-detection")
    ap.add_argument("--only", action="append", default=[],
                    help="keep only rows whose file contains this substring (repeatable)")
    ap.add_argument("--beam-size", type=int, default=1)
    ap.add_argument("--best-of", type=int, default=1)
    ap.add_argument("--patience", type=float, default=1.0)
    ap.add_argument("--length-penalty", type=float, default=1.0)
    ap.add_argument("--temperature", default="0.0", help="one value or a comma list (fallback)")
    ap.add_argument("--compression-ratio-threshold", default="2.4", help="number or none")
    ap.add_argument("--logprob-threshold", default="-1.0", help="number or none")
    ap.add_argument("--no-speech-threshold", default="0.6", help="number or none")
    ap.add_argument("--condition-on-previous-text", default="true", choices=["true", "false"])
    ap.add_argument("--prompt-reset-on-temperature", type=float, default=0.5)
    ap.add_argument("--initial-prompt", default=None)
    ap.add_argument("--prefix", default=None)
    ap.add_argument("--suppress-tokens", default="-1", help='"-1" (the non-speech list), ids "1,2", or ""')
    ap.add_argument("--clip-timestamps", default="0")
    ap.add_argument("--without-timestamps", action="store_true")
    ap.add_argument("--word-timestamps", action="store_true")
    ap.add_argument("--hallucination-silence-threshold", type=float, default=None)
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args()

    import ctranslate2
    import faster_whisper
    import numpy
    from faster_whisper import WhisperModel
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    try:
        import av
        av_version = av.__version__
    except Exception:  # noqa: BLE001
        av_version = None

    model_dir = Path(args.model).resolve()
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    model = WhisperModel(str(model_dir), device="cpu", compute_type="float32",
                         cpu_threads=args.threads, num_workers=1)
    load_s = time.perf_counter() - t0
    multilingual = bool(model.model.is_multilingual)

    def opt_float(v):
        return None if v.lower() == "none" else float(v)

    temperatures = [float(t) for t in args.temperature.split(",") if t.strip()]
    options = dict(
        task="transcribe",
        beam_size=args.beam_size,
        best_of=args.best_of,
        patience=args.patience,
        length_penalty=args.length_penalty,
        temperature=temperatures[0] if len(temperatures) == 1 else temperatures,
        compression_ratio_threshold=opt_float(args.compression_ratio_threshold),
        log_prob_threshold=opt_float(args.logprob_threshold),
        no_speech_threshold=opt_float(args.no_speech_threshold),
        condition_on_previous_text=args.condition_on_previous_text == "true",
        prompt_reset_on_temperature=args.prompt_reset_on_temperature,
        initial_prompt=args.initial_prompt,
        prefix=args.prefix,
        suppress_tokens=[int(t) for t in args.suppress_tokens.split(",") if t.strip()],
        clip_timestamps=args.clip_timestamps,
        vad_filter=False,
        without_timestamps=args.without_timestamps,
        word_timestamps=args.word_timestamps,
        hallucination_silence_threshold=args.hallucination_silence_threshold,
    )

    entries = []
    for m in args.manifest:
        mpath = Path(m).resolve()
        for row in read_manifest(mpath):
            entries.append((mpath, row))
    if args.only:
        entries = [e for e in entries if any(o in e[1]["file"] for o in args.only)]
    if args.limit and args.limit > 0:
        entries = entries[: args.limit]

    result = {
        "tool": "tools/reference/ref_transcribe.py",
        "complete": False,
        "model_dir": str(model_dir),
        "model_multilingual": multilingual,
        "model_compute_type": getattr(model.model, "compute_type", None),
        "device": "cpu",
        "compute_type": "float32",
        "threads": args.threads,
        "num_workers": 1,
        "language_mode": ("manifest" if (args.language_from_manifest and multilingual)
                          else ("auto-detect" if multilingual else "en (English-only model)")),
        "transcribe_options": dict(options, language=None if multilingual else "en",
                                   note="all other options at faster-whisper defaults"),
        "text_field": "text = ''.join(segment.text) exactly as yielded (leading spaces kept, not stripped)",
        "wall_s_field": "transcribe() call + consuming the segment generator; includes audio decode, excludes model load",
        "cpu_s_field": "process CPU time (all threads) over the same span; less sensitive to other load on the host",
        "host_loadavg_at_start": os.getloadavg(),
        "versions": {
            "ctranslate2": ctranslate2.__version__,
            "faster_whisper": faster_whisper.__version__,
            "numpy": numpy.__version__,
            "av": av_version,
            "python": platform.python_version(),
        },
        "host": {
            "cpu_model": cpu_model(),
            "os_cpu_count": os.cpu_count(),
            "platform": platform.platform(),
        },
        "manifests": [str(Path(m).resolve()) for m in args.manifest],
        "model_load_s": load_s,
        "files": [],
        "totals": {},
    }

    run_t0 = time.perf_counter()
    for i, (mpath, row) in enumerate(entries):
        rel = row["file"]
        audio_path = mpath.parent / rel
        manifest_lang = (row.get("language") or "").strip()
        rec = {
            "file": rel,
            "manifest": mpath.name,
            "manifest_language": manifest_lang,
            "manifest_duration_s": float(row["duration_s"]) if row.get("duration_s") else None,
        }
        language = None if multilingual else "en"
        if multilingual and args.language_from_manifest and manifest_lang in _LANGUAGE_CODES:
            language = manifest_lang
        rec["language_requested"] = language
        try:
            if args.seed is not None:
                ctranslate2.set_random_seed(args.seed)
            t = time.perf_counter()
            c = time.process_time()
            segments, info = model.transcribe(str(audio_path), language=language, **options)
            segs = []
            for s in segments:
                segs.append({
                    "id": s.id,
                    "seek": s.seek,
                    "start": s.start,
                    "end": s.end,
                    "text": s.text,
                    "tokens": list(s.tokens),
                    "avg_logprob": s.avg_logprob,
                    "no_speech_prob": s.no_speech_prob,
                    "compression_ratio": s.compression_ratio,
                    "temperature": s.temperature,
                })
                if s.words is not None:
                    segs[-1]["words"] = [[w.start, w.end, w.word, w.probability] for w in s.words]
            wall = time.perf_counter() - t
            cpu = time.process_time() - c
            rec.update({
                "ok": True,
                "language": info.language,
                "language_probability": info.language_probability,
                "language_top5": ([[l, p] for l, p in info.all_language_probs[:5]]
                                  if info.all_language_probs else None),
                "duration": info.duration,
                "wall_s": wall,
                "cpu_s": cpu,
                "n_segments": len(segs),
                "n_tokens": sum(len(s["tokens"]) for s in segs),
                "segments": segs,
                "text": "".join(s["text"] for s in segs),
            })
        except Exception as e:  # noqa: BLE001 - record and continue
            rec.update({
                "ok": False,
                "error": f"{type(e).__name__}: {e}",
                "traceback": traceback.format_exc(),
            })
        result["files"].append(rec)
        status = (f"{rec['wall_s']:.2f}s lang={rec['language']} segs={rec['n_segments']} "
                  f"{rec['text'][:60]!r}") if rec["ok"] else rec["error"]
        print(f"[{i + 1}/{len(entries)}] {rel}: {status}", file=sys.stderr, flush=True)

        ok = [r for r in result["files"] if r["ok"]]
        audio = sum(r["duration"] for r in ok)
        wall = sum(r["wall_s"] for r in ok)
        result["totals"] = {
            "n_files": len(result["files"]),
            "n_ok": len(ok),
            "n_failed": len(result["files"]) - len(ok),
            "failed_files": [r["file"] for r in result["files"] if not r["ok"]],
            "audio_s": audio,
            "transcribe_wall_s": wall,
            "transcribe_cpu_s": sum(r["cpu_s"] for r in ok),
            "rtf": (wall / audio) if audio else None,
            "run_wall_s": time.perf_counter() - run_t0,
            "host_loadavg_now": os.getloadavg(),
            "n_segments": sum(r["n_segments"] for r in ok),
            "n_tokens": sum(r["n_tokens"] for r in ok),
        }
        result["complete"] = (i + 1 == len(entries))
        write_json(out_path, result)

    if not entries:
        result["complete"] = True
        write_json(out_path, result)
    t = result["totals"]
    print(f"done: {t.get('n_ok', 0)}/{t.get('n_files', 0)} ok, audio {t.get('audio_s', 0):.1f}s, "
          f"transcribe wall {t.get('transcribe_wall_s', 0):.1f}s, model load {load_s:.2f}s -> {out_path}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
