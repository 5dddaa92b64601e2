#include "core/tensor.h"

#include <cstdlib>
#include <cstring>
#include <sstream>

#include "wisp/errors.h"

namespace wisp::core {

const char* device_name(Device d) { return d == Device::kCpu ? "cpu" : "cuda"; }

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

std::string shape_str(const Shape& s) {
  std::ostringstream os;
  os << '[';
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << ']';
  return os.str();
}

Tensor Tensor::empty(Shape shape, DType dtype) {
  for (int64_t d : shape) {
    if (d < 0) throw InvalidArgument("negative tensor dimension in " + shape_str(shape));
  }
  Tensor t;
  const size_t bytes = static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype);
  // Round up so aligned_alloc's size rule holds and vector loads may read a full last line.
  const size_t padded = ((bytes + 63) / 64) * 64 + 64;
  void* p = std::aligned_alloc(64, padded);
  if (!p) throw InternalError("out of host memory allocating " + std::to_string(bytes) + " bytes");
  t.owner_ = std::shared_ptr<void>(p, [](void* q) { std::free(q); });
  t.data_ = p;
  t.shape_ = std::move(shape);
  t.dtype_ = dtype;
  return t;
}

Tensor Tensor::zeros(Shape shape, DType dtype) {
  Tensor t = empty(std::move(shape), dtype);
  std::memset(t.data_, 0, t.nbytes());
  return t;
}

Tensor Tensor::wrap(std::shared_ptr<const void> owner, const void* data, Shape shape, DType dtype, Device device) {
  Tensor t;
  t.owner_ = std::move(owner);
  t.data_ = const_cast<void*>(data);  // constness is the model's contract: weights are never written
  t.shape_ = std::move(shape);
  t.dtype_ = dtype;
  t.device_ = device;
  return t;
}

int64_t Tensor::dim(int i) const {
  const int r = rank();
  if (i < 0) i += r;
  if (i < 0 || i >= r) throw InternalError("dimension " + std::to_string(i) + " out of range for " + describe());
  return shape_[i];
}

Tensor Tensor::reshape(Shape shape) const {
  if (shape_numel(shape) != numel()) {
    throw InternalError("cannot reshape " + describe() + " to " + shape_str(shape));
  }
  Tensor t = *this;
  t.shape_ = std::move(shape);
  return t;
}

Tensor Tensor::rows(int64_t begin, int64_t end) const {
  if (rank() == 0 || begin < 0 || end < begin || end > shape_[0]) {
    throw InternalError("rows [" + std::to_string(begin) + ", " + std::to_string(end) + ") out of " + describe());
  }
  Tensor t = *this;
  const size_t row_bytes = static_cast<size_t>(numel() / std::max<int64_t>(shape_[0], 1)) * dtype_size(dtype_);
  t.data_ = static_cast<char*>(data_) + begin * row_bytes;
  t.shape_[0] = end - begin;
  return t;
}

Tensor Tensor::to_f32() const {
  if (device_ != Device::kCpu) throw InternalError("to_f32 needs a host tensor");
  Tensor out = empty(shape_, DType::kF32);
  float* dst = out.data<float>();
  const int64_t n = numel();
  switch (dtype_) {
    case DType::kF32:
      std::memcpy(dst, data_, nbytes());
      break;
    case DType::kF16: {
      const auto* src = static_cast<const uint16_t*>(data_);
      for (int64_t i = 0; i < n; ++i) dst[i] = half_to_float(src[i]);
      break;
    }
    case DType::kBF16: {
      const auto* src = static_cast<const uint16_t*>(data_);
      for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_float(src[i]);
      break;
    }
    default:
      throw InternalError(std::string("cannot convert ") + dtype_name(dtype_) + " to f32");
  }
  return out;
}

Tensor Tensor::clone() const {
  Tensor out = empty(shape_, dtype_);
  std::memcpy(out.data_, data_, nbytes());
  return out;
}

std::string Tensor::describe() const { return std::string(dtype_name(dtype_)) + shape_str(shape_); }

void Tensor::check_type(DType t) const {
  // f16 and bf16 share the uint16_t accessor: both are raw 16-bit patterns.
  const bool half_alias = t == DType::kF16 && dtype_ == DType::kBF16;
  if (t != dtype_ && !half_alias) {
    throw InternalError(std::string("tensor is ") + describe() + ", accessed as " + dtype_name(t));
  }
}

}  // namespace wisp::core
