#include "kernels/cuda/gemm.h"

#include <cublasLt.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <unordered_map>

namespace wisp::kernels::cuda {

namespace {

// Shape, strides, types, epilogue, pointer alignments and whether C is read: everything the heuristic's choice
// (and the tuning's) depends on.
using PlanKey = std::array<int64_t, 19>;

struct PlanKeyHash {
  size_t operator()(const PlanKey& key) const {
    uint64_t h = 1469598103934665603ull;
    for (int64_t v : key) h = (h ^ static_cast<uint64_t>(v)) * 1099511628211ull;
    return static_cast<size_t>(h);
  }
};

struct Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};

  Plan() = default;
  Plan(const Plan&) = delete;
  Plan& operator=(const Plan&) = delete;
  ~Plan() {
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

// The largest power of two ≤ 256 dividing the address: what cuBLASLt may assume about a pointer.
int64_t alignment(const void* p) {
  const auto addr = reinterpret_cast<uintptr_t>(p);
  int64_t a = 256;
  while (a > 1 && addr % static_cast<uintptr_t>(a) != 0) a /= 2;
  return a;
}

cudaDataType_t cuda_type(DataType t) { return t == DataType::kF16 ? CUDA_R_16F : CUDA_R_32F; }
size_t type_bytes(DataType t) { return t == DataType::kF16 ? 2 : 4; }

// Autotuning (GemmContext::set_autotune): the heuristic's first kTuneCandidates algorithms are timed on the first
// call of a plan of at least kTuneMinFlops, outside stream capture. Large-v2 on an H200 (wisp_gpu_bench, tuning on
// / off, interleaved in one call): the cross-attention K/V of 32 windows (one GEMM for all layers) 14.41, 14.34 /
// 14.76, 14.80 ms, of 16 windows 7.52 / 7.69; the encoders vary more from run to run than they differ (batch 32
// 138.4, 140.5 / 144.1, 140.2 ms); batch 1 and 4 equal within the noise. One window's GEMMs (5–20 GFLOP) are not
// tuned: timed in isolation they ranked algorithms differently from how they run back to back (encoder 5.15 →
// 5.28 ms in a first try).
constexpr int kTuneCandidates = 8;
constexpr double kTuneMinFlops = 50e9;
// Another algorithm replaces the heuristic's first choice only when this much faster, so that timing noise
// between near-equal algorithms does not change the choice (and the rounding) from run to run.
constexpr float kTuneMargin = 0.97f;
constexpr int kTuneRuns = 2;  // timed runs per candidate and round, after one untimed run
constexpr int kTuneRounds = 3;

// Bytes from a row-major matrix's first element to past its last: batch matrices of `rows` rows of stride ld.
size_t span_bytes(int64_t rows, int64_t ld, int64_t batch, int64_t stride, size_t elem) {
  return static_cast<size_t>((batch - 1) * stride + rows * ld) * elem;
}
bool overlaps(const void* p, size_t p_bytes, const void* q, size_t q_bytes) {
  const auto a = reinterpret_cast<uintptr_t>(p), b = reinterpret_cast<uintptr_t>(q);
  return a < b + q_bytes && b < a + p_bytes;
}

Status layout(cublasLtMatrixLayout_t* out, cudaDataType_t type, int64_t rows, int64_t cols, int64_t ld, int64_t batch,
              int64_t stride) {
  if (cublasLtMatrixLayoutCreate(out, type, static_cast<uint64_t>(rows), static_cast<uint64_t>(cols), ld) !=
      CUBLAS_STATUS_SUCCESS) {
    return Status::kCublasError;
  }
  if (batch > 1) {
    const auto count = static_cast<int32_t>(batch);
    if (cublasLtMatrixLayoutSetAttribute(*out, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof(count)) !=
            CUBLAS_STATUS_SUCCESS ||
        cublasLtMatrixLayoutSetAttribute(*out, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof(stride)) !=
            CUBLAS_STATUS_SUCCESS) {
      return Status::kCublasError;
    }
  }
  return Status::kOk;
}

}  // namespace

struct GemmContext::Impl {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  std::unordered_map<PlanKey, std::unique_ptr<Plan>, PlanKeyHash> plans;
  bool autotune = true;
  size_t tuned = 0;           // plans whose algorithm the timing changed
  size_t peak_transient = 0;  // the largest transient output buffer of a timing, bytes

