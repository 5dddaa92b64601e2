#include "ops/ops.h"

#include <cstring>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/quantize.h"
#include "wisp/errors.h"

namespace wisp::ops {

namespace cpu = kernels::cpu;
using core::Device;
using core::DType;

namespace {

void expect(bool ok, const char* op, const std::string& what) {
  if (!ok) throw InternalError(std::string(op) + ": " + what);
}

void expect_host_f32(const Tensor& t, const char* op, const char* name) {
  expect(t.defined(), op, std::string(name) + " is undefined");
  expect(t.device() == Device::kCpu, op, std::string(name) + " must be on the host (CUDA backend not built)");
  expect(t.dtype() == DType::kF32, op, std::string(name) + " must be f32, is " + t.describe());
}

// y = x · wᵀ + bias for every weight type; linear_into and both linear overloads end here.
void linear_checked(const Tensor& x, const Tensor& w, const Tensor& w_scale, const Tensor& bias, Tensor& y) {
  expect_host_f32(x, "linear", "x");
  expect(w.defined() && w.device() == Device::kCpu && w.rank() == 2 && x.rank() == 2, "linear",
         "needs host matrices x and w, got " + x.describe() + " and " + w.describe());
  // Packed int4 holds two columns a byte.
  const int64_t k = w.dtype() == DType::kU8 ? 2 * w.dim(1) : w.dim(1);
  expect(x.dim(1) == k, "linear", "x " + x.describe() + " does not match w " + w.describe());
  expect(!bias.defined() || (bias.dtype() == DType::kF32 && bias.numel() == w.dim(0)), "linear",
         "bias must be f32 [n], is " + bias.describe());
  expect(y.rank() == 2 && y.dim(0) == x.dim(0) && y.dim(1) == w.dim(0) && y.dtype() == DType::kF32, "linear",
         "y " + y.describe() + " has the wrong shape");
  const bool quantized = w.dtype() == DType::kI8 || w.dtype() == DType::kU8;
  expect(quantized == w_scale.defined(), "linear",
         "w " + w.describe() + (quantized ? " needs" : " takes no") + " scale, got " + w_scale.describe());
  const float* b = bias.defined() ? bias.data<float>() : nullptr;
  const int64_t m = x.dim(0), n = w.dim(0);
  switch (w.dtype()) {
    case DType::kF32:
      return cpu::linear_f32(x.data<float>(), w.data<float>(), b, y.data<float>(), m, n, k);
    case DType::kF16:
      return cpu::linear_f16w(x.data<float>(), w.data<uint16_t>(), b, y.data<float>(), m, n, k);
    case DType::kI8:
      expect(w_scale.dtype() == DType::kF32 && w_scale.shape() == core::Shape{n}, "linear",
             "int8 scale must be f32 [n], is " + w_scale.describe());
      return cpu::linear_i8w(x.data<float>(), w.data<int8_t>(), w_scale.data<float>(), b, y.data<float>(), m, n, k);
    case DType::kU8: {
      expect(w_scale.dtype() == DType::kF32 && w_scale.rank() == 2 && w_scale.dim(0) == n && w_scale.dim(1) > 0 &&
                 k % w_scale.dim(1) == 0 && (k / w_scale.dim(1)) % 32 == 0,
             "linear", "int4 scale must be f32 [n, k / group] with group a multiple of 32, is " + w_scale.describe());
      return cpu::linear_i4w(x.data<float>(), w.data<uint8_t>(), w_scale.data<float>(), b, y.data<float>(), m, n, k,
                             k / w_scale.dim(1));
    }
    default:
      throw InternalError("linear: unsupported weight type " + w.describe());
  }
}

// The f32 copy of a float matrix [n, k] that the quantisers read.
Tensor matrix_f32(const Tensor& w, const char* op) {
  expect(w.defined() && w.device() == Device::kCpu && w.rank() == 2, op, "w must be a host matrix");
  expect(w.dtype() == DType::kF32 || w.dtype() == DType::kF16 || w.dtype() == DType::kBF16, op,
         "w must be f32, f16 or bf16, is " + w.describe());
  return to_f32(w);
}

}  // namespace

void set_num_threads(int n) { cpu::set_num_threads(n); }
int num_threads() { return cpu::num_threads(); }
void set_num_threads_of_this_thread(int n) { cpu::set_num_threads_of_this_thread(n); }

void linear_into(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& y) {
  linear_checked(x, w, Tensor(), bias, y);
}

Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias) { return linear(x, w, Tensor(), bias); }

