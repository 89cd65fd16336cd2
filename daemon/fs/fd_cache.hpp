// SPDX-License-Identifier: LGPL-2.1-or-later
// Open fds of layer objects, bounded. A node names its backing objects by
// file handle; their O_PATH fds are kept open while used and recently used,
// and reopened with open_by_handle_at() once evicted. So the number of nodes
// the kernel holds is not bounded by RLIMIT_NOFILE.
#pragma once

#include "layer_set.hpp"

#include <fcntl.h>

#include <cstddef>
#include <memory>
#include <mutex>

namespace layerd::fs {

class FdCache;

// One object of one layer: its identity, its file handle and its cached fd.
class BackingObject {
public:
    BackingObject(FdCache& cache, const Layer& layer, dev_t dev, ino_t ino);
    BackingObject(const BackingObject&) = delete;
    BackingObject& operator=(const BackingObject&) = delete;
    ~BackingObject();

    const Layer& layer;
    const dev_t dev;
    const ino_t ino;

    // True if `other`, found by the same (dev, ino), is this very object and
    // not a new one that reuses the number of a deleted one.
    bool same_object(BackingObject& other);

private:
    friend class FdCache;
    friend class FdLease;
    FdCache& cache_;
    // Guarded by FdCache's mutex.
    // The file handle, taken from the fd when it is first evicted: while the
    // fd is open the inode is pinned and needs no other name. Empty when the
    // filesystem has no handles (then the fd is never evicted).
    std::unique_ptr<unsigned char[]> handle_; // struct file_handle + f_handle bytes
    bool no_handle_ = false;
    int fd_ = -1;
    unsigned pins_ = 0;
    BackingObject* prev_ = nullptr; // LRU list of unpinned-able open fds
    BackingObject* next_ = nullptr;
    bool listed_ = false;
};

// A borrowed fd: open for as long as the lease lives. It shares ownership of
// its object: the stack it came from may be replaced (a copy-up) meanwhile.
class FdLease {
public:
    FdLease() = default;
    FdLease(FdLease&& other) noexcept;
    FdLease& operator=(FdLease&& other) noexcept;
    FdLease(const FdLease&) = delete;
    FdLease& operator=(const FdLease&) = delete;
    ~FdLease() { release(); }

    int get() const { return fd_; }
    // -errno when the object could not be reopened (ESTALE: it is gone).
    int error() const { return fd_ < 0 ? fd_ : 0; }
    explicit operator bool() const { return fd_ >= 0; }
    void release();

private:
    friend class FdCache;
    std::shared_ptr<BackingObject> object_;
    int fd_ = -EBADF;
};

class FdCache {
public:
    // `capacity`: how many evictable fds may stay open. Without
    // `use_handles` (no CAP_DAC_READ_SEARCH for open_by_handle_at) every fd
    // stays open for its object's life.
    FdCache(size_t capacity, bool use_handles);

    // Takes ownership of `fd`, an O_PATH fd of the object, just opened.
    void adopt(BackingObject& object, int fd);
    // The same for an object that cannot be found again (it has no name):
    // its fd stays open for the object's life.
    void adopt_pinned(BackingObject& object, int fd);
    FdLease lease(const std::shared_ptr<BackingObject>& object);

    size_t open_count() const;

    // open_by_handle_at() needs CAP_DAC_READ_SEARCH: tries it on a layer root.
    static bool handles_work(const Layer& layer);

private:
    friend class BackingObject;
    friend class FdLease;
    void unpin(BackingObject& object);
    void forget(BackingObject& object);
    void link_front(BackingObject& object);
    void unlink(BackingObject& object);
    // Closes the least recently used unpinned fds beyond capacity; returns
    // them so they are closed outside the lock.
    void evict(int* to_close, size_t* n, size_t max);

    mutable std::mutex mutex_;
    BackingObject* head_ = nullptr; // most recently used
    BackingObject* tail_ = nullptr;
    size_t listed_ = 0;
    size_t capacity_;
    const bool use_handles_;
};

} // namespace layerd::fs