  ~Impl() {
    plans.clear();
    if (workspace) cudaFree(workspace);
    if (handle) cublasLtDestroy(handle);
  }
};

GemmContext::GemmContext() = default;
GemmContext::~GemmContext() = default;

Status GemmContext::init(size_t workspace_bytes) {
  auto impl = std::make_unique<Impl>();
  if (cublasLtCreate(&impl->handle) != CUBLAS_STATUS_SUCCESS) return Status::kCublasError;
  if (workspace_bytes > 0) {
    const cudaError_t e = cudaMalloc(&impl->workspace, workspace_bytes);
    if (e != cudaSuccess) {
      cudaGetLastError();
      return e == cudaErrorMemoryAllocation ? Status::kOutOfMemory : Status::kCudaError;
    }
  }
  impl->workspace_bytes = workspace_bytes;
  impl_ = std::move(impl);
  return Status::kOk;
}

bool GemmContext::ready() const { return impl_ != nullptr; }
size_t GemmContext::cached_plans() const { return impl_ ? impl_->plans.size() : 0; }
void GemmContext::set_autotune(bool on) {
  if (impl_) impl_->autotune = on;
}
size_t GemmContext::tuned_plans() const { return impl_ ? impl_->tuned : 0; }
size_t GemmContext::peak_transient_bytes() const { return impl_ ? impl_->peak_transient : 0; }

struct GemmAccess {
  static GemmContext::Impl* impl(GemmContext& ctx) { return ctx.impl_.get(); }
};

Status gemm_can_implement(const GemmArgs& g) {
  if (g.m <= 0 || g.n <= 0 || g.k <= 0 || g.batch <= 0) return Status::kInvalidArgument;
  if (!g.a || !g.b || !g.c) return Status::kInvalidArgument;
  if (g.lda < (g.trans_a ? g.m : g.k)) return Status::kInvalidArgument;
  if (g.ldb < (g.trans_b ? g.k : g.n)) return Status::kInvalidArgument;
  if (g.ldc < g.n) return Status::kInvalidArgument;
  if (g.batch > 1 && (g.stride_a < 0 || g.stride_b < 0 || g.stride_c <= 0)) return Status::kInvalidArgument;
  if (g.batch > INT32_MAX) return Status::kInvalidArgument;
  return Status::kOk;
}

namespace {

// The index of the fastest of the heuristic's candidates on this call's operands, or 0 (its first choice) when
// the stream is being captured, when no other is kTuneMargin faster, or when anything fails. The timed runs
// write D into C where C is not read (β = 0) and does not overlap A or B; else into a transient buffer, so
// that the call's own result is untouched until it runs with the chosen algorithm.
int fastest(GemmContext::Impl& impl, const Plan& plan, const GemmArgs& g,
            const cublasLtMatmulHeuristicResult_t* candidates, int count, cudaStream_t stream) {
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(stream, &capture) != cudaSuccess || capture != cudaStreamCaptureStatusNone) {
    cudaGetLastError();
    return 0;
  }
  const size_t c_bytes = span_bytes(g.m, g.ldc, g.batch, g.stride_c, type_bytes(g.c_type));
  const size_t a_bytes = span_bytes(g.trans_a ? g.k : g.m, g.lda, g.batch, g.stride_a, 2);
  const size_t b_bytes = span_bytes(g.trans_b ? g.n : g.k, g.ldb, g.batch, g.stride_b, 2);
  void* d = g.c;
  void* scratch = nullptr;
  if (g.beta != 0.0f || overlaps(g.c, c_bytes, g.a, a_bytes) || overlaps(g.c, c_bytes, g.b, b_bytes)) {
    if (cudaMalloc(&scratch, c_bytes) != cudaSuccess) {
      cudaGetLastError();
      return 0;
    }
    impl.peak_transient = std::max(impl.peak_transient, c_bytes);
    d = scratch;
  }
  cudaEvent_t start = nullptr, stop = nullptr;
  std::array<float, kTuneCandidates> fastest_ms;  // per candidate, over the rounds; infinite: not timed
  fastest_ms.fill(std::numeric_limits<float>::infinity());
  if (cudaEventCreate(&start) == cudaSuccess && cudaEventCreate(&stop) == cudaSuccess) {
    auto run = [&](const cublasLtMatmulAlgo_t& algo) {
      return cublasLtMatmul(impl.handle, plan.op, &g.alpha, g.b, plan.a, g.a, plan.b, &g.beta, g.c, plan.c, d, plan.c,
                            &algo, impl.workspace, impl.workspace_bytes, stream) == CUBLAS_STATUS_SUCCESS;
    };
    std::array<bool, kTuneCandidates> usable{};
    for (int i = 0; i < count; ++i) usable[i] = candidates[i].state == CUBLAS_STATUS_SUCCESS && run(candidates[i].algo);
    // Round after round over all candidates, each keeping its fastest: the clocks may still be rising during a
    // process's first GEMMs, which timing each candidate once, in order, would credit to the later ones.
    for (int round = 0; round < kTuneRounds; ++round) {
      for (int i = 0; i < count; ++i) {
        if (!usable[i]) continue;
        bool ok = cudaEventRecord(start, stream) == cudaSuccess;
        for (int r = 0; r < kTuneRuns && ok; ++r) ok = run(candidates[i].algo);
        float ms = 0.0f;
        ok = ok && cudaEventRecord(stop, stream) == cudaSuccess && cudaEventSynchronize(stop) == cudaSuccess &&
             cudaEventElapsedTime(&ms, start, stop) == cudaSuccess;
        if (ok) fastest_ms[i] = std::min(fastest_ms[i], ms);
        usable[i] = ok;
      }
    }
  }
  int best = 0;
  for (int i = 1; i < count; ++i) {
    if (fastest_ms[i] < fastest_ms[best] && fastest_ms[i] < kTuneMargin * fastest_ms[0]) best = i;
  }
  if (stop) cudaEventDestroy(stop);
  if (start) cudaEventDestroy(start);
  if (scratch) {
    cudaStreamSynchronize(stream);
    cudaFree(scratch);
  }
  cudaGetLastError();
  return std::isfinite(fastest_ms[0]) ? best : 0;
}

// Row-major C[m, n] = op(A)[m, k] · op(B)[k, n] is column-major Cᵀ[n, m] = op(B)ᵀ · op(A)ᵀ: cuBLASLt's
// first operand is our B, its second our A, and the stored layouts are read as their transposes.
Status run_gemm(GemmContext& ctx, const GemmArgs& g, cublasLtEpilogue_t epilogue, const void* bias,
                cudaStream_t stream) {
  GemmContext::Impl* impl = GemmAccess::impl(ctx);
  if (!impl) return Status::kInvalidArgument;
  if (Status s = gemm_can_implement(g); s != Status::kOk) return s;

  const PlanKey key = {g.m,
                       g.n,
                       g.k,
                       g.batch,
                       g.lda,
                       g.ldb,
                       g.ldc,
                       g.stride_a,
                       g.stride_b,
                       g.stride_c,
                       g.trans_a,
                       g.trans_b,
                       static_cast<int64_t>(g.c_type),
                       static_cast<int64_t>(epilogue),
                       alignment(g.a),
                       alignment(g.b),
                       alignment(g.c),
                       bias ? alignment(bias) : 0,
                       g.beta != 0.0f};
  auto it = impl->plans.find(key);
  if (it == impl->plans.end()) {
    auto plan = std::make_unique<Plan>();
    const cudaDataType_t ct = cuda_type(g.c_type);
    if (cublasLtMatmulDescCreate(&plan->op, CUBLAS_COMPUTE_32F, CUDA_R_32F) != CUBLAS_STATUS_SUCCESS) {
      return Status::kCublasError;
    }
    const int32_t op_first = g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;   // cuBLASLt's A = our B
    const int32_t op_second = g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;  // cuBLASLt's B = our A
    const auto epi = static_cast<int32_t>(epilogue);
    if (cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_TRANSA, &op_first, sizeof(op_first)) !=
            CUBLAS_STATUS_SUCCESS ||
        cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_TRANSB, &op_second, sizeof(op_second)) !=
            CUBLAS_STATUS_SUCCESS ||
        cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)) !=
            CUBLAS_STATUS_SUCCESS) {
      return Status::kCublasError;
    }
    if (bias && cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)) !=
                    CUBLAS_STATUS_SUCCESS) {
      return Status::kCublasError;
    }
    const int64_t first_rows = g.trans_b ? g.k : g.n, first_cols = g.trans_b ? g.n : g.k;
    const int64_t second_rows = g.trans_a ? g.m : g.k, second_cols = g.trans_a ? g.k : g.m;
    if (Status s = layout(&plan->a, CUDA_R_16F, first_rows, first_cols, g.ldb, g.batch, g.stride_b); s != Status::kOk)
      return s;
    if (Status s = layout(&plan->b, CUDA_R_16F, second_rows, second_cols, g.lda, g.batch, g.stride_a); s != Status::kOk)
      return s;
    if (Status s = layout(&plan->c, ct, g.n, g.m, g.ldc, g.batch, g.stride_c); s != Status::kOk) return s;

    cublasLtMatmulPreference_t pref = nullptr;
    if (cublasLtMatmulPreferenceCreate(&pref) != CUBLAS_STATUS_SUCCESS) return Status::kCublasError;
    const uint64_t ws = impl->workspace_bytes;
    const auto al_first = static_cast<uint32_t>(alignment(g.b));
    const auto al_second = static_cast<uint32_t>(alignment(g.a));
    const auto al_c = static_cast<uint32_t>(alignment(g.c));
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_first, sizeof(al_first));
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_second,
                                         sizeof(al_second));
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_c, sizeof(al_c));
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_c, sizeof(al_c));
    // Split-K partial sums stay in fp32: the in-place and output-type schemes add them up in fp16.
    if (g.c_type == DataType::kF16) {
      const uint32_t schemes = CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &schemes, sizeof(schemes));
    }
    const bool tune = impl->autotune && 2.0 * static_cast<double>(g.m) * static_cast<double>(g.n) *
                                                static_cast<double>(g.k) * static_cast<double>(g.batch) >=
                                            kTuneMinFlops;
    std::array<cublasLtMatmulHeuristicResult_t, kTuneCandidates> results{};
    int found = 0;
    const cublasStatus_t hs = cublasLtMatmulAlgoGetHeuristic(impl->handle, plan->op, plan->a, plan->b, plan->c, plan->c,
                                                             pref, tune ? kTuneCandidates : 1, results.data(), &found);
    cublasLtMatmulPreferenceDestroy(pref);
    if (hs == CUBLAS_STATUS_NOT_SUPPORTED || (hs == CUBLAS_STATUS_SUCCESS && found == 0)) {
      return Status::kNotSupported;
    }
    if (hs != CUBLAS_STATUS_SUCCESS || results[0].state != CUBLAS_STATUS_SUCCESS) return Status::kCublasError;
    plan->algo = results[0].algo;
    if (found > 1) {
      const int best = fastest(*impl, *plan, g, results.data(), found, stream);
      plan->algo = results[static_cast<size_t>(best)].algo;
      impl->tuned += best != 0;
    }
    it = impl->plans.emplace(key, std::move(plan)).first;
  }
  Plan& plan = *it->second;
  if (bias && cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)) !=
                  CUBLAS_STATUS_SUCCESS) {
    return Status::kCublasError;
  }
  const cublasStatus_t st =
      cublasLtMatmul(impl->handle, plan.op, &g.alpha, g.b, plan.a, g.a, plan.b, &g.beta, g.c, plan.c, g.c, plan.c,
                     &plan.algo, impl->workspace, impl->workspace_bytes, stream);
  return st == CUBLAS_STATUS_SUCCESS ? Status::kOk : Status::kCublasError;
}

