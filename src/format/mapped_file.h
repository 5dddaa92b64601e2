// A read-only memory mapping of a whole file, shared by the views made from it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace wisp::format {

class MappedFile {
 public:
  // Throws IoError when the file cannot be opened or mapped.
  explicit MappedFile(const std::string& path);
  const char* data() const { return static_cast<const char*>(mapping_.get()); }
  uint64_t size() const { return size_; }
  const std::shared_ptr<const void>& owner() const { return mapping_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::shared_ptr<const void> mapping_;
  uint64_t size_ = 0;
};

}  // namespace wisp::format
