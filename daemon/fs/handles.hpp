// SPDX-License-Identifier: LGPL-2.1-or-later
// Open files and directories of the overlay, by file-handle id.
#pragma once

#include "node.hpp"

#include <mutex>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace layerd::fs {

// A stacked file handle: it points at its node, not at a layer's file. When
// the node gets a new stack (copy-up), the handle reopens the node's current
// object on its next use, so a read-only fd opened before a copy-up reads the
// copied-up data.
struct FileHandle {
    std::shared_ptr<Node> node;
    int flags = 0;
    // Shared while a request uses fd, exclusive to replace it.
    std::shared_mutex mutex;
    UniqueFd fd;
    uint64_t epoch = 0;    // node->epoch that fd belongs to
    bool on_upper = false; // fd is a file of the writable layer…
    uint64_t freezes = 0;  // …as of this many freezes
};

struct DirEntry {
    std::string name;
    unsigned char d_type;
    unsigned layer = 0; // index in the dir's stack of the layer it was listed from
};

struct DirHandle {
    std::shared_ptr<Node> node;
    std::mutex mutex;
    std::vector<DirEntry> entries; // the merged listing, built at offset 0
    uint64_t listed_at = 0;        // the merge gate's seq when it was built
};

// Ids come from a counter and are never reused (a restarted daemon must be
// able to tell old handles from new ones).
template <class Handle>
class HandleTable {
public:
    uint64_t add(std::shared_ptr<Handle> handle)
    {
        std::lock_guard lock(mutex_);
        uint64_t id = next_++;
        handles_.emplace(id, std::move(handle));
        return id;
    }
    std::shared_ptr<Handle> get(uint64_t id) const
    {
        std::lock_guard lock(mutex_);
        auto it = handles_.find(id);
        return it == handles_.end() ? nullptr : it->second;
    }
    std::shared_ptr<Handle> remove(uint64_t id)
    {
        std::lock_guard lock(mutex_);
        auto it = handles_.find(id);
        if (it == handles_.end())
            return nullptr;
        auto handle = std::move(it->second);
        handles_.erase(it);
        return handle;
    }

private:
    mutable std::mutex mutex_;
    std::unordered_map<uint64_t, std::shared_ptr<Handle>> handles_;
    uint64_t next_ = 1;
};

} // namespace layerd::fs