GemmArgs linear_args(const __half* x, int64_t ldx, const __half* w, void* y, DataType y_type, int64_t ldy, int64_t m,
                     int64_t n, int64_t k) {
  GemmArgs g;
  g.m = m;
  g.n = n;
  g.k = k;
  g.a = x;
  g.lda = ldx;
  g.b = w;
  g.ldb = k;
  g.trans_b = true;
  g.c = y;
  g.c_type = y_type;
  g.ldc = ldy;
  return g;
}

}  // namespace

Status gemm(GemmContext& ctx, const GemmArgs& args, cudaStream_t stream) {
  return run_gemm(ctx, args, CUBLASLT_EPILOGUE_DEFAULT, nullptr, stream);
}

Status linear(GemmContext& ctx, const __half* x, int64_t ldx, const __half* w, const __half* bias, __half* y,
              int64_t ldy, int64_t m, int64_t n, int64_t k, Epilogue epilogue, cudaStream_t stream, bool accumulate) {
  if (accumulate && (epilogue == Epilogue::kBiasGeluTanh || epilogue == Epilogue::kBiasGeluErf)) {
    return Status::kInvalidArgument;
  }
  cublasLtEpilogue_t e = CUBLASLT_EPILOGUE_DEFAULT;
  switch (epilogue) {
    case Epilogue::kNone:
      break;
    case Epilogue::kBias:
    case Epilogue::kBiasGeluErf:
      e = CUBLASLT_EPILOGUE_BIAS;
      break;
    case Epilogue::kBiasGeluTanh:
      e = CUBLASLT_EPILOGUE_GELU_BIAS;
      break;
  }
  if (epilogue != Epilogue::kNone && !bias) return Status::kInvalidArgument;
  GemmArgs g = linear_args(x, ldx, w, y, DataType::kF16, ldy, m, n, k);
  if (accumulate) g.beta = 1.0f;
  if (Status s = run_gemm(ctx, g, e, epilogue == Epilogue::kNone ? nullptr : bias, stream); s != Status::kOk) {
    return s;
  }
  if (epilogue == Epilogue::kBiasGeluErf) return add_bias_gelu(y, nullptr, m, n, ldy, true, stream);
  return Status::kOk;
}

