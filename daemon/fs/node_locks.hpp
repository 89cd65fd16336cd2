// SPDX-License-Identifier: LGPL-2.1-or-later
#pragma once

#include "node.hpp"

#include <array>
#include <cstdint>
#include <mutex>

namespace layerd::fs {

// The locks that serialise changes, striped over nodes instead of living in
// each one (a node is ~80 bytes smaller; there are 100k of them).
//
// Lock order: directory locks (two at most, lower stripe first; the same
// stripe twice is fine, they are recursive), then one copy-up lock, then
// the merge gate's mutex (MergeGate), then Node's own mutex, then
// NodeTable's. A copy-up lock is never held while waiting for a directory
// lock.
class NodeLocks {
public:
    // Held across a change of a directory's entries in the upper: create,
    // unlink, rename, and the copy-up of one of its children.
    std::recursive_mutex& dir(const Node& n) { return dirs_[stripe(n)]; }
    // Held while a node is copied up.
    std::mutex& copy_up(const Node& n) { return copy_ups_[stripe(n)]; }
    // Locks the directory locks of two nodes in the order above.
    class DirPair {
    public:
        DirPair(NodeLocks& locks, const Node& a, const Node& b);

    private:
        std::unique_lock<std::recursive_mutex> first_, second_;
    };

private:
    static constexpr size_t stripes = 256;
    static size_t stripe(const Node& n)
    {
        auto p = reinterpret_cast<uintptr_t>(&n);
        return (p >> 6 ^ p >> 14) % stripes;
    }
    std::array<std::recursive_mutex, stripes> dirs_;
    std::array<std::mutex, stripes> copy_ups_;
};

inline NodeLocks::DirPair::DirPair(NodeLocks& locks, const Node& a, const Node& b)
{
    size_t sa = stripe(a), sb = stripe(b);
    first_ = std::unique_lock(locks.dirs_[std::min(sa, sb)]);
    second_ = std::unique_lock(locks.dirs_[std::max(sa, sb)]);
}

} // namespace layerd::fs