Tensor linear(const Tensor& x, const Tensor& w, const Tensor& w_scale, const Tensor& bias) {
  Tensor y = Tensor::empty({x.dim(0), w.dim(0)}, DType::kF32);
  linear_checked(x, w, w_scale, bias, y);
  return y;
}

QuantizedWeight quantize_int8(const Tensor& w) {
  const Tensor f = matrix_f32(w, "quantize_int8");
  const int64_t n = f.dim(0), k = f.dim(1);
  QuantizedWeight q{Tensor::empty({n, k}, DType::kI8), Tensor::empty({n}, DType::kF32)};
  cpu::quantize_i8(f.data<float>(), q.codes.data<int8_t>(), q.scale.data<float>(), n, k);
  return q;
}

QuantizedWeight quantize_int4(const Tensor& w, int64_t group) {
  const Tensor f = matrix_f32(w, "quantize_int4");
  const int64_t n = f.dim(0), k = f.dim(1);
  expect((group == 64 || group == 128) && k % group == 0, "quantize_int4",
         "group " + std::to_string(group) + " must be 64 or 128 and divide " + w.describe());
  QuantizedWeight q{Tensor::empty({n, k / 2}, DType::kU8), Tensor::empty({n, k / group}, DType::kF32)};
  cpu::quantize_i4(f.data<float>(), q.codes.data<uint8_t>(), q.scale.data<float>(), n, k, group);
  return q;
}

namespace {
// GPTQ's damping, as a fraction of the gram's mean diagonal (the reference implementation's default).
constexpr float kGptqDamp = 0.01f;

Tensor gptq_gram(const Tensor& w, const Tensor& gram, const char* op) {
  const Tensor g = matrix_f32(gram, op);
  expect(g.dim(0) == w.dim(1) && g.dim(1) == w.dim(1), op,
         "gram " + gram.describe() + " does not match " + w.describe());
  return g;
}
}  // namespace

QuantizedWeight gptq_int8(const Tensor& w, const Tensor& gram) {
  const Tensor f = matrix_f32(w, "gptq_int8");
  const Tensor g = gptq_gram(w, gram, "gptq_int8");
  const int64_t n = f.dim(0), k = f.dim(1);
  QuantizedWeight q{Tensor::empty({n, k}, DType::kI8), Tensor::empty({n}, DType::kF32)};
  expect(cpu::gptq_quantize_i8(f.data<float>(), g.data<float>(), q.codes.data<int8_t>(), q.scale.data<float>(), n, k,
                               kGptqDamp),
         "gptq_int8", "the damped input gram is not positive definite");
  return q;
}

QuantizedWeight gptq_int4(const Tensor& w, const Tensor& gram, int64_t group) {
  const Tensor f = matrix_f32(w, "gptq_int4");
  const Tensor g = gptq_gram(w, gram, "gptq_int4");
  const int64_t n = f.dim(0), k = f.dim(1);
  expect((group == 64 || group == 128) && k % group == 0, "gptq_int4",
         "group " + std::to_string(group) + " must be 64 or 128 and divide " + w.describe());
  QuantizedWeight q{Tensor::empty({n, k / 2}, DType::kU8), Tensor::empty({n, k / group}, DType::kF32)};
  expect(cpu::gptq_quantize_i4(f.data<float>(), g.data<float>(), q.codes.data<uint8_t>(), q.scale.data<float>(), n, k,
                               group, kGptqDamp),
         "gptq_int4", "the damped input gram is not positive definite");
  return q;
}

