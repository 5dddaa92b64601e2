// Where the text layer finds its data files at run time.
#pragma once

#include <string>

namespace wisp::text {

// The reference's normalizers/english.json (British -> American spellings): $WISP_ENGLISH_JSON when set,
// else the first that exists of <executable dir>/../share/wisp/english.json (an installed tree) and
// <source tree>/third_party/whisper_normalizers/english.json (a build tree). When neither exists the last
// candidate is returned, so the error from opening it names a path worth checking.
std::string default_english_json_path();

}  // namespace wisp::text
