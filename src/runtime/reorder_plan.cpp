#include "runtime/reorder_plan.h"

#include <algorithm>

namespace wisp::runtime {

ReorderPlan plan_reorder(std::span<const int> origins, int batch) {
  const int n = static_cast<int>(origins.size());
  std::vector<bool> overwritten(static_cast<size_t>(batch), false);
  for (int i = 0; i < n; ++i) overwritten[static_cast<size_t>(i)] = origins[static_cast<size_t>(i)] != i;
  ReorderPlan plan;
  for (int i = 0; i < n; ++i) {
    const int o = origins[static_cast<size_t>(i)];
    if (o != i && overwritten[static_cast<size_t>(o)] &&
        std::find(plan.saves.begin(), plan.saves.end(), o) == plan.saves.end()) {
      plan.saves.push_back(o);
    }
  }
  for (int i = 0; i < n; ++i) {
    const int o = origins[static_cast<size_t>(i)];
    if (o == i) continue;
    const auto saved = std::find(plan.saves.begin(), plan.saves.end(), o);
    if (saved != plan.saves.end()) {
      plan.copies.push_back({static_cast<int>(saved - plan.saves.begin()), true, i});
    } else {
      plan.copies.push_back({o, false, i});
    }
  }
  return plan;
}

}  // namespace wisp::runtime
