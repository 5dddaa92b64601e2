// CPU-only builds (WISP_CUDA off): the GPU runner's entry points exist and report that CUDA is missing.
// No GpuWhisper can be created, so the member functions below are never reached.
#include <memory>
#include <stdexcept>

#include "runtime/gpu_whisper.h"

namespace wisp::runtime {

namespace {
[[noreturn]] void no_cuda() { throw std::runtime_error("this wisp was built without CUDA"); }
}  // namespace

struct GpuWhisper::Impl {
  GpuDims dims;
};

bool gpu_available() { return false; }

BenchResult run_bench(const BenchOptions&) {
  throw std::runtime_error("wisp bench needs a CUDA build (this wisp was built without CUDA)");
}

GpuWhisper::GpuWhisper(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
GpuWhisper::~GpuWhisper() = default;
std::unique_ptr<GpuWhisper> GpuWhisper::create(const GpuDims&, Capacity, const TensorSource&, GpuKvCache) { no_cuda(); }
std::unique_ptr<GpuWhisper> GpuWhisper::create_random(const GpuDims&, int, uint64_t, GpuWeights, int, GpuKvCache) {
  no_cuda();
}
const GpuDims& GpuWhisper::dims() const { return impl_->dims; }
int GpuWhisper::max_batch() const { return 0; }
std::string GpuWhisper::device_name() const { no_cuda(); }
void GpuWhisper::encode(const float*, int) { no_cuda(); }
void GpuWhisper::cross_kv(int) { no_cuda(); }
void GpuWhisper::reset(int) { no_cuda(); }
std::vector<int> GpuWhisper::decode_step(const int*, int, std::vector<float>*) { no_cuda(); }
void GpuWhisper::decode_step_feedback(int) { no_cuda(); }
int GpuWhisper::cache_length() const { return 0; }
void GpuWhisper::set_cuda_graphs(bool) {}
void GpuWhisper::set_gemv(bool) {}
void GpuWhisper::set_gemv_max_rows(int) {}
void GpuWhisper::set_programmatic_launch(bool) {}
void GpuWhisper::log_mel(const float*, int) { no_cuda(); }

struct PinnedBuffers::Pool {};
PinnedBuffers::PinnedBuffers() = default;
std::shared_ptr<float> PinnedBuffers::take(size_t floats) {
  return std::shared_ptr<float>(new float[floats], std::default_delete<float[]>());
}
std::vector<float> GpuWhisper::log_mel_host(const float*, int64_t) { no_cuda(); }
void GpuWhisper::set_fused_kv_append(bool) {}
void GpuWhisper::set_norm_placement(NormPlacement) {}
int GpuWhisper::window_slots() const { return 0; }
int GpuWhisper::sequence_slots() const { return 0; }
void GpuWhisper::encode_windows(const float*, const int*, int) { no_cuda(); }
void GpuWhisper::prefill(int, int, const int*, int, int, const int*, int, float*) { no_cuda(); }
void GpuWhisper::step_groups(const StepGroup*, int) { no_cuda(); }
void GpuWhisper::copy_sequences(const int*, const int*, int, int) { no_cuda(); }
std::vector<std::vector<float>> GpuWhisper::cross_kv_host(int) const { no_cuda(); }
std::vector<float> GpuWhisper::features(int) const { no_cuda(); }
std::vector<float> GpuWhisper::logits(int) const { no_cuda(); }
void GpuWhisper::synchronize() const {}
size_t GpuWhisper::device_bytes_used() const { return 0; }
size_t GpuWhisper::peak_device_bytes() const { return 0; }
size_t GpuWhisper::weight_bytes() const { return 0; }
float GpuWhisper::time_ms(const std::function<void()>&) { no_cuda(); }

}  // namespace wisp::runtime
