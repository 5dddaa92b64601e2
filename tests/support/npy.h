// Minimal reader for NumPy .npy arrays and .npz archives (stored or deflated), for comparing against
// reference outputs written by the Python tools under tools/fixtures.
//
// Supports arrays of bool, int8/16/32/64, uint8/16/32/64, float32 and float64 in either byte order; Fortran-
// order arrays are rearranged into C order on load. Errors (missing file, unsupported dtype such as complex
// or strings, corrupt or truncated data) throw std::runtime_error naming the file.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace wisp::test {

struct NpyArray {
  char kind = 'f';    // numpy dtype kind: 'f' float, 'i' signed, 'u' unsigned, 'b' bool
  int item_size = 4;  // bytes per element
  std::vector<size_t> shape;
  std::vector<uint8_t> bytes;  // [size() * item_size] elements in C order, host byte order

  size_t size() const;        // number of elements (1 for a 0-d array)
  std::string dtype() const;  // e.g. "float32", "int64"

  // The elements converted to T (any supported dtype to any arithmetic T), C order.
  template <typename T>
  std::vector<T> as() const;
};

NpyArray parse_npy(std::string_view data, const std::string& what);  // what: name for error messages
NpyArray read_npy(const std::string& path);
// All arrays of an .npz, keyed by member name without the ".npy" suffix (np.savez's keyword names).
std::map<std::string, NpyArray> read_npz(const std::string& path);

template <typename T>
std::vector<T> NpyArray::as() const {
  const size_t n = size();
  std::vector<T> out(n);
  // Element i sits at bytes[i * item_size]; memcpy avoids alignment assumptions about the buffer.
  auto convert = [&](auto zero) {
    using Src = decltype(zero);
    for (size_t i = 0; i < n; ++i) {
      Src v;
      std::memcpy(&v, bytes.data() + i * sizeof(Src), sizeof(Src));
      out[i] = static_cast<T>(v);
    }
  };
  switch (kind) {
    case 'f':
      if (item_size == 4) convert(float{});
      if (item_size == 8) convert(double{});
      break;
    case 'i':
      if (item_size == 1) convert(int8_t{});
      if (item_size == 2) convert(int16_t{});
      if (item_size == 4) convert(int32_t{});
      if (item_size == 8) convert(int64_t{});
      break;
    case 'u':
    case 'b':
      if (item_size == 1) convert(uint8_t{});
      if (item_size == 2) convert(uint16_t{});
      if (item_size == 4) convert(uint32_t{});
      if (item_size == 8) convert(uint64_t{});
      break;
  }
  return out;
}

}  // namespace wisp::test
