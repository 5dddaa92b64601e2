// Helpers shared by the CUDA kernel tests (cuda_kernels_test, cuda_gemv_test, cuda_kv_quant_test): typed
// device buffers and fp16 transfers, the fixture that skips without a device, GELU and attention references,
// and the error bound of cuda_kernels_test.cpp (max|gpu − ref| ≤ 2 · max|naive − ref| + half an fp16 ulp of the
// largest reference value, 2^-20 of it for fp32 outputs).
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "kernels/cuda/cuda_kernels.h"

// EXPECT_EQ(expr, kOk), naming the status on failure.
#define EXPECT_STATUS_OK(expr)                                                                                    \
  do {                                                                                                            \
    const ::wisp::kernels::cuda::Status s_ = (expr);                                                              \
    EXPECT_EQ(s_, ::wisp::kernels::cuda::Status::kOk) << #expr << ": " << ::wisp::kernels::cuda::status_name(s_); \
  } while (0)

namespace wisp::test {

// x rounded to fp16 and back.
inline float r16(float x) { return core::half_to_float(core::float_to_half(x)); }

// ---- device buffers ----------------------------------------------------------------------------------------

template <class T>
class Dev {
 public:
  explicit Dev(size_t n) : n_(n) {
    if (n_ > 0 && cudaMalloc(reinterpret_cast<void**>(&p_), n_ * sizeof(T)) != cudaSuccess) {
      ADD_FAILURE() << "cudaMalloc of " << n_ * sizeof(T) << " bytes failed";
      p_ = nullptr;
    }
  }
  ~Dev() {
    if (p_) cudaFree(p_);
  }
  Dev(const Dev&) = delete;
  Dev& operator=(const Dev&) = delete;
  T* get() const { return p_; }
  size_t size() const { return n_; }
  void poison() {
    if (p_) cudaMemset(p_, 0xff, n_ * sizeof(T));  // NaN in fp16 and fp32, -1 in int32
  }
  void zero() {
    if (p_) cudaMemset(p_, 0, n_ * sizeof(T));
  }

 private:
  T* p_ = nullptr;
  size_t n_;
};

// fp16 values held as floats on the host (every value exactly representable in fp16).
inline std::unique_ptr<Dev<__half>> upload_half(const std::vector<float>& v) {
  auto d = std::make_unique<Dev<__half>>(v.size());
  std::vector<uint16_t> bits(v.size());
  for (size_t i = 0; i < v.size(); ++i) bits[i] = core::float_to_half(v[i]);
  if (!v.empty()) cudaMemcpy(d->get(), bits.data(), bits.size() * 2, cudaMemcpyHostToDevice);
  return d;
}
// p: [n] on the device.
inline std::vector<uint16_t> download_bits(const __half* p, size_t n) {
  std::vector<uint16_t> bits(n);
  EXPECT_EQ(cudaMemcpy(bits.data(), p, n * 2, cudaMemcpyDeviceToHost), cudaSuccess);
  return bits;
}
// p: [n] on the device.
inline std::vector<float> download_half(const __half* p, size_t n) {
  const auto bits = download_bits(p, n);
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = core::half_to_float(bits[i]);
  return v;
}
template <class T>
std::unique_ptr<Dev<T>> upload(const std::vector<T>& v) {
  auto d = std::make_unique<Dev<T>>(v.size());
  if (!v.empty()) cudaMemcpy(d->get(), v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice);
  return d;
}
// p: [n] on the device.
template <class T>
std::vector<T> download(const T* p, size_t n) {
  std::vector<T> v(n);
  EXPECT_EQ(cudaMemcpy(v.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
  return v;
}

inline void sync_ok() {
  const cudaError_t e = cudaDeviceSynchronize();
  ASSERT_EQ(e, cudaSuccess) << cudaGetErrorString(e);
}

// A fixture whose tests skip with "no CUDA device" on a machine without one.
class DeviceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!kernels::cuda::device_available()) GTEST_SKIP() << "no CUDA device";
  }
};

// Runs `body` with the decoder attention on the tensor cores and then on the CUDA cores
// (set_decoder_attention_mma), naming each form; the default form is restored afterwards, even on a failed ASSERT.
template <typename Body>
void for_each_decoder_attention_form(const Body& body) {
  struct Restore {
    ~Restore() { kernels::cuda::set_decoder_attention_mma(true); }
  } restore;
  for (const bool mma : {true, false}) {
    kernels::cuda::set_decoder_attention_mma(mma);
    SCOPED_TRACE(mma ? "tensor-core decoder attention" : "CUDA-core decoder attention");
    body(mma ? " [mma]" : " [simt]");
  }
}

