// SPDX-License-Identifier: LGPL-2.1-or-later
#pragma once

#include "node.hpp"

#include <functional>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace layerd::fs {

// Every node the kernel holds a reference to, by nodeid and by backing
// object. A node leaves the table when the kernel forgets its last lookup;
// children, handles and in-flight requests keep its memory alive after that.
class NodeTable {
public:
    static constexpr uint64_t root_id = 1;

    void insert_root(std::shared_ptr<Node> root);
    std::shared_ptr<Node> get(uint64_t id) const;
    std::shared_ptr<Node> find(const NodeKey& key) const;

    // Counts one lookup of the node keyed `key`, creating it with `make`
    // (called without the lock, may lose a race and be dropped) if absent.
    // A keyed node that is not `same` (its inode number was reused by a new
    // object after the old one was deleted) loses the key to a new node.
    std::shared_ptr<Node> lookup(const NodeKey& key, const std::function<bool(const Node&)>& same,
                                 const std::function<std::shared_ptr<Node>(uint64_t id)>& make);
    // Drops n lookups; the node leaves the table at zero.
    void forget(uint64_t id, uint64_t n);
    // The node's top backing object changed (copy-up).
    void rekey(Node& node, const NodeKey& key);

    // Every node in the table now, to visit without the table's lock.
    std::vector<std::shared_ptr<Node>> all() const;
    size_t size() const;

private:
    mutable std::mutex mutex_;
    std::unordered_map<uint64_t, std::shared_ptr<Node>> by_id_;
    std::unordered_map<NodeKey, Node*, NodeKeyHash> by_key_;
    std::atomic<uint64_t> next_id_{root_id + 1};
};

} // namespace layerd::fs
