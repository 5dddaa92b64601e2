// A dense, contiguous, row-major tensor: a shape, a dtype, a device and shared storage.
// Views (reshape, row slices) share the storage; the storage may be owned memory or a region of a
// memory-mapped model file kept alive by the view.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace wisp::core {

enum class Device : uint8_t { kCpu = 0, kCuda = 1 };
const char* device_name(Device d);

using Shape = std::vector<int64_t>;
int64_t shape_numel(const Shape& s);
std::string shape_str(const Shape& s);

template <class T>
constexpr DType dtype_of();
template <>
constexpr DType dtype_of<float>() {
  return DType::kF32;
}
template <>
constexpr DType dtype_of<uint16_t>() {
  return DType::kF16;
}  // raw half bits
template <>
constexpr DType dtype_of<int8_t>() {
  return DType::kI8;
}
template <>
constexpr DType dtype_of<int32_t>() {
  return DType::kI32;
}
template <>
constexpr DType dtype_of<uint8_t>() {
  return DType::kU8;
}

class Tensor {
 public:
  Tensor() = default;

  // Uninitialised host memory, 64-byte aligned.
  static Tensor empty(Shape shape, DType dtype);
  static Tensor zeros(Shape shape, DType dtype);
  // A view of memory owned elsewhere; `owner` keeps it alive as long as any view exists.
  static Tensor wrap(std::shared_ptr<const void> owner, const void* data, Shape shape, DType dtype,
                     Device device = Device::kCpu);

  bool defined() const { return data_ != nullptr; }
  const Shape& shape() const { return shape_; }
  int rank() const { return static_cast<int>(shape_.size()); }
  int64_t dim(int i) const;  // negative i counts from the end
  int64_t numel() const { return shape_numel(shape_); }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }

  template <class T>
  T* data() {
    check_type(dtype_of<T>());
    return static_cast<T*>(data_);
  }
  template <class T>
  const T* data() const {
    check_type(dtype_of<T>());
    return static_cast<const T*>(data_);
  }
  void* raw() { return data_; }
  const void* raw() const { return data_; }

  // Same storage, another shape with the same element count.
  Tensor reshape(Shape shape) const;
  // Rows [begin, end) along dimension 0.
  Tensor rows(int64_t begin, int64_t end) const;
  // A host copy converted to float32 (f16, bf16 and f32 sources).
  Tensor to_f32() const;
  Tensor clone() const;

  std::string describe() const;  // "f32[1500, 384]"

 private:
  void check_type(DType t) const;

  std::shared_ptr<const void> owner_;
  void* data_ = nullptr;
  Shape shape_;
  DType dtype_ = DType::kF32;
  Device device_ = Device::kCpu;
};

}  // namespace wisp::core
