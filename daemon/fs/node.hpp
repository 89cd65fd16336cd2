// SPDX-License-Identifier: LGPL-2.1-or-later
// What an overlay node is made of, and the node itself.
#pragma once

#include "fd_cache.hpp"
#include "layer_set.hpp"
#include "view.hpp"

#include <sys/stat.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace layerd::fs {

// One object of one layer behind a node. It is known by its file handle, so
// renames inside the layer do not lose it; its fd comes from the FdCache.
struct Backing {
    const Layer* layer = nullptr;
    dev_t dev = 0;
    ino_t ino = 0;
    std::shared_ptr<BackingObject> object;
};

// The layers a node is made of, top first: one for a non-directory, one per
// layer for a merged directory (down to the first opaque one). Immutable once
// published; a copy-up publishes a new one.
struct Stack {
    std::shared_ptr<const View> view; // the view this stack was resolved in
    std::vector<Backing> entries;
    // Directories: the path of the lower dirs below the layer roots, "" for
    // the root. Differs from the overlay path after a rename (redirect).
    std::string lower_path;

    const Backing& top() const { return entries.front(); }
    bool in_upper() const { return entries.front().layer->writable; }
    bool has_lower() const { return entries.size() > (in_upper() ? 1u : 0u); }
    // Entry I, a directory, could not be reopened (ERR): true when it is a
    // frozen one below the top that a merge emptied into the dir above it
    // and removed. Only a merge removes a frozen directory of a view, and
    // only once all it showed is in the layer above: it holds nothing.
    bool gone_after_merge(size_t i, int err) const
    {
        return i > 0 && err == -ESTALE && !entries[i].layer->writable;
    }
};

// Identity of a node in the table: its top backing object. Lower non-dirs
// with several hard links get one node per name (`alias`), as the kernel's
// overlay does when it does not index them: copy-up breaks such links.
struct NodeKey {
    dev_t dev = 0;
    ino_t ino = 0;
    uint64_t alias = 0;
    uint64_t generation = 0; // the view generation: a rollback makes new nodes
    bool operator==(const NodeKey&) const = default;
};

struct NodeKeyHash {
    size_t operator()(const NodeKey& k) const noexcept
    {
        uint64_t h = k.ino * 0x9E3779B97F4A7C15ull ^ (k.dev + 0x632BE59BD9B4E019ull) ^ (k.alias * 0xBF58476D1CE4E5B9ull) ^
                     (k.generation * 0x94D049BB133111EBull);
        return static_cast<size_t>(h ^ (h >> 31));
    }
};

// An overlay object as the kernel knows it (one FUSE nodeid). Its mutex is
// a leaf lock (see NodeLocks for the order): never reply to the kernel or
// make a syscall while holding it.
struct Node {
    Node(uint64_t id, mode_t type, uint64_t st_ino) : id(id), type(type), st_ino(st_ino) {}

    const uint64_t id;     // FUSE nodeid: from a counter, never reused
    const mode_t type;     // S_IFMT bits
    const uint64_t st_ino; // what stat shows: stable across copy-up and remount

    bool is_dir() const { return S_ISDIR(type); }

    std::shared_ptr<const Stack> stack() const
    {
        std::lock_guard lock(mutex);
        return stack_;
    }
    void set_stack(std::shared_ptr<const Stack> stack)
    {
        std::lock_guard lock(mutex);
        stack_ = std::move(stack);
        epoch.fetch_add(1, std::memory_order_release);
    }
    // set_stack() unless the stack is no longer `expected` (a copy-up
    // published a newer one meanwhile). True if it was replaced.
    bool replace_stack(const Stack* expected, std::shared_ptr<const Stack> stack)
    {
        std::lock_guard lock(mutex);
        if (stack_.get() != expected)
            return false;
        stack_ = std::move(stack);
        epoch.fetch_add(1, std::memory_order_release);
        return true;
    }

    std::shared_ptr<Node> parent() const
    {
        std::lock_guard lock(mutex);
        return parent_;
    }
    std::string name() const
    {
        std::lock_guard lock(mutex);
        return name_;
    }
    void set_place(std::shared_ptr<Node> parent, std::string name)
    {
        std::lock_guard lock(mutex);
        parent_ = std::move(parent);
        name_ = std::move(name);
    }

    // Bumped on every new stack, so stacked file handles know to reopen.
    std::atomic<uint64_t> epoch{0};
    // A lower object whose last name was whited out: stat shows nlink 0.
    std::atomic<bool> unlinked{false};

    // Guarded by NodeTable's mutex.
    uint64_t nlookup = 0;
    NodeKey key;

private:
    mutable std::mutex mutex; // guards the fields below
    std::shared_ptr<const Stack> stack_;
    std::shared_ptr<Node> parent_; // the name this node was last reached by
    std::string name_;
};

} // namespace layerd::fs
