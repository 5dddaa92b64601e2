#!/usr/bin/env python3
"""Independent numpy (fp32) Whisper forward from a Hugging Face style dir, checked against the
CTranslate2 fixtures written by make_model_fixtures.py.

  np_whisper_check.py HF_DIR FIXTURE_DIR [--write]

HF_DIR is the output of ct2_to_safetensors.py (model.safetensors + config.json).  It recomputes
  * the encoder output from FIXTURE_DIR/mel.npy            -> compares with encoder_out.npy
  * the teacher-forced decoder logits (cross-attending to the CTranslate2 encoder_out.npy)
                                                            -> compares with logits.npy
This checks the safetensors name mapping semantically (not only byte re-arrangement) and gives the
raw value of the one column CTranslate2 cannot return in timestamp mode (<|notimestamps|>, which
ApplyTimestampRules always disables).  --write stores the numbers in FIXTURE_DIR/numpy_check.json.
"""
import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

_erf = np.vectorize(math.erf, otypes=[np.float64])


def gelu(x):  # exact (erf) GELU, as Whisper uses
    return (0.5 * x * (1.0 + _erf(x.astype(np.float64) / math.sqrt(2.0)))).astype(np.float32)


class Whisper:
    def __init__(self, hf_dir: Path):
        self.W = {k: v.astype(np.float32) for k, v in load_file(str(hf_dir / "model.safetensors")).items()}
        self.cfg = json.loads((hf_dir / "config.json").read_text())

    def ln(self, x, p):
        m = x.mean(-1, keepdims=True)
        v = ((x - m) ** 2).mean(-1, keepdims=True)
        return (x - m) / np.sqrt(v + 1e-5) * self.W[p + ".weight"] + self.W[p + ".bias"]

    def lin(self, x, p, bias=True):
        y = x @ self.W[p + ".weight"].T
        return y + self.W[p + ".bias"] if bias else y

    def conv1d(self, x, p, stride):  # x [C, T], kernel 3, padding 1
        w, b = self.W[p + ".weight"], self.W[p + ".bias"]
        k = w.shape[2]
        xp = np.pad(x, ((0, 0), (1, 1)))
        t = (xp.shape[1] - k) // stride + 1
        cols = np.stack([xp[:, i:i + stride * t:stride] for i in range(k)], -1)
        return np.einsum("ctk,ock->ot", cols, w) + b[:, None]

    def attn(self, xq, xkv, p, heads, causal=False):
        q = self.lin(xq, p + ".q_proj")
        k = self.lin(xkv, p + ".k_proj", bias=False)
        v = self.lin(xkv, p + ".v_proj")
        t, d_model = q.shape
        s_len, d = k.shape[0], d_model // heads
        q = q.reshape(t, heads, d).transpose(1, 0, 2)
        k = k.reshape(s_len, heads, d).transpose(1, 0, 2)
        v = v.reshape(s_len, heads, d).transpose(1, 0, 2)
        s = q @ k.transpose(0, 2, 1) / np.float32(math.sqrt(d))
        if causal:
            s = s + np.triu(np.full((t, s_len), -np.inf, np.float32), 1)
        s = s - s.max(-1, keepdims=True)
        e = np.exp(s)
        a = e / e.sum(-1, keepdims=True)
        return self.lin((a @ v).transpose(1, 0, 2).reshape(t, d_model), p + ".out_proj")

    def encode(self, mel):
        c, W = self.cfg, self.W
        x = gelu(self.conv1d(mel, "model.encoder.conv1", 1))
        x = gelu(self.conv1d(x, "model.encoder.conv2", 2)).T
        x = x + W["model.encoder.embed_positions.weight"][: x.shape[0]]
        for i in range(c["encoder_layers"]):
            p = f"model.encoder.layers.{i}"
            h = self.ln(x, p + ".self_attn_layer_norm")
            x = x + self.attn(h, h, p + ".self_attn", c["encoder_attention_heads"])
            h = self.ln(x, p + ".final_layer_norm")
            x = x + self.lin(gelu(self.lin(h, p + ".fc1")), p + ".fc2")
        return self.ln(x, "model.encoder.layer_norm")

    def decode(self, ids, enc):
        c, W = self.cfg, self.W
        x = W["model.decoder.embed_tokens.weight"][ids] + W["model.decoder.embed_positions.weight"][: len(ids)]
        for i in range(c["decoder_layers"]):
            p = f"model.decoder.layers.{i}"
            h = self.ln(x, p + ".self_attn_layer_norm")
            x = x + self.attn(h, h, p + ".self_attn", c["decoder_attention_heads"], causal=True)
            h = self.ln(x, p + ".encoder_attn_layer_norm")
            x = x + self.attn(h, enc, p + ".encoder_attn", c["decoder_attention_heads"])
            h = self.ln(x, p + ".final_layer_norm")
            x = x + self.lin(gelu(self.lin(h, p + ".fc1")), p + ".fc2")
        x = self.ln(x, "model.decoder.layer_norm")
        return x @ W["model.decoder.embed_tokens.weight"].T  # tied output projection


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("hf_dir")
    ap.add_argument("fixture_dir")
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    hf, fx = Path(args.hf_dir), Path(args.fixture_dir)

    m = Whisper(hf)
    mel = np.load(fx / "mel.npy")
    enc_ref = np.load(fx / "encoder_out.npy")
    enc = m.encode(mel)
    tok = json.loads((fx / "tokens.json").read_text())
    L = np.load(fx / "logits.npy")
    n0 = len(tok["sot_sequence"]) - 1
    ids = tok["decoder_input_sequence"][: n0 + L.shape[0]]
    mine = m.decode(ids, enc_ref)[n0:n0 + L.shape[0]]
    mask = L > np.finfo(np.float32).min
    cols = sorted(set(np.where(~mask)[1].tolist()))
    res = {
        "produced_by": "tools/reference/np_whisper_check.py (numpy fp32, weights from the ct2_to_safetensors export)",
        "encoder_max_abs_diff": float(np.abs(enc - enc_ref).max()),
        "encoder_max_abs_ref": float(np.abs(enc_ref).max()),
        "logits_max_abs_diff_unmasked": float(np.abs(mine[mask] - L[mask]).max()),
        "logits_max_abs_ref": float(np.abs(L[mask]).max()),
        "ct2_masked_columns": cols,
        "numpy_raw_values_of_masked_columns": {str(c): [float(v) for v in mine[:, c]] for c in cols},
        "raw_argmax_per_row_numpy": [int(i) for i in mine.argmax(-1)],
        "argmax_per_row_ct2_unmasked": [int(i) for i in np.where(mask, L, -np.inf).argmax(-1)],
    }
    print(json.dumps(res, indent=1))
    if args.write:
        (fx / "numpy_check.json").write_text(json.dumps(res, indent=1) + "\n")
    ok = res["logits_max_abs_diff_unmasked"] < 1e-3 and res["encoder_max_abs_diff"] < 5e-3
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
