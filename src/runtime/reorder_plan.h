// Beam reordering in place (GpuNetwork::reorder_cache): sequence i of a batch becomes a copy of sequence
// origins[i]. Sources that are themselves overwritten are saved to spare slots first; everything else is
// copied straight, so no copy reads a sequence an earlier copy has replaced. Host-only, so it is tested on the
// CPU (tests/unit/runtime_reorder_plan_test.cpp).
#pragma once

#include <span>
#include <vector>

namespace wisp::runtime {

struct ReorderPlan {
  std::vector<int> saves;  // saves[s]: the sequence first copied to spare slot s
  struct Copy {
    int from = 0;  // a sequence of the batch, or a spare slot when from_spare
    bool from_spare = false;
    int to = 0;  // a sequence of the batch
  };
  std::vector<Copy> copies;  // after the saves, in order; one per sequence i with origins[i] != i
};

// origins[i] in [0, batch) for i < origins.size() <= batch (checked by the caller).
ReorderPlan plan_reorder(std::span<const int> origins, int batch);

}  // namespace wisp::runtime