void add_gram_upper(const Tensor& x, Tensor& gram) {
  expect_host_f32(x, "add_gram_upper", "x");
  expect_host_f32(gram, "add_gram_upper", "gram");
  expect(x.rank() == 2 && gram.rank() == 2 && gram.dim(0) == x.dim(1) && gram.dim(1) == x.dim(1), "add_gram_upper",
         "gram " + gram.describe() + " does not match x " + x.describe());
  cpu::add_gram_upper(x.data<float>(), gram.data<float>(), x.dim(0), x.dim(1));
}

Tensor layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps) {
  expect_host_f32(x, "layer_norm", "x");
  expect_host_f32(gamma, "layer_norm", "gamma");
  expect_host_f32(beta, "layer_norm", "beta");
  const int64_t d = x.dim(-1);
  expect(gamma.numel() == d && beta.numel() == d, "layer_norm", "gamma/beta do not match " + x.describe());
  Tensor y = Tensor::empty(x.shape(), DType::kF32);
  cpu::layer_norm(x.data<float>(), gamma.data<float>(), beta.data<float>(), y.data<float>(), x.numel() / d, d, eps);
  return y;
}

void gelu_(Tensor& x) {
  expect_host_f32(x, "gelu", "x");
  cpu::gelu(x.data<float>(), x.numel());
}

void add_(Tensor& y, const Tensor& x) {
  expect_host_f32(y, "add", "y");
  expect_host_f32(x, "add", "x");
  expect(x.shape() == y.shape(), "add", x.describe() + " vs " + y.describe());
  cpu::add(y.data<float>(), x.data<float>(), y.data<float>(), y.numel());
}

Tensor conv1d_gelu(const Tensor& x, const Tensor& w, const Tensor& bias, int stride) {
  expect_host_f32(x, "conv1d", "x");
  expect(w.rank() == 3 && w.dim(2) == 3 && w.dim(1) == x.dim(1), "conv1d",
         "w " + w.describe() + " does not match x " + x.describe());
  expect(x.rank() == 2 && stride >= 1, "conv1d",
         "needs x [t, c] and stride >= 1, got stride " + std::to_string(stride));
  const int64_t t_in = x.dim(0), c_in = x.dim(1), c_out = w.dim(0);
  const int64_t t_out = (t_in - 1) / stride + 1;
  Tensor col = Tensor::empty({t_out, c_in * 3}, DType::kF32);
  cpu::im2col_k3(x.data<float>(), col.data<float>(), t_in, c_in, t_out, stride);
  Tensor y = linear(col, w.reshape({c_out, c_in * 3}), bias);
  gelu_(y);
  return y;
}

Tensor attention(Columns q, Columns k, Columns v, int64_t width, int64_t n_head, bool causal, int64_t q_offset) {
  for (const Columns* c : {&q, &k, &v}) {
    expect_host_f32(*c->t, "attention", "q/k/v");
    expect(c->t->rank() == 2 && c->col + width <= c->t->dim(1) && c->rows <= c->t->dim(0), "attention",
           "column range out of " + c->t->describe());
  }
  expect(width % n_head == 0 && k.rows == v.rows, "attention", "bad head split or key/value lengths");
  Tensor out = Tensor::empty({q.rows, width}, DType::kF32);
  std::vector<float> scratch(static_cast<size_t>(q.rows > 4 ? q.rows * k.rows : 1));
  cpu::attention(q.t->data<float>() + q.col, q.t->dim(1), k.t->data<float>() + k.col, k.t->dim(1),
                 v.t->data<float>() + v.col, v.t->dim(1), out.data<float>(), width, q.rows, k.rows, n_head,
                 width / n_head, causal, q_offset, scratch.data());
  return out;
}

