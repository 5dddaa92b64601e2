#!/usr/bin/env python3
"""Convert a CTranslate2 Whisper model directory into a Hugging Face (transformers) style one.

  ct2_to_safetensors.py CT2_DIR OUT_DIR [--no-verify]

Writes to OUT_DIR:
  model.safetensors        every weight under its transformers WhisperForConditionalGeneration name,
                           same dtype as model.bin (fp16 here).  The tensors are exact re-arrangements
                           of the CTranslate2 ones: fused projections are split, nothing is cast or
                           rescaled.  proj_out.weight is omitted (tied to model.decoder.embed_tokens).
  config.json              WhisperConfig fields (vocab_size, num_mel_bins, d_model, layers, heads,
                           ffn dims, max_source_positions, max_target_positions, token ids, ...).
  generation_config.json   alignment_heads, lang_to_id, task_to_id, suppress_tokens,
                           begin_suppress_tokens, no_timestamps_token_id, is_multilingual, ...
  preprocessor_config.json WhisperFeatureExtractor settings.
  tokenizer.json, vocabulary.txt (copied), vocab.json, merges.txt, added_tokens.json
                           (derived from tokenizer.json).

CTranslate2 -> transformers mapping (i = layer index):
  encoder/conv{1,2}/{weight,bias}                       model.encoder.conv{1,2}.{weight,bias}
  encoder/position_encodings/encodings                  model.encoder.embed_positions.weight
  encoder/layer_i/self_attention/layer_norm/{gamma,beta} model.encoder.layers.i.self_attn_layer_norm.{weight,bias}
  encoder/layer_i/self_attention/linear_0  [3d, d]      ...self_attn.{q,k,v}_proj  (rows 0:d, d:2d, 2d:3d;
                                                        the k part of the fused bias must be 0 and is dropped)
  encoder/layer_i/self_attention/linear_1               ...self_attn.out_proj
  encoder/layer_i/ffn/layer_norm                        ...final_layer_norm
  encoder/layer_i/ffn/linear_{0,1}                      ...fc1, fc2
  encoder/layer_norm                                    model.encoder.layer_norm
  decoder/embeddings/weight                             model.decoder.embed_tokens.weight
  decoder/position_encodings/encodings                  model.decoder.embed_positions.weight
  decoder/layer_i/self_attention/*                      model.decoder.layers.i.self_attn* (as encoder)
  decoder/layer_i/attention/layer_norm                  ...encoder_attn_layer_norm
  decoder/layer_i/attention/linear_0                    ...encoder_attn.q_proj
  decoder/layer_i/attention/linear_1  [2d, d]           ...encoder_attn.{k,v}_proj (k bias must be 0, dropped)
  decoder/layer_i/attention/linear_2                    ...encoder_attn.out_proj
  decoder/layer_i/ffn/*                                 ...final_layer_norm, fc1, fc2
  decoder/layer_norm                                    model.decoder.layer_norm
Scalar flags (num_heads, pre_norm, activation, ...) go to config.json, not the safetensors file.

Verification (default on): reload model.safetensors with the `safetensors` package, rebuild every
CTranslate2 tensor from the HF tensors and compare bytes; check the key set against the
transformers state dict of WhisperForConditionalGeneration; if `transformers` is importable,
also build the model from config.json and load the state dict with it.
"""
import argparse
import json
import os
import shutil
import struct
import sys
from pathlib import Path

import numpy as np

DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: None}  # 5 = bf16