// ---- references ----------------------------------------------------------------------------------------------

inline double gelu_erf_d(double x) { return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0))); }
inline float gelu_erf_f(float x) { return 0.5f * x * (1.0f + std::erf(x * 0.70710678118654752f)); }

// One query row of one head against keys [0, visible): the fp64 reference and the naive fp16-storage
// implementation (fp32 scores and softmax, P rounded to fp16, fp32 accumulation of P·V, output rounded).
// q: [hd]; k, v: [visible] rows of hd values, ldk / ldv apart; ref, naive: [hd] out.
inline void attention_row_refs(const float* q, const float* k, int64_t ldk, const float* v, int64_t ldv,
                               int64_t visible, int64_t hd, double* ref, float* naive) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  std::vector<double> sd(static_cast<size_t>(visible));
  std::vector<float> sf(static_cast<size_t>(visible));
  double md = -INFINITY;
  float mf = -std::numeric_limits<float>::infinity();
  for (int64_t j = 0; j < visible; ++j) {
    double a = 0;
    float b = 0;
    for (int64_t e = 0; e < hd; ++e) {
      a += static_cast<double>(q[e]) * k[j * ldk + e];
      b += q[e] * k[j * ldk + e];
    }
    sd[static_cast<size_t>(j)] = a * scale;
    sf[static_cast<size_t>(j)] = b * static_cast<float>(scale);
    md = std::max(md, sd[static_cast<size_t>(j)]);
    mf = std::max(mf, sf[static_cast<size_t>(j)]);
  }
  double zd = 0;
  float zf = 0;
  for (int64_t j = 0; j < visible; ++j) {
    sd[static_cast<size_t>(j)] = std::exp(sd[static_cast<size_t>(j)] - md);
    sf[static_cast<size_t>(j)] = std::exp(sf[static_cast<size_t>(j)] - mf);
    zd += sd[static_cast<size_t>(j)];
    zf += sf[static_cast<size_t>(j)];
  }
  for (int64_t j = 0; j < visible; ++j) sf[static_cast<size_t>(j)] = r16(sf[static_cast<size_t>(j)] / zf);
  for (int64_t e = 0; e < hd; ++e) {
    double od = 0;
    float of = 0;
    for (int64_t j = 0; j < visible; ++j) {
      od += sd[static_cast<size_t>(j)] * v[j * ldv + e];
      of += sf[static_cast<size_t>(j)] * v[j * ldv + e];
    }
    ref[e] = visible > 0 ? od / zd : 0.0;
    naive[e] = r16(of);
  }
}

// ---- the error bound -----------------------------------------------------------------------------------------

enum class Out { kHalf, kFloat };

// Collects (ref, gpu, naive) triples of one case, then prints a line (`what` and the count in columns of
// what_width and count_width characters) and checks the bound.
struct ErrorCheck {
  std::string what;
  Out out = Out::kHalf;
  int what_width = 58, count_width = 9;
  double err_gpu = 0.0, err_naive = 0.0, ref_max = 0.0;
  size_t count = 0, not_finite = 0;

  ErrorCheck(std::string w, Out o, int ww = 58, int cw = 9)
      : what(std::move(w)), out(o), what_width(ww), count_width(cw) {}
  void add(double ref, double gpu, double naive) {
    ++count;
    if (!std::isfinite(gpu) && std::isfinite(ref)) ++not_finite;
    err_gpu = std::max(err_gpu, std::fabs(gpu - ref));
    err_naive = std::max(err_naive, std::fabs(naive - ref));
    ref_max = std::max(ref_max, std::fabs(ref));
  }
  void expect() const {
    const double floor = std::ldexp(ref_max, out == Out::kHalf ? -11 : -20) + 1e-30;
    const double bound = 2.0 * err_naive + floor;
    std::printf("  %-*s n=%-*zu |ref|max=%-9.3g gpu=%-9.3g naive=%-9.3g bound=%.3g\n", what_width, what.c_str(),
                count_width, count, ref_max, err_gpu, err_naive, bound);
    EXPECT_GT(count, 0u) << what;
    EXPECT_EQ(not_finite, 0u) << what << ": non-finite outputs (unwritten or overflowed)";
    EXPECT_LE(err_gpu, bound) << what << ": gpu error " << err_gpu << ", naive error " << err_naive << ", |ref| max "
                              << ref_max;
  }
};

}  // namespace wisp::test
