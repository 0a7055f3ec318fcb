#include "dir_listings.h"

namespace strata::fs {

DirListings::Entries DirListings::find(const Node* dir, uint32_t id) {
  std::lock_guard lock(mu_);
  for (auto it = kept_.begin(); it != kept_.end(); ++it)
    if (it->id == id && it->dir.get() == dir) {
      kept_.splice(kept_.begin(), kept_, it);  // in use: keep it longest
      return it->entries;
    }
  return nullptr;
}

uint32_t DirListings::add(const NodePtr& dir, std::vector<MergedEntry> entries, Entries* out) {
  auto shared = std::make_shared<const std::vector<MergedEntry>>(std::move(entries));
  std::lock_guard lock(mu_);
  uint32_t id = next_id_++;
  if (next_id_ == 0 || next_id_ > 0x7fffffffu) next_id_ = 1;  // offsets stay positive
  entries_ += shared->size();
  kept_.push_front(Kept{dir, id, shared});
  while (kept_.size() > 1 && (kept_.size() > kMaxSnapshots || entries_ > kMaxEntries)) {
    entries_ -= kept_.back().entries->size();
    kept_.pop_back();
  }
  *out = std::move(shared);
  return id;
}

}  // namespace strata::fs
