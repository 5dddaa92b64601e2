// EXPECT that f throws an E whose message mentions `fragment` (the typed errors of include/wisp/errors.h and
// the messages users see).
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <string>

namespace wisp::test {

template <class E>
void expect_error(const std::function<void()>& f, const std::string& fragment) {
  try {
    f();
    ADD_FAILURE() << "no error, expected one mentioning '" << fragment << "'";
  } catch (const E& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

}  // namespace wisp::test
