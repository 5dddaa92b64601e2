// The harness shared by the CUDA kernel micro-benchmarks (cuda_kernels_bench, cuda_kv_bench): command-line
// options, zeroed device buffers, L2 rotation, the event timing of one benchmark (warm-up, ~20 ms per
// repetition, median with min and max), the device line, and the JSON that ends the output. Each benchmark
// keeps its own table row and JSON metrics.
#pragma once

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "kernels/cuda/cuda_kernels.h"

namespace wisp::bench {

// Input sets of more than this many bytes in all come from HBM, not from the 50–60 MB L2 cache.
inline constexpr size_t kRotateBytes = size_t{256} << 20;

// Copies needed so that `bytes` per copy add up to more than the L2 cache can hold.
inline int rotation(size_t bytes) {
  return static_cast<int>(std::clamp<size_t>((kRotateBytes + bytes - 1) / std::max<size_t>(bytes, 1), 1, 64));
}

struct Options {
  std::string filter;
  std::string json_path;
  bool quick = false;

  bool selected(const std::string& name) const { return filter.empty() || name.find(filter) != std::string::npos; }
};

// Reads [--filter SUBSTRING] [--json PATH] [--quick]; prints the usage and returns false on anything else.
inline bool parse_options(int argc, char** argv, Options* opt) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--filter" && i + 1 < argc) {
      opt->filter = argv[++i];
    } else if (a == "--json" && i + 1 < argc) {
      opt->json_path = argv[++i];
    } else if (a == "--quick") {
      opt->quick = true;
    } else {
      std::fprintf(stderr, "usage: %s [--filter SUBSTRING] [--json PATH] [--quick]\n", argv[0]);
      return false;
    }
  }
  return true;
}

inline bool check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(e));
    return false;
  }
  return true;
}

// A zeroed device allocation of n elements (at least one).
template <class T>
struct Buf {
  T* p = nullptr;
  explicit Buf(size_t n) {
    if (!check_cuda(cudaMalloc(reinterpret_cast<void**>(&p), std::max<size_t>(n, 1) * sizeof(T)), "cudaMalloc"))
      p = nullptr;
    else
      cudaMemset(p, 0, std::max<size_t>(n, 1) * sizeof(T));
  }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
  ~Buf() {
    if (p) cudaFree(p);
  }
};

// One benchmark: per-call times in ms, and the work of one call (flops, bytes) for the rates.
struct Result {
  std::string name;
  bool ok = true;
  std::string error;
  double ms = 0, ms_min = 0, ms_max = 0;
  double flops = 0, bytes = 0;
};

// Times fn(i) (i = iteration, for rotating inputs) into r: three warm-up calls, then 7 repetitions (3 with
// `quick`) of enough back-to-back calls for ~20 ms (5 ms), timed with CUDA events on `stream`. fn returns a
// Status and runs `calls` kernels (a CUDA graph of several); the times are per call. A failed call or CUDA
// error leaves r->ok false and r->error set.
inline void time_calls(const std::function<kernels::cuda::Status(int)>& fn, bool quick, Result* r,
                       cudaStream_t stream = nullptr, int calls = 1) {
  for (int i = 0; i < 3; ++i) {
    const kernels::cuda::Status s = fn(i);
    if (s != kernels::cuda::Status::kOk) {
      r->ok = false;
      r->error = kernels::cuda::status_name(s);
      break;
    }
  }
  if (r->ok && !check_cuda(cudaDeviceSynchronize(), r->name.c_str())) {
    r->ok = false;
    r->error = "CUDA error";
  }
  if (!r->ok) return;
  // Aim at ~20 ms per repetition, from one timed launch.
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  cudaEventRecord(start, stream);
  fn(0);
  cudaEventRecord(stop, stream);
  cudaEventSynchronize(stop);
  float one = 0;
  cudaEventElapsedTime(&one, start, stop);
  const int iters = std::clamp(static_cast<int>((quick ? 5.0 : 20.0) / std::max(one, 0.001f)), 3, 2000);
  const int reps = quick ? 3 : 7;
  std::vector<double> per;
  for (int rep = 0; rep < reps; ++rep) {
    cudaEventRecord(start, stream);
    for (int i = 0; i < iters; ++i) fn(i);
    cudaEventRecord(stop, stream);
    cudaEventSynchronize(stop);
    float ms = 0;
    cudaEventElapsedTime(&ms, start, stop);
    per.push_back(ms / iters / calls);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  if (!check_cuda(cudaGetLastError(), r->name.c_str())) {
    r->ok = false;
    r->error = "CUDA error";
  }
  std::sort(per.begin(), per.end());
  r->ms = per[per.size() / 2];
  r->ms_min = per.front();
  r->ms_max = per.back();
}

// Reads device 0's properties into *prop and prints them; without a CUDA device says so and returns false.
inline bool open_device(cudaDeviceProp* prop) {
  if (!kernels::cuda::device_available()) {
    std::printf("no CUDA device: nothing to measure\n");
    return false;
  }
  cudaGetDeviceProperties(prop, 0);
  std::printf("device: %s, %d SMs, %.0f MB L2, compute %d.%d\n\n", prop->name, prop->multiProcessorCount,
              prop->l2CacheSize / 1e6, prop->major, prop->minor);
  return true;
}

// Writes a successful result's rates as JSON members (`"key": value, ...`, no braces).
using JsonMetrics = void (*)(FILE* f, const Result& r);

inline void write_json(FILE* f, const char* device, const std::vector<Result>& results, JsonMetrics metrics) {
  std::fprintf(f, "{\n  \"device\": \"%s\",\n  \"results\": [\n", device);
  for (size_t i = 0; i < results.size(); ++i) {
    const Result& r = results[i];
    const char* sep = i + 1 < results.size() ? "," : "";
    if (r.ok) {
      std::fprintf(f, "    {\"name\": \"%s\", \"ms\": %.6f, \"ms_min\": %.6f, \"ms_max\": %.6f, ", r.name.c_str(), r.ms,
                   r.ms_min, r.ms_max);
      metrics(f, r);
      std::fprintf(f, "}%s\n", sep);
    } else {
      std::fprintf(f, "    {\"name\": \"%s\", \"error\": \"%s\"}%s\n", r.name.c_str(), r.error.c_str(), sep);
    }
  }
  std::fprintf(f, "  ]\n}\n");
}

// Ends main: the results as JSON on stdout and, with --json, in that file. Returns the exit status: 0 when
// every benchmark ran.
inline int finish(const Options& opt, const char* device, const std::vector<Result>& results, JsonMetrics metrics) {
  std::printf("\nJSON:\n");
  write_json(stdout, device, results, metrics);
  if (!opt.json_path.empty()) {
    if (FILE* f = std::fopen(opt.json_path.c_str(), "w")) {
      write_json(f, device, results, metrics);
      std::fclose(f);
    } else {
      std::fprintf(stderr, "cannot write %s\n", opt.json_path.c_str());
    }
  }
  bool all_ok = true;
  for (const auto& r : results) all_ok = all_ok && r.ok;
  return all_ok ? 0 : 1;
}

}  // namespace wisp::bench
