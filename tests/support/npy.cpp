#include "support/npy.h"

#include <zlib.h>

#include <algorithm>
#include <bit>
#include <fstream>
#include <iterator>
#include <stdexcept>

namespace wisp::test {
namespace {

[[noreturn]] void fail(const std::string& what, const std::string& why) { throw std::runtime_error(what + ": " + why); }

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, "cannot open");
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Little-endian integer of N bytes at data[pos]; the file formats here are little-endian whatever the host.
uint64_t le(std::string_view data, size_t pos, int n, const std::string& what) {
  if (pos + n > data.size()) fail(what, "truncated");
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(data[pos + i]);
  return v;
}

// The value text of `'key': value` in the .npy header's Python dict literal.
std::string header_value(const std::string& header, const std::string& key, const std::string& what) {
  const std::string quoted = "'" + key + "'";
  size_t pos = header.find(quoted);
  if (pos == std::string::npos) fail(what, "npy header lacks " + quoted);
  pos = header.find(':', pos + quoted.size());
  if (pos == std::string::npos) fail(what, "malformed npy header");
  ++pos;
  while (pos < header.size() && header[pos] == ' ') ++pos;
  size_t end;
  if (pos < header.size() && header[pos] == '(') {
    end = header.find(')', pos);
    if (end == std::string::npos) fail(what, "malformed npy shape");
    ++end;
  } else {
    end = header.find_first_of(",}", pos);
    if (end == std::string::npos) fail(what, "malformed npy header");
  }
  return header.substr(pos, end - pos);
}

std::vector<size_t> parse_shape(const std::string& text, const std::string& what) {  // "(80, 201)"
  std::vector<size_t> shape;
  size_t pos = 1;
  while (pos < text.size()) {
    while (pos < text.size() && (text[pos] == ' ' || text[pos] == ',')) ++pos;
    if (pos >= text.size() || text[pos] == ')') break;
    size_t used = 0;
    try {
      shape.push_back(std::stoull(text.substr(pos), &used));
    } catch (const std::exception&) {
      fail(what, "malformed npy shape " + text);
    }
    pos += used;
  }
  return shape;
}

std::string inflate_raw(std::string_view compressed, size_t size, const std::string& what) {
  std::string out(size, '\0');
  z_stream zs{};
  if (inflateInit2(&zs, -MAX_WBITS) != Z_OK) fail(what, "zlib init failed");
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(compressed.data()));
  zs.avail_in = static_cast<uInt>(compressed.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  const int rc = inflate(&zs, Z_FINISH);
  const size_t produced = zs.total_out;
  inflateEnd(&zs);
  if (rc != Z_STREAM_END || produced != size) fail(what, "corrupt deflate data");
  return out;
}

// Rearranges a Fortran-order (first index fastest) array's elements into C order (last index fastest).
std::vector<uint8_t> fortran_to_c_order(const NpyArray& array) {
  const size_t ndim = array.shape.size();
  const size_t item = static_cast<size_t>(array.item_size);
  std::vector<size_t> f_stride(ndim, 1);  // [ndim] element strides of the Fortran layout
  for (size_t d = 1; d < ndim; ++d) f_stride[d] = f_stride[d - 1] * array.shape[d - 1];
  std::vector<uint8_t> out(array.bytes.size());
  std::vector<size_t> index(ndim, 0);  // [ndim] C-order multi-index of element i
  for (size_t i = 0, n = array.size(); i < n; ++i) {
    size_t src = 0;
    for (size_t d = 0; d < ndim; ++d) src += index[d] * f_stride[d];
    std::copy_n(array.bytes.begin() + src * item, item, out.begin() + i * item);
    for (size_t d = ndim; d-- > 0;) {
      if (++index[d] < array.shape[d]) break;
      index[d] = 0;
    }
  }
  return out;
}

}  // namespace

size_t NpyArray::size() const {
  size_t n = 1;
  for (size_t d : shape) n *= d;
  return n;
}

std::string NpyArray::dtype() const {
  const std::string bits = std::to_string(item_size * 8);
  switch (kind) {
    case 'f':
      return "float" + bits;
    case 'i':
      return "int" + bits;
    case 'u':
      return "uint" + bits;
    default:
      return "bool";
  }
}

NpyArray parse_npy(std::string_view data, const std::string& what) {
  static constexpr std::string_view kMagic = "\x93NUMPY";
  if (data.size() < 10 || data.substr(0, kMagic.size()) != kMagic) fail(what, "not an .npy file");
  const int major = static_cast<uint8_t>(data[6]);
  // Version 1 stores the header length in 2 bytes, versions 2 and 3 in 4 (3 only allows utf-8 names).
  const int len_bytes = major == 1 ? 2 : 4;
  if (major < 1 || major > 3) fail(what, "unsupported .npy version " + std::to_string(major));
  const size_t header_len = le(data, 8, len_bytes, what);
  const size_t header_start = 8 + len_bytes;
  if (header_start + header_len > data.size()) fail(what, "truncated .npy header");
  const std::string header(data.substr(header_start, header_len));

  std::string descr = header_value(header, "descr", what);  // e.g. '<f4'
  descr.erase(std::remove(descr.begin(), descr.end(), '\''), descr.end());
  if (descr.size() < 3) fail(what, "unsupported dtype " + descr);
  const char order = descr[0];
  NpyArray array;
  array.kind = descr[1];
  try {
    array.item_size = std::stoi(descr.substr(2));
  } catch (const std::exception&) {
    fail(what, "unsupported dtype " + descr);
  }
  const bool known = (array.kind == 'f' && (array.item_size == 4 || array.item_size == 8)) ||
                     ((array.kind == 'i' || array.kind == 'u') &&
                      (array.item_size == 1 || array.item_size == 2 || array.item_size == 4 || array.item_size == 8)) ||
                     (array.kind == 'b' && array.item_size == 1);
  if (!known || (order != '<' && order != '>' && order != '|' && order != '=')) {
    fail(what, "unsupported dtype " + descr);
  }
  const std::string fortran = header_value(header, "fortran_order", what);
  if (fortran != "False" && fortran != "True") fail(what, "malformed fortran_order " + fortran);
  array.shape = parse_shape(header_value(header, "shape", what), what);

  const size_t n_bytes = array.size() * array.item_size;
  const size_t data_start = header_start + header_len;
  if (data.size() - data_start < n_bytes) fail(what, "truncated .npy data");
  const auto* src = reinterpret_cast<const uint8_t*>(data.data() + data_start);
  array.bytes.assign(src, src + n_bytes);
  if (fortran == "True" && array.shape.size() > 1) array.bytes = fortran_to_c_order(array);
  // Swap into host order when the file's order differs ('|' and '=' need nothing).
  const bool host_little = std::endian::native == std::endian::little;
  if (array.item_size > 1 && ((order == '<' && !host_little) || (order == '>' && host_little))) {
    for (size_t i = 0; i < n_bytes; i += array.item_size) {
      std::reverse(array.bytes.begin() + i, array.bytes.begin() + i + array.item_size);
    }
  }
  return array;
}

