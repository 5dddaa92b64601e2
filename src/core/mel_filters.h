// Whisper's mel filterbank: the Slaney-normalised triangles of librosa's mel(sr=16000, n_fft=400, n_mels), built
// step by step as faster-whisper's FeatureExtractor.get_mel_filters does, in double and rounded to float. In
// the core so that the CPU log-mel (audio/mel.cpp), the GPU one (kernels/cuda/log_mel.h, given the filterbank by
// its caller) and their tests share one definition.
#pragma once

#include <vector>

namespace wisp::core {

inline constexpr int kMelSampleRate = 16000;
inline constexpr int kMelNFft = 400;               // 25 ms window
inline constexpr int kMelBins = kMelNFft / 2 + 1;  // 201 one-sided FFT bins

// [n_mels, kMelBins] row-major. Throws std::invalid_argument when n_mels <= 0.
std::vector<float> mel_filters(int n_mels);

}  // namespace wisp::core
