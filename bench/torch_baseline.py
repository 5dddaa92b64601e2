# PyTorch (HF transformers) baseline on the GPU, random fp16 weights: the encoder over B windows and a
# greedy decode of N single-token steps with a KV cache. Adapted from ../shared/tools/anchors/torch_baseline.py
# (same model construction and loop) so it can run on the GPU machine next to `wisp bench`:
#   - SIZE picks the Whisper shape (tiny .. large-v3), BATCHES and NTOK as before;
#   - the decode starts from one token (<|startoftranscript|>) so all N steps are 1-token steps, as in wisp bench;
#   - median of REPEATS runs after one warm-up, for the encoder and for the decode;
#   - peak memory per batch size (reset between batches);
#   - and Hugging Face's generate loop (GenerationMixin.generate) for the same B windows and N tokens.
# Prints one JSON object per batch size.
import json, os, statistics, time
import torch
from transformers import WhisperConfig, WhisperForConditionalGeneration

SIZES = {  # d_model, heads, layers
    "tiny": (384, 6, 4), "base": (512, 8, 6), "small": (768, 12, 12), "medium": (1024, 16, 24),
    "large-v2": (1280, 20, 32), "large-v3": (1280, 20, 32),
}
size = os.environ.get("SIZE", "large-v2")
d, h, L = SIZES[size]
mels = 128 if size == "large-v3" else 80
vocab = 51866 if size == "large-v3" else 51865
torch.backends.cuda.matmul.allow_tf32 = True
cfg = WhisperConfig(vocab_size=vocab, num_mel_bins=mels, encoder_layers=L, encoder_attention_heads=h, decoder_layers=L,
                    decoder_attention_heads=h, d_model=d, encoder_ffn_dim=4 * d, decoder_ffn_dim=4 * d,
                    max_source_positions=1500, max_target_positions=448)
attn = os.environ.get("ATTN", "sdpa")
with torch.device("cuda"):
    model = WhisperForConditionalGeneration._from_config(cfg, attn_implementation=attn, torch_dtype=torch.float16)
model.eval()
enc, R = model.model.encoder, int(os.environ.get("REPEATS", "5"))
meta = {"engine": "torch", "torch": torch.__version__, "card": torch.cuda.get_device_name(0), "size": size, "attn": attn}
import transformers
meta["transformers"] = transformers.__version__


def sync():
    torch.cuda.synchronize()


@torch.inference_mode()
def run_encoder(B):
    x = torch.randn(B, mels, 3000, device="cuda", dtype=torch.float16)
    enc(x); sync()
    ts = []
    for _ in range(R):
        t = time.perf_counter(); hs = enc(x).last_hidden_state; sync(); ts.append((time.perf_counter() - t) * 1000)
    return statistics.median(ts), hs


@torch.inference_mode()
def run_decode(hs, N):
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache
    B = hs.shape[0]
    ids = torch.full((B, 1), 50258, device="cuda", dtype=torch.long)

    def once():
        cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        nxt = ids
        for _ in range(N):
            out = model(encoder_outputs=(hs,), decoder_input_ids=nxt, past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        return nxt

    once(); sync()
    ts = []
    for _ in range(max(1, R // 2)):
        t = time.perf_counter(); once(); sync(); ts.append((time.perf_counter() - t) * 1000)
    return statistics.median(ts)


@torch.inference_mode()
def run_generate(B, N):
    # Hugging Face's own loop: GenerationMixin.generate (encoder + N greedy steps with its cache), called
    # past Whisper's generate wrapper, which wants a real generation config (languages, timestamps) that random
    # weights do not have. No EOS is configured, so every run makes exactly N tokens.
    from transformers import GenerationMixin
    x = torch.randn(B, mels, 3000, device="cuda", dtype=torch.float16)
    ids = torch.full((B, 1), 50258, device="cuda", dtype=torch.long)

    def once():
        return GenerationMixin.generate(model, input_features=x, decoder_input_ids=ids, max_new_tokens=N,
                                        do_sample=False, num_beams=1, use_cache=True)

    out = once(); sync()
    assert out.shape[1] == N + 1, out.shape
    ts = []
    for _ in range(max(1, R // 2)):
        t = time.perf_counter(); once(); sync(); ts.append((time.perf_counter() - t) * 1000)
    return statistics.median(ts)


N = int(os.environ.get("NTOK", "100"))
for B in [int(b) for b in os.environ.get("BATCHES", "1,32").split(",")]:
    torch.cuda.reset_peak_memory_stats()
    e_ms, hs = run_encoder(B)
    d_ms = run_decode(hs, N)
    total = e_ms + d_ms
    r = dict(meta, batch=B, tokens=N, encoder_ms=round(e_ms, 3), decode_ms=round(d_ms, 2),
             decode_ms_per_step=round(d_ms / N, 4), total_ms=round(total, 2),
             audio_s_per_s=round(B * 30 / (total / 1000), 1),
             peak_mem_gb=round(torch.cuda.max_memory_allocated() / 1e9, 3))
    try:
        r["generate_total_ms"] = round(run_generate(B, N), 2)
    except Exception as e:  # reported, not fatal: the hand-written loop above is the main baseline
        r["generate_error"] = repr(e)[:200]
    print(json.dumps(r), flush=True)