def read_ct2_model(path: Path):
    """Return (spec, revision, {name: ndarray}, {alias: target}) from a CTranslate2 model.bin."""
    variables, aliases = {}, {}
    with path.open("rb") as f:
        def string():
            (n,) = struct.unpack("<H", f.read(2))
            return f.read(n)[:-1].decode()

        (version,) = struct.unpack("<I", f.read(4))
        if version < 4:
            raise SystemExit(f"unsupported model.bin binary version {version}")
        spec = string()
        (revision,) = struct.unpack("<I", f.read(4))
        (n,) = struct.unpack("<I", f.read(4))
        for _ in range(n):
            name = string()
            (rank,) = struct.unpack("<B", f.read(1))
            dims = struct.unpack(f"<{rank}I", f.read(4 * rank))
            dtype_id, nbytes = struct.unpack("<BI", f.read(5))
            dt = DTYPES[dtype_id]
            if dt is None:
                raise SystemExit(f"{name}: bfloat16 not supported")
            data = f.read(nbytes)
            if len(data) != nbytes:
                raise SystemExit(f"{name}: truncated model.bin")
            variables[name] = np.frombuffer(data, dtype=dt).reshape(dims).copy()
        (na,) = struct.unpack("<I", f.read(4) or b"\0\0\0\0")
        for _ in range(na):
            alias = string()
            aliases[alias] = string()
    return spec, revision, variables, aliases


def scalar(v, name):
    return int(v[name].reshape(-1)[0]) if name in v else None


def n_layers(v, prefix):
    i = 0
    while any(k.startswith(f"{prefix}/layer_{i}/") for k in v):
        i += 1
    return i


def split_rows(w, parts):
    d = w.shape[0] // parts
    return [w[j * d:(j + 1) * d] for j in range(parts)]


def convert(v):
    """Return {hf_name: ndarray} and the list of consumed CT2 variable names."""
    out, used = {}, set()

    def take(name):
        used.add(name)
        return v[name]

    def ln(ct, hf):
        out[f"{hf}.weight"] = take(f"{ct}/gamma")
        out[f"{hf}.bias"] = take(f"{ct}/beta")

    def lin(ct, hf):
        out[f"{hf}.weight"] = take(f"{ct}/weight")
        out[f"{hf}.bias"] = take(f"{ct}/bias")

    def fused(ct, hfs):
        """Split a fused linear; hfs lists the HF projections, k_proj gets no bias."""
        ws = split_rows(take(f"{ct}/weight"), len(hfs))
        bs = split_rows(take(f"{ct}/bias"), len(hfs))
        for hf, w, b in zip(hfs, ws, bs):
            out[f"{hf}.weight"] = np.ascontiguousarray(w)
            if hf.endswith("k_proj"):
                if np.any(b != 0):
                    raise SystemExit(f"{ct}: non-zero key bias, cannot map to HF (k_proj has no bias)")
            else:
                out[f"{hf}.bias"] = np.ascontiguousarray(b)

    for c in (1, 2):
        lin(f"encoder/conv{c}", f"model.encoder.conv{c}")
    out["model.encoder.embed_positions.weight"] = take("encoder/position_encodings/encodings")
    for i in range(n_layers(v, "encoder")):
        ct, hf = f"encoder/layer_{i}", f"model.encoder.layers.{i}"
        ln(f"{ct}/self_attention/layer_norm", f"{hf}.self_attn_layer_norm")
        fused(f"{ct}/self_attention/linear_0", [f"{hf}.self_attn.{p}_proj" for p in "qkv"])
        lin(f"{ct}/self_attention/linear_1", f"{hf}.self_attn.out_proj")
        ln(f"{ct}/ffn/layer_norm", f"{hf}.final_layer_norm")
        lin(f"{ct}/ffn/linear_0", f"{hf}.fc1")
        lin(f"{ct}/ffn/linear_1", f"{hf}.fc2")
    ln("encoder/layer_norm", "model.encoder.layer_norm")

    out["model.decoder.embed_tokens.weight"] = take("decoder/embeddings/weight")
    out["model.decoder.embed_positions.weight"] = take("decoder/position_encodings/encodings")
    for i in range(n_layers(v, "decoder")):
        ct, hf = f"decoder/layer_{i}", f"model.decoder.layers.{i}"
        ln(f"{ct}/self_attention/layer_norm", f"{hf}.self_attn_layer_norm")
        fused(f"{ct}/self_attention/linear_0", [f"{hf}.self_attn.{p}_proj" for p in "qkv"])
        lin(f"{ct}/self_attention/linear_1", f"{hf}.self_attn.out_proj")
        ln(f"{ct}/attention/layer_norm", f"{hf}.encoder_attn_layer_norm")
        lin(f"{ct}/attention/linear_0", f"{hf}.encoder_attn.q_proj")
        fused(f"{ct}/attention/linear_1", [f"{hf}.encoder_attn.{p}_proj" for p in "kv"])
        lin(f"{ct}/attention/linear_2", f"{hf}.encoder_attn.out_proj")
        ln(f"{ct}/ffn/layer_norm", f"{hf}.final_layer_norm")
        lin(f"{ct}/ffn/linear_0", f"{hf}.fc1")
        lin(f"{ct}/ffn/linear_1", f"{hf}.fc2")
    ln("decoder/layer_norm", "model.decoder.layer_norm")
    return out, used


