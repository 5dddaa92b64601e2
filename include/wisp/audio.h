// Audio input: any container/codec FFmpeg reads, downmixed to mono and resampled to 16 kHz.
#pragma once

#include <string>
#include <vector>

namespace wisp {

inline constexpr int kSampleRate = 16000;

// Decodes the whole file to 16 kHz mono float samples in [-1, 1).
// Throws IoError when the file cannot be opened, AudioError when it holds no decodable audio stream
// or no samples at all.
std::vector<float> load_audio(const std::string& path);

}  // namespace wisp
