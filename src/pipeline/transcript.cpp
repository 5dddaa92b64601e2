#include "wisp/transcript.h"

namespace wisp {

std::string Transcript::text() const {
  // As the reference's result["text"]: the segments' texts back to back, leading spaces included.
  size_t size = 0;
  for (const Segment& s : segments) size += s.text.size();
  std::string out;
  out.reserve(size);
  for (const Segment& s : segments) out += s.text;
  return out;
}

}  // namespace wisp
