#include "core/mel_filters.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

namespace wisp::core {

std::vector<float> mel_filters(int n_mels) {
  if (n_mels <= 0) throw std::invalid_argument("n_mels must be positive, got " + std::to_string(n_mels));
  // Follows faster-whisper's FeatureExtractor.get_mel_filters step by step, in double.
  const double sample_rate = kMelSampleRate;
  const double bin_hz = 1.0 / (kMelNFft * (1.0 / sample_rate));  // np.fft.rfftfreq spacing

  // Band edges: n_mels + 2 points uniformly spaced on the Slaney mel scale from 0 Hz to 8 kHz.
  const double max_mel = 45.245640471924965;
  const int n_points = n_mels + 2;
  std::vector<double> hz(n_points);  // [n_mels + 2]
  const double f_sp = 200.0 / 3;     // linear part: 200/3 Hz per mel below 1 kHz
  const double min_log_hz = 1000.0;
  const double min_log_mel = min_log_hz / f_sp;
  const double log_step = std::log(6.4) / 27.0;
  const double mel_step = max_mel / (n_points - 1);
  for (int i = 0; i < n_points; ++i) {
    // np.linspace: start + i * step, with the last point set to stop exactly.
    const double mel = i == n_points - 1 ? max_mel : i * mel_step;
    hz[i] = mel >= min_log_mel ? min_log_hz * std::exp(log_step * (mel - min_log_mel)) : f_sp * mel;
  }

  std::vector<float> weights(static_cast<size_t>(n_mels) * kMelBins, 0.0f);  // [n_mels, kMelBins]
  for (int m = 0; m < n_mels; ++m) {
    const double lower_width = hz[m + 1] - hz[m];
    const double upper_width = hz[m + 2] - hz[m + 1];
    // Slaney normalization: each triangle has (about) unit area, so bands carry comparable energy.
    const double enorm = 2.0 / (hz[m + 2] - hz[m]);
    for (int k = 0; k < kMelBins; ++k) {
      const double f = k * bin_hz;
      const double rising = -(hz[m] - f) / lower_width;
      const double falling = (hz[m + 2] - f) / upper_width;
      const double w = std::max(0.0, std::min(rising, falling));
      weights[static_cast<size_t>(m) * kMelBins + k] = static_cast<float>(w * enorm);
    }
  }
  return weights;
}

}  // namespace wisp::core
