#include "strata/inode_table.h"

namespace strata {

namespace {

// A node that no longer answers to its key but may still be held by the kernel (lookups not
// yet forgotten) is filed under a key of its own, so that the table keeps it alive until the
// kernel's FORGET: dropping it earlier would free memory the kernel's nodeid still points to.
NodeKey orphan_key(const Node* node) { return NodeKey{0, 0, node, nullptr}; }

}  // namespace

void InodeTable::orphan_locked(Set::iterator it) {
  NodePtr keep = *it;
  nodes_.erase(it);
  keep->key = orphan_key(keep.get());
  nodes_.insert(std::move(keep));
}

NodePtr InodeTable::intern(const NodeKey& key, mode_t type, const std::function<NodePtr()>& make) {
  std::lock_guard lock(mu_);
  auto it = nodes_.find(key);
  if (it != nodes_.end() && ((*it)->type & S_IFMT) != (type & S_IFMT)) {
    // The inode number was reused by an object of another type: the old node is stale.
    orphan_locked(it);
    it = nodes_.end();
  }
  if (it == nodes_.end()) {
    NodePtr node = make();
    node->key = key;
    it = nodes_.insert(std::move(node)).first;
  }
  (*it)->nlookup.fetch_add(1, std::memory_order_relaxed);
  return *it;
}

void InodeTable::forget(Node* node, uint64_t n) {
  std::lock_guard lock(mu_);
  uint64_t before = node->nlookup.fetch_sub(n, std::memory_order_relaxed);
  if (before > n) return;
  node->nlookup.store(0, std::memory_order_relaxed);
  auto it = nodes_.find(node->key);
  if (it != nodes_.end() && it->get() == node) nodes_.erase(it);
}

void InodeTable::rekey(Node* node, const NodeKey& key) {
  std::lock_guard lock(mu_);
  auto it = nodes_.find(node->key);
  if (it == nodes_.end() || it->get() != node) {
    node->key = key;
    return;
  }
  NodePtr keep = *it;
  nodes_.erase(it);
  if (auto other = nodes_.find(key); other != nodes_.end()) orphan_locked(other);
  keep->key = key;
  nodes_.insert(std::move(keep));
}

void InodeTable::unhash(Node* node) {
  std::lock_guard lock(mu_);
  auto it = nodes_.find(node->key);
  if (it != nodes_.end() && it->get() == node) orphan_locked(it);
}

NodePtr InodeTable::find(const NodeKey& key) const {
  std::lock_guard lock(mu_);
  auto it = nodes_.find(key);
  return it == nodes_.end() ? nullptr : *it;
}

std::vector<NodePtr> InodeTable::directories() const {
  std::lock_guard lock(mu_);
  std::vector<NodePtr> out;
  for (const auto& node : nodes_)
    if (node->is_dir()) out.push_back(node);
  return out;
}

size_t InodeTable::size() const {
  std::lock_guard lock(mu_);
  return nodes_.size();
}

}  // namespace strata
