#include "text/assets.h"

#include <cstdlib>
#include <filesystem>
#include <system_error>
#include <vector>

// The build passes the source tree's path; without it only the environment and the install layout work.
#ifndef WISP_SOURCE_DIR
#define WISP_SOURCE_DIR ""
#endif

namespace wisp::text {

std::string default_english_json_path() {
  namespace fs = std::filesystem;
  if (const char* env = std::getenv("WISP_ENGLISH_JSON"); env != nullptr && *env != '\0') return env;

  std::vector<fs::path> candidates;
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec && !exe.empty()) candidates.push_back(exe.parent_path() / ".." / "share" / "wisp" / "english.json");
  if (const std::string source = WISP_SOURCE_DIR; !source.empty()) {
    candidates.push_back(fs::path(source) / "third_party" / "whisper_normalizers" / "english.json");
  }
  for (const fs::path& p : candidates) {
    if (fs::exists(p, ec)) return p.lexically_normal().string();
  }
  return candidates.empty() ? std::string("english.json") : candidates.back().lexically_normal().string();
}

}  // namespace wisp::text
