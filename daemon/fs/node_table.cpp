// SPDX-License-Identifier: LGPL-2.1-or-later
#include "node_table.hpp"

#include <cassert>

namespace layerd::fs {

void NodeTable::insert_root(std::shared_ptr<Node> root)
{
    std::lock_guard lock(mutex_);
    root->nlookup = 1; // the kernel never forgets the root
    by_key_[root->key] = root.get();
    by_id_[root->id] = std::move(root);
}

std::shared_ptr<Node> NodeTable::get(uint64_t id) const
{
    std::lock_guard lock(mutex_);
    auto it = by_id_.find(id);
    return it == by_id_.end() ? nullptr : it->second;
}

std::shared_ptr<Node> NodeTable::find(const NodeKey& key) const
{
    std::lock_guard lock(mutex_);
    auto it = by_key_.find(key);
    return it == by_key_.end() ? nullptr : by_id_.at(it->second->id);
}

std::shared_ptr<Node> NodeTable::lookup(const NodeKey& key, const std::function<bool(const Node&)>& same,
                                        const std::function<std::shared_ptr<Node>(uint64_t id)>& make)
{
    std::shared_ptr<Node> known;
    {
        std::lock_guard lock(mutex_);
        if (auto it = by_key_.find(key); it != by_key_.end())
            known = by_id_.at(it->second->id);
    }
    // Compared without the table lock: same() reads the node's stack.
    if (known && same(*known)) {
        std::lock_guard lock(mutex_);
        if (known->nlookup > 0) { // not forgotten meanwhile
            ++known->nlookup;
            return known;
        }
    } else if (known) {
        std::lock_guard lock(mutex_);
        if (auto it = by_key_.find(key); it != by_key_.end() && it->second == known.get())
            by_key_.erase(it);
    }
    std::shared_ptr<Node> fresh = make(next_id_.fetch_add(1, std::memory_order_relaxed));
    if (!fresh)
        return nullptr;
    std::lock_guard lock(mutex_);
    if (auto it = by_key_.find(key); it != by_key_.end()) {
        Node* node = it->second; // another thread inserted it meanwhile
        ++node->nlookup;
        return by_id_.at(node->id);
    }
    fresh->key = key;
    fresh->nlookup = 1;
    by_key_[key] = fresh.get();
    by_id_[fresh->id] = fresh;
    return fresh;
}

void NodeTable::forget(uint64_t id, uint64_t n)
{
    std::shared_ptr<Node> dropped; // freed after the lock is released
    std::lock_guard lock(mutex_);
    auto it = by_id_.find(id);
    if (it == by_id_.end())
        return;
    Node& node = *it->second;
    assert(node.nlookup >= n);
    node.nlookup -= std::min(node.nlookup, n);
    if (node.nlookup > 0 || id == root_id)
        return;
    if (auto k = by_key_.find(node.key); k != by_key_.end() && k->second == &node)
        by_key_.erase(k);
    dropped = std::move(it->second);
    by_id_.erase(it);
}

void NodeTable::rekey(Node& node, const NodeKey& key)
{
    std::lock_guard lock(mutex_);
    if (auto k = by_key_.find(node.key); k != by_key_.end() && k->second == &node)
        by_key_.erase(k);
    node.key = key;
    if (by_id_.count(node.id))
        by_key_[key] = &node;
}

std::vector<std::shared_ptr<Node>> NodeTable::all() const
{
    std::lock_guard lock(mutex_);
    std::vector<std::shared_ptr<Node>> nodes;
    nodes.reserve(by_id_.size());
    for (const auto& [id, node] : by_id_)
        nodes.push_back(node);
    return nodes;
}

size_t NodeTable::size() const
{
    std::lock_guard lock(mutex_);
    return by_id_.size();
}

} // namespace layerd::fs
