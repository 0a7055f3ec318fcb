// InodeTable: the nodes the kernel holds references to (FUSE lookup counting), by NodeKey.
// A node leaves the table when the kernel forgets its last lookup; it is freed once no child,
// open file or handler still holds it.
#pragma once
#include <functional>
#include <mutex>
#include <unordered_map>
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
  void orphan_locked(std::unordered_map<NodeKey, NodePtr, NodeKeyHash>::iterator it);

  mutable std::mutex mu_;
  std::unordered_map<NodeKey, NodePtr, NodeKeyHash> nodes_;
};

}  // namespace strata