def expected_hf_keys(enc_layers, dec_layers):
    """The transformers WhisperForConditionalGeneration state-dict keys, minus proj_out.weight."""
    keys = [f"model.encoder.conv{c}.{p}" for c in (1, 2) for p in ("weight", "bias")]
    keys += ["model.encoder.embed_positions.weight"]

    def attn(pfx):
        ks = [f"{pfx}.k_proj.weight"]
        for p in ("q", "v", "out"):
            ks += [f"{pfx}.{p}_proj.weight", f"{pfx}.{p}_proj.bias"]
        return ks

    def lnk(pfx):
        return [f"{pfx}.weight", f"{pfx}.bias"]

    for i in range(enc_layers):
        h = f"model.encoder.layers.{i}"
        keys += attn(f"{h}.self_attn") + lnk(f"{h}.self_attn_layer_norm")
        keys += lnk(f"{h}.fc1") + lnk(f"{h}.fc2") + lnk(f"{h}.final_layer_norm")
    keys += lnk("model.encoder.layer_norm")
    keys += ["model.decoder.embed_tokens.weight", "model.decoder.embed_positions.weight"]
    for i in range(dec_layers):
        h = f"model.decoder.layers.{i}"
        keys += attn(f"{h}.self_attn") + lnk(f"{h}.self_attn_layer_norm")
        keys += attn(f"{h}.encoder_attn") + lnk(f"{h}.encoder_attn_layer_norm")
        keys += lnk(f"{h}.fc1") + lnk(f"{h}.fc2") + lnk(f"{h}.final_layer_norm")
    keys += lnk("model.decoder.layer_norm")
    return set(keys)


