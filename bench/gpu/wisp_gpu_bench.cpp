// Standalone `wisp bench` for machines where the full wisp app cannot be built (WISP_KERNELS_ONLY: no
// FFmpeg, FFTW, ...). Same options, table and JSON (--json) as `wisp bench`; --random only there (no
// engine-file reader).
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>

#include "runtime/gpu_whisper.h"

int main(int argc, char** argv) {
  wisp::runtime::BenchOptions o;
  bool json = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto val = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "wisp_gpu_bench: error: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--random") {
      o.size = val();
    } else if (a == "-m" || a == "--model") {
      o.model_path = val();
    } else if (a == "--batch") {
      o.batch = std::atoi(val().c_str());
    } else if (a == "--tokens") {
      o.tokens = std::atoi(val().c_str());
    } else if (a == "--repeats") {
      o.repeats = std::atoi(val().c_str());
    } else if (a == "--no-graphs") {
      o.cuda_graphs = false;
    } else if (a == "--no-gemv") {
      o.gemv = false;
    } else if (a == "--no-pdl") {
      o.programmatic_launch = false;
    } else if (a == "--norms") {
      o.norms = val();
    } else if (a == "--separate-kv-append") {
      o.fused_kv_append = false;
    } else if (a == "--gemv-max-rows") {
      o.gemv_max_rows = std::atoi(val().c_str());
    } else if (a == "--gemv-wgmma") {
      o.gemv_wgmma = std::atoi(val().c_str());
    } else if (a == "--attention-wgmma") {
      o.attention_wgmma = std::atoi(val().c_str()) != 0;
    } else if (a == "--decoder-attention-mma") {
      o.decoder_attention_mma = std::atoi(val().c_str()) != 0;
    } else if (a == "--gemm-autotune") {
      o.gemm_autotune = std::atoi(val().c_str()) != 0;
    } else if (a == "--encoder-gelu") {
      o.encoder_gelu = val();
    } else if (a == "--gemv-fill") {
      o.gemv_fill = std::atoi(val().c_str());
    } else if (a == "--skip") {
      o.skip = val();
    } else if (a == "--weights") {
      o.weights = val();
    } else if (a == "--group-size") {
      o.group = std::atoi(val().c_str());
    } else if (a == "--kv-cache") {
      o.kv_cache = val();
    } else if (a == "--json") {
      json = true;
    } else {
      std::fprintf(stderr,
                   "usage: wisp_gpu_bench [--random SIZE] [-m MODEL] --batch B --tokens N [--repeats R] [--no-graphs] "
                   "[--no-gemv] [--no-pdl] [--norms auto|folded|separate] [--separate-kv-append] [--skip PARTS] "
                   "[--gemv-fill PERCENT] [--gemv-max-rows N] [--gemv-wgmma MAX_CLUSTER] [--attention-wgmma 0|1] "
                   "[--decoder-attention-mma 0|1] "
                   "[--gemm-autotune 0|1] [--encoder-gelu tanh|erf] "
                   "[--weights fp16|int8|int4] "
                   "[--group-size 64|128] [--kv-cache fp16|int8|int8-dynamic|fp8] [--json]\n");
      return 2;
    }
  }
  try {
    const wisp::runtime::BenchResult r = wisp::runtime::run_bench(o);
    std::printf("%s\n", (json ? wisp::runtime::bench_json(r) : wisp::runtime::bench_table(r)).c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "wisp_gpu_bench: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