Status linear(GemmContext& ctx, const __half* x, const __half* w, const __half* bias, __half* y, int64_t m, int64_t n,
              int64_t k, Epilogue epilogue, cudaStream_t stream) {
  return linear(ctx, x, k, w, bias, y, n, m, n, k, epilogue, stream);
}

Status linear_f32_out(GemmContext& ctx, const __half* x, int64_t ldx, const __half* w, const float* bias, float* y,
                      int64_t ldy, int64_t m, int64_t n, int64_t k, cudaStream_t stream) {
  const GemmArgs g = linear_args(x, ldx, w, y, DataType::kF32, ldy, m, n, k);
  return run_gemm(ctx, g, bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT, bias, stream);
}

size_t attention_unfused_scratch_bytes(int64_t n_q, int64_t n_kv, int64_t n_head) {
  const auto count = static_cast<size_t>(n_q * n_kv * n_head);
  // Scores (fp32) then probabilities (fp16); the second starts 256-byte aligned.
  return (count * sizeof(float) + 255) / 256 * 256 + count * sizeof(__half);
}

Status attention_unfused(GemmContext& ctx, const __half* q, int64_t ldq, const __half* k, int64_t ldk, const __half* v,
                         int64_t ldv, __half* out, int64_t ldo, int64_t n_q, int64_t n_kv, int64_t n_head,
                         int64_t head_dim, bool causal, int64_t q_offset, void* scratch, cudaStream_t stream) {
  if (n_q <= 0 || n_kv <= 0 || n_head <= 0 || head_dim <= 0 || !scratch || q_offset < 0) {
    return Status::kInvalidArgument;
  }
  const auto count = static_cast<size_t>(n_q * n_kv * n_head);
  auto* scores = static_cast<float*>(scratch);
  auto* probs = reinterpret_cast<__half*>(static_cast<char*>(scratch) + (count * sizeof(float) + 255) / 256 * 256);

  GemmArgs s;  // scores[h] [n_q, n_kv] = Q_h · K_hᵀ
  s.m = n_q;
  s.n = n_kv;
  s.k = head_dim;
  s.batch = n_head;
  s.a = q;
  s.lda = ldq;
  s.stride_a = head_dim;
  s.b = k;
  s.ldb = ldk;
  s.stride_b = head_dim;
  s.trans_b = true;
  s.c = scores;
  s.c_type = DataType::kF32;
  s.ldc = n_kv;
  s.stride_c = n_q * n_kv;
  if (Status st = gemm(ctx, s, stream); st != Status::kOk) return st;

  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  if (Status st = softmax_rows(scores, probs, n_head * n_q, n_kv, scale, causal, q_offset, n_q, stream);
      st != Status::kOk) {
    return st;
  }

  GemmArgs o;  // out_h [n_q, head_dim] = P_h · V_h
  o.m = n_q;
  o.n = head_dim;
  o.k = n_kv;
  o.batch = n_head;
  o.a = probs;
  o.lda = n_kv;
  o.stride_a = n_q * n_kv;
  o.b = v;
  o.ldb = ldv;
  o.stride_b = head_dim;
  o.c = out;
  o.c_type = DataType::kF16;
  o.ldc = ldo;
  o.stride_c = head_dim;
  return gemm(ctx, o, stream);
}

}  // namespace wisp::kernels::cuda