Tensor attention_scores(Columns q, Columns k, int64_t width, int64_t n_head, int64_t head) {
  for (const Columns* c : {&q, &k}) {
    expect_host_f32(*c->t, "attention_scores", "q/k");
    expect(c->t->rank() == 2 && c->col >= 0 && c->col + width <= c->t->dim(1) && c->rows <= c->t->dim(0),
           "attention_scores", "column range out of " + c->t->describe());
  }
  expect(n_head > 0 && width % n_head == 0, "attention_scores", "bad head split");
  expect(head >= 0 && head < n_head, "attention_scores", "head " + std::to_string(head) + " out of range");
  const int64_t head_dim = width / n_head;
  Tensor scores = Tensor::empty({q.rows, k.rows}, DType::kF32);
  if (q.rows == 0 || k.rows == 0) return scores;
  cpu::attention_scores(q.t->data<float>() + q.col + head * head_dim, q.t->dim(1),
                        k.t->data<float>() + k.col + head * head_dim, k.t->dim(1), scores.data<float>(), q.rows, k.rows,
                        head_dim);
  return scores;
}

Tensor attention_decode(Columns q, Columns k, Columns v, int64_t width, int64_t n_head, int64_t kv_stride,
                        int64_t n_kv) {
  for (const Columns* c : {&q, &k, &v}) {
    expect_host_f32(*c->t, "attention_decode", "q/k/v");
    expect(c->t->rank() == 2 && c->col >= 0 && c->col + width <= c->t->dim(1) && c->rows <= c->t->dim(0),
           "attention_decode", "column range out of " + c->t->describe());
  }
  expect(width % n_head == 0 && n_kv > 0 && kv_stride >= 0, "attention_decode", "bad head split or lengths");
  const int64_t batch = q.rows;
  const int64_t last_row = (batch - 1) * kv_stride + n_kv;  // rows of k and v the last query reads
  expect(last_row <= k.rows && last_row <= v.rows, "attention_decode",
         "keys/values hold " + std::to_string(k.rows) + " rows, the batch reads " + std::to_string(last_row));
  Tensor out = Tensor::empty({batch, width}, DType::kF32);
  cpu::attention_decode(q.t->data<float>() + q.col, q.t->dim(1), k.t->data<float>() + k.col, k.t->dim(1),
                        v.t->data<float>() + v.col, v.t->dim(1), out.data<float>(), width, batch, kv_stride, n_kv,
                        n_head, width / n_head);
  return out;
}

void copy_rows(Columns src, int64_t width, Tensor& dst, int64_t row) {
  expect_host_f32(*src.t, "copy_rows", "src");
  expect_host_f32(dst, "copy_rows", "dst");
  expect(src.t->rank() == 2 && src.col >= 0 && src.col + width <= src.t->dim(1) && src.rows <= src.t->dim(0),
         "copy_rows", "column range out of " + src.t->describe());
  expect(dst.rank() == 2 && dst.dim(1) == width && row + src.rows <= dst.dim(0), "copy_rows",
         "destination " + dst.describe() + " too small");
  const float* s = src.t->data<float>() + src.col;
  float* d = dst.data<float>() + row * width;
  const int64_t ld = src.t->dim(1);
  for (int64_t r = 0; r < src.rows; ++r) std::memcpy(d + r * width, s + r * ld, static_cast<size_t>(width) * 4);
}

void log_softmax_(std::span<float> row) { cpu::log_softmax(row.data(), static_cast<int64_t>(row.size())); }
float max_value(std::span<const float> row) { return cpu::max_value(row.data(), static_cast<int64_t>(row.size())); }
int64_t argmax(std::span<const float> row) { return cpu::argmax(row.data(), static_cast<int64_t>(row.size())); }
int64_t first_above(std::span<const float> row, float threshold) {
  return cpu::first_above(row.data(), static_cast<int64_t>(row.size()), threshold);
}
double log_sum_exp(std::span<const float> row) {
  return cpu::log_sum_exp(row.data(), static_cast<int64_t>(row.size()));
}

Tensor to_f32(const Tensor& t) { return t.dtype() == DType::kF32 ? t : t.to_f32(); }

}  // namespace wisp::ops
