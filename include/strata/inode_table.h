// InodeTable: the nodes the kernel holds references to (FUSE lookup counting), by NodeKey.
// A node leaves the table when the kernel forgets its last lookup; it is freed once no child,
// open file or handler still holds it.
#pragma once
#include <functional>
#include <mutex>
#include <unordered_set>
#include <vector>

#include "strata/node.h"

namespace strata {

class InodeTable {
 public:
  // The node under `key` with one more lookup, made by `make` if absent or if the node there has
  // another `type` (a reused inode number). make runs under the table lock: it only constructs.
  NodePtr intern(const NodeKey& key, mode_t type, const std::function<NodePtr()>& make);
  // Drop `n` lookups; the node leaves the table at zero.
  void forget(Node* node, uint64_t n);
  // The node's top object changed (copy-up): file it under its new key.
  void rekey(Node* node, const NodeKey& key);
  // Remove a node from the table without forgetting it (its name now means something else).
  void unhash(Node* node);
  NodePtr find(const NodeKey& key) const;
  // Directory nodes the kernel holds (for shedding cached entries under fd pressure).
  std::vector<NodePtr> directories() const;
  size_t size() const;

 private:
  // The nodes, found by the key each one carries (Node::key): a set rather than a map saves a
  // copy of the key per node, and the daemon's memory grows with the nodes the kernel holds. A
  // node's key changes only while it is out of the set (erase, change, insert).
  struct ByKey {
    using is_transparent = void;
    size_t operator()(const NodePtr& n) const noexcept { return NodeKeyHash()(n->key); }
    size_t operator()(const NodeKey& k) const noexcept { return NodeKeyHash()(k); }
    bool operator()(const NodePtr& a, const NodePtr& b) const noexcept { return a->key == b->key; }
    bool operator()(const NodeKey& a, const NodePtr& b) const noexcept { return a == b->key; }
    bool operator()(const NodePtr& a, const NodeKey& b) const noexcept { return a->key == b; }
  };
  using Set = std::unordered_set<NodePtr, ByKey, ByKey>;
  void orphan_locked(Set::iterator it);

  mutable std::mutex mu_;
  Set nodes_;
};

}  // namespace strata
