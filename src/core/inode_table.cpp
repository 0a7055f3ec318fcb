#include "strata/inode_table.h"

namespace strata {

NodePtr InodeTable::intern(const NodeKey& key, const std::function<NodePtr()>& make) {
  std::lock_guard lock(mu_);
  auto it = nodes_.find(key);
  if (it == nodes_.end()) {
    NodePtr node = make();
    node->key = key;
    it = nodes_.emplace(key, std::move(node)).first;
  }
  it->second->nlookup.fetch_add(1, std::memory_order_relaxed);
  return it->second;
}

void InodeTable::insert(const NodeKey& key, NodePtr node) {
  std::lock_guard lock(mu_);
  node->key = key;
  nodes_[key] = std::move(node);
}

void InodeTable::forget(Node* node, uint64_t n) {
  std::lock_guard lock(mu_);
  uint64_t before = node->nlookup.fetch_sub(n, std::memory_order_relaxed);
  if (before > n) return;
  node->nlookup.store(0, std::memory_order_relaxed);
  auto it = nodes_.find(node->key);
  if (it != nodes_.end() && it->second.get() == node) nodes_.erase(it);
}

void InodeTable::rekey(Node* node, const NodeKey& key) {
  std::lock_guard lock(mu_);
  auto it = nodes_.find(node->key);
  if (it == nodes_.end() || it->second.get() != node) {
    node->key = key;
    return;
  }
  NodePtr keep = std::move(it->second);
  nodes_.erase(it);
  keep->key = key;
  nodes_[key] = std::move(keep);
}

void InodeTable::unhash(Node* node) {
  std::lock_guard lock(mu_);
  auto it = nodes_.find(node->key);
  if (it != nodes_.end() && it->second.get() == node) {
    // Keep it alive in a private key: the kernel still holds lookups on it.
    NodePtr keep = std::move(it->second);
    nodes_.erase(it);
    NodeKey orphan{0, 0, node, "\0unhashed"};
    keep->key = orphan;
    nodes_[orphan] = std::move(keep);
  }
}

NodePtr InodeTable::find(const NodeKey& key) const {
  std::lock_guard lock(mu_);
  auto it = nodes_.find(key);
  return it == nodes_.end() ? nullptr : it->second;
}

size_t InodeTable::size() const {
  std::lock_guard lock(mu_);
  return nodes_.size();
}

}  // namespace strata
