// Where tests find the source tree, the shared data, the installed models and the wisp binary.
#pragma once

#include <string>

namespace wisp::test {

std::string source_dir();
std::string fixtures_dir();  // tests/fixtures
std::string shared_data();   // ../shared/data (eval clips, whisper assets)
std::string models_dir();    // installed engine files (models/)
std::string wisp_binary();
bool exists(const std::string& path);

}  // namespace wisp::test

// Skips the current test with a message when a path it needs is absent (e.g. no shared data on this
// machine); the message names the path so a skip is never silent.
#define WISP_REQUIRE_PATH(path)                                            \
  do {                                                                     \
    if (!::wisp::test::exists(path)) GTEST_SKIP() << "missing " << (path); \
  } while (0)