NpyArray read_npy(const std::string& path) { return parse_npy(read_file(path), path); }

std::map<std::string, NpyArray> read_npz(const std::string& path) {
  const std::string file = read_file(path);
  const std::string_view data(file);

  // End of central directory: the last "PK\5\6" record, within the 64 KiB a trailing comment may take.
  if (data.size() < 22) fail(path, "not a zip archive");
  size_t eocd = std::string_view::npos;
  const size_t lowest = data.size() > 22 + 65535 ? data.size() - 22 - 65535 : 0;
  for (size_t pos = data.size() - 22 + 1; pos-- > lowest;) {
    if (le(data, pos, 4, path) == 0x06054b50) {
      eocd = pos;
      break;
    }
  }
  if (eocd == std::string_view::npos) fail(path, "not a zip archive");
  uint64_t n_entries = le(data, eocd + 10, 2, path);
  uint64_t cd_offset = le(data, eocd + 16, 4, path);
  if ((n_entries == 0xffff || cd_offset == 0xffffffff) && eocd >= 20 && le(data, eocd - 20, 4, path) == 0x07064b50) {
    // Zip64: the locator just before the EOCD points at a zip64 EOCD with 64-bit counts and offsets.
    const size_t eocd64 = le(data, eocd - 20 + 8, 8, path);
    if (le(data, eocd64, 4, path) != 0x06064b50) fail(path, "corrupt zip64 directory");
    n_entries = le(data, eocd64 + 32, 8, path);
    cd_offset = le(data, eocd64 + 48, 8, path);
  }

  std::map<std::string, NpyArray> arrays;
  size_t pos = cd_offset;
  for (uint64_t e = 0; e < n_entries; ++e) {
    if (le(data, pos, 4, path) != 0x02014b50) fail(path, "corrupt zip central directory");
    const int method = static_cast<int>(le(data, pos + 10, 2, path));
    const uint32_t crc = static_cast<uint32_t>(le(data, pos + 16, 4, path));
    uint64_t compressed_size = le(data, pos + 20, 4, path);
    uint64_t size = le(data, pos + 24, 4, path);
    const size_t name_len = le(data, pos + 28, 2, path);
    const size_t extra_len = le(data, pos + 30, 2, path);
    const size_t comment_len = le(data, pos + 32, 2, path);
    uint64_t local = le(data, pos + 42, 4, path);
    if (pos + 46 + name_len > data.size()) fail(path, "corrupt zip central directory");
    std::string name(data.substr(pos + 46, name_len));
    // Sizes or offset that overflow 32 bits live in the zip64 extra field (id 1), in this order.
    for (size_t x = pos + 46 + name_len; x + 4 <= pos + 46 + name_len + extra_len;) {
      const uint64_t id = le(data, x, 2, path);
      const size_t len = le(data, x + 2, 2, path);
      if (id == 1) {
        size_t field = x + 4;
        auto next = [&] {
          const uint64_t v = le(data, field, 8, path);
          field += 8;
          return v;
        };
        if (size == 0xffffffff) size = next();
        if (compressed_size == 0xffffffff) compressed_size = next();
        if (local == 0xffffffff) local = next();
      }
      x += 4 + len;
    }
    pos += 46 + name_len + extra_len + comment_len;

    if (le(data, local, 4, path) != 0x04034b50) fail(path, "corrupt zip entry " + name);
    const size_t start = local + 30 + le(data, local + 26, 2, path) + le(data, local + 28, 2, path);
    if (start > data.size() || data.size() - start < compressed_size) fail(path, "truncated zip entry " + name);
    const std::string_view stored = data.substr(start, compressed_size);
    const std::string what = path + ":" + name;
    std::string member;
    if (method == 0) {
      member.assign(stored);
    } else if (method == 8) {
      member = inflate_raw(stored, size, what);
    } else {
      fail(what, "unsupported zip compression method " + std::to_string(method));
    }
    if (member.size() != size ||
        crc32(0L, reinterpret_cast<const Bytef*>(member.data()), static_cast<uInt>(member.size())) != crc) {
      fail(what, "zip checksum mismatch");
    }
    if (name.size() > 4 && name.ends_with(".npy")) name.resize(name.size() - 4);
    arrays[name] = parse_npy(member, what);
  }
  return arrays;
}

}  // namespace wisp::test