def language_codes():
    try:
        from faster_whisper.tokenizer import _LANGUAGE_CODES
        return list(_LANGUAGE_CODES)
    except Exception:  # noqa: BLE001
        return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ct2_dir")
    ap.add_argument("out_dir")
    ap.add_argument("--no-verify", action="store_true")
    args = ap.parse_args()

    src, dst = Path(args.ct2_dir), Path(args.out_dir)
    dst.mkdir(parents=True, exist_ok=True)
    spec, revision, v, aliases = read_ct2_model(src / "model.bin")
    if spec != "WhisperSpec":
        raise SystemExit(f"not a Whisper model: spec {spec}")
    ct2_cfg = json.loads((src / "config.json").read_text())
    vocab_list = (src / "vocabulary.txt").read_text(encoding="utf-8").split("\n")
    if vocab_list and vocab_list[-1] == "":
        vocab_list = vocab_list[:-1]
    tok_id = {t: i for i, t in enumerate(vocab_list)}

    tensors, used = convert(v)
    scalars = {k: v[k].reshape(-1).tolist() for k in v if v[k].ndim == 0}
    unused = sorted(set(v) - used - set(scalars))
    if unused:
        raise SystemExit(f"unmapped CTranslate2 tensors: {unused}")
    if any(a.startswith("decoder/projection") for a in aliases) or "decoder/projection/weight" in v:
        proj = v.get("decoder/projection/weight")
        if proj is not None and not np.array_equal(proj, v["decoder/embeddings/weight"]):
            raise SystemExit("decoder projection is not tied to the embeddings; HF export would lose it")

    d_model = v["decoder/embeddings/weight"].shape[1]
    vocab_size = v["decoder/embeddings/weight"].shape[0]
    n_mels = v["encoder/conv1/weight"].shape[1]
    enc_layers, dec_layers = n_layers(v, "encoder"), n_layers(v, "decoder")
    multilingual = vocab_size >= 51865
    eot, sot = tok_id["<|endoftext|>"], tok_id["<|startoftranscript|>"]
    no_ts = tok_id["<|notimestamps|>"]
    codes = language_codes() or [t[2:-2] for t in vocab_list[sot + 1:tok_id["<|translate|>"]]]
    lang_to_id = dict(sorted(((f"<|{c}|>", tok_id[f"<|{c}|>"]) for c in codes if f"<|{c}|>" in tok_id),
                             key=lambda kv: kv[1]))
    torch_dtype = {np.float16: "float16", np.float32: "float32"}.get(
        v["decoder/embeddings/weight"].dtype.type, str(v["decoder/embeddings/weight"].dtype))

    config = {
        "_name_or_path": str(src.resolve()),
        "architectures": ["WhisperForConditionalGeneration"],
        "model_type": "whisper",
        "vocab_size": int(vocab_size),
        "num_mel_bins": int(n_mels),
        "d_model": int(d_model),
        "encoder_layers": enc_layers,
        "encoder_attention_heads": scalar(v, "encoder/num_heads"),
        "decoder_layers": dec_layers,
        "decoder_attention_heads": scalar(v, "decoder/num_heads"),
        "encoder_ffn_dim": int(v["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        "decoder_ffn_dim": int(v["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        "num_hidden_layers": enc_layers,
        "max_source_positions": int(v["encoder/position_encodings/encodings"].shape[0]),
        "max_target_positions": int(v["decoder/position_encodings/encodings"].shape[0]),
        "activation_function": "gelu",
        "scale_embedding": False,
        "tie_word_embeddings": True,
        "is_encoder_decoder": True,
        "use_cache": True,
        "dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0,
        "encoder_layerdrop": 0.0, "decoder_layerdrop": 0.0,
        "init_std": 0.02,
        "apply_spec_augment": False,
        "use_weighted_layer_sum": False,
        "classifier_proj_size": 256,
        "median_filter_width": 7,
        "bos_token_id": eot if multilingual else sot,
        "eos_token_id": eot,
        "pad_token_id": eot,
        "decoder_start_token_id": sot,
        "begin_suppress_tokens": list(ct2_cfg.get("suppress_ids_begin", [])),
        "suppress_tokens": list(ct2_cfg.get("suppress_ids", [])),
        "torch_dtype": torch_dtype,
        "transformers_version": "4.40.0",
        "ct2_spec": {"spec": spec, "revision": revision, "scalars": scalars},
    }
    generation = {
        "alignment_heads": ct2_cfg.get("alignment_heads", []),
        "begin_suppress_tokens": list(ct2_cfg.get("suppress_ids_begin", [])),
        "suppress_tokens": list(ct2_cfg.get("suppress_ids", [])),
        "bos_token_id": config["bos_token_id"],
        "eos_token_id": eot,
        "pad_token_id": eot,
        "decoder_start_token_id": sot,
        "forced_decoder_ids": ([[1, None], [2, tok_id["<|transcribe|>"]]] if multilingual else None),
        "is_multilingual": multilingual,
        "lang_to_id": lang_to_id if multilingual else {},
        "task_to_id": {"transcribe": tok_id["<|transcribe|>"], "translate": tok_id["<|translate|>"]},
        "max_initial_timestamp_index": 50,
        "max_length": config["max_target_positions"],
        "no_timestamps_token_id": no_ts,
        "prev_sot_token_id": tok_id["<|startofprev|>"],
        "return_timestamps": False,
        "transformers_version": config["transformers_version"],
    }
    preprocessor = {
        "chunk_length": 30, "feature_extractor_type": "WhisperFeatureExtractor",
        "feature_size": int(n_mels), "hop_length": 160, "n_fft": 400, "n_samples": 480000,
        "nb_max_frames": 3000, "padding_side": "right", "padding_value": 0.0,
        "processor_class": "WhisperProcessor", "return_attention_mask": False, "sampling_rate": 16000,
    }

    from safetensors.numpy import load_file, save_file

    st_path = dst / "model.safetensors"
    ordered = {k: np.ascontiguousarray(tensors[k]) for k in sorted(tensors)}
    save_file(ordered, str(st_path), metadata={"format": "pt", "source": "ctranslate2 " + spec})
    os.chmod(st_path, 0o644)
    for name, obj in (("config.json", config), ("generation_config.json", generation),
                      ("preprocessor_config.json", preprocessor)):
        (dst / name).write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    for name in ("tokenizer.json", "vocabulary.txt", "vocabulary.json"):
        if (src / name).exists():
            shutil.copyfile(src / name, dst / name)
    if (src / "tokenizer.json").exists():
        tj = json.loads((src / "tokenizer.json").read_text(encoding="utf-8"))
        (dst / "vocab.json").write_text(json.dumps(tj["model"]["vocab"], ensure_ascii=False), encoding="utf-8")
        merges = [m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]]
        (dst / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
        added = {t["content"]: t["id"] for t in tj.get("added_tokens", [])}
        (dst / "added_tokens.json").write_text(json.dumps(added, ensure_ascii=False, indent=2), encoding="utf-8")

    report = {"out": str(dst), "tensors": len(tensors), "bytes": st_path.stat().st_size,
              "dtype": torch_dtype, "aliases_in_model_bin": aliases}
    if not args.no_verify:
        loaded = load_file(str(st_path))
        exp = expected_hf_keys(enc_layers, dec_layers)
        assert set(loaded) == exp, (sorted(set(loaded) - exp), sorted(exp - set(loaded)))
        # rebuild every CTranslate2 tensor from the HF ones and compare bytes
        for ctname in used:
            parts = ctname.split("/")
            a = v[ctname]
            if "/self_attention/linear_0/" in ctname or ("/attention/linear_1/" in ctname and
                                                          ctname.startswith("decoder")):
                root = ctname.rsplit("/", 2)[0].replace("encoder/layer_", "model.encoder.layers.") \
                    .replace("decoder/layer_", "model.decoder.layers.")
                root = root.replace("/self_attention", ".self_attn").replace("/attention", ".encoder_attn")
                projs = "qkv" if "self_attention" in ctname else "kv"
                if parts[-1] == "weight":
                    hf_back = np.concatenate([loaded[f"{root}.{p}_proj.weight"] for p in projs])
                else:
                    hf_back = np.concatenate([loaded[f"{root}.{p}_proj.bias"] if p != "k" else
                                              np.zeros(a.shape[0] // len(projs), a.dtype) for p in projs])
            else:
                matches = [k for k, t in tensors.items() if t is a]
                assert len(matches) == 1, (ctname, matches)
                hf_back = loaded[matches[0]]
            assert hf_back.dtype == a.dtype and hf_back.shape == a.shape, ctname
            assert hf_back.tobytes() == a.tobytes(), f"mismatch {ctname}"
        report["verified_exact"] = len(used)
        try:
            import transformers  # noqa: F401
            import torch  # noqa: F401
            from transformers import WhisperConfig, WhisperForConditionalGeneration
            cfg = WhisperConfig(**{k: val for k, val in config.items() if not k.startswith("_")})
            m = WhisperForConditionalGeneration(cfg)
            sd = {k: torch.from_numpy(t.astype(np.float32)) for k, t in loaded.items()}
            missing, unexpected = m.load_state_dict(sd, strict=False)
            report["transformers"] = {"missing": missing, "unexpected": unexpected}
        except ImportError:
            report["transformers"] = "not importable (skipped)"
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
