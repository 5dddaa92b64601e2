#include <cblas.h>
#include <omp.h>

#include <algorithm>

#include "kernels/cpu/cpu_kernels.h"

namespace wisp::kernels::cpu {

void set_num_threads(int n) {
  n = std::max(1, n);
  openblas_set_num_threads(n);
  omp_set_num_threads(n);
}

int num_threads() { return omp_get_max_threads(); }

void set_num_threads_of_this_thread(int n) { omp_set_num_threads(std::max(1, n)); }

}  // namespace wisp::kernels::cpu
