#include "support/test_paths.h"

#include <cstdlib>
#include <filesystem>

namespace wisp::test {

static std::string env_or(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}

std::string source_dir() { return WISP_SOURCE_DIR; }
std::string fixtures_dir() { return source_dir() + "/tests/fixtures"; }
std::string shared_data() { return env_or("WISP_SHARED_DATA", WISP_SHARED_DATA); }
std::string models_dir() { return env_or("WISP_MODELS_DIR", WISP_MODELS_DIR); }
std::string wisp_binary() { return WISP_BINARY; }
bool exists(const std::string& path) { return std::filesystem::exists(path); }

}  // namespace wisp::test
