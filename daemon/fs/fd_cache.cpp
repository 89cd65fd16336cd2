// SPDX-License-Identifier: LGPL-2.1-or-later
#include "fd_cache.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace layerd::fs {

namespace {

constexpr size_t evict_batch = 32;

file_handle* as_handle(unsigned char* buf) { return reinterpret_cast<file_handle*>(buf); }

} // namespace

BackingObject::BackingObject(FdCache& cache, const Layer& layer, dev_t dev, ino_t ino)
    : layer(layer), dev(dev), ino(ino), cache_(cache)
{
}

BackingObject::~BackingObject()
{
    cache_.forget(*this);
}

namespace {

// The file handle of an open fd, or nullptr when its filesystem has none.
std::unique_ptr<unsigned char[]> handle_of(int fd)
{
    struct {
        file_handle fh;
        unsigned char bytes[MAX_HANDLE_SZ];
    } buf;
    buf.fh.handle_bytes = MAX_HANDLE_SZ;
    int mount_id;
    if (::name_to_handle_at(fd, "", &buf.fh, &mount_id, AT_EMPTY_PATH) != 0)
        return nullptr;
    size_t size = sizeof(file_handle) + buf.fh.handle_bytes;
    auto handle = std::make_unique<unsigned char[]>(size);
    std::memcpy(handle.get(), &buf, size);
    return handle;
}

bool equal_handles(const unsigned char* x, const unsigned char* y)
{
    const auto* a = reinterpret_cast<const file_handle*>(x);
    const auto* b = reinterpret_cast<const file_handle*>(y);
    return a->handle_type == b->handle_type && a->handle_bytes == b->handle_bytes &&
           std::memcmp(a->f_handle, b->f_handle, a->handle_bytes) == 0;
}

} // namespace

bool BackingObject::same_object(BackingObject& other)
{
    if (dev != other.dev || ino != other.ino)
        return false;
    std::lock_guard lock(cache_.mutex_);
    // Never closed: its fd pins the inode, so the number cannot be reused.
    if (!handle_)
        return true;
    if (!other.handle_ && other.fd_ >= 0)
        other.handle_ = handle_of(other.fd_);
    return other.handle_ && equal_handles(handle_.get(), other.handle_.get());
}

FdLease::FdLease(FdLease&& other) noexcept : object_(std::move(other.object_)), fd_(other.fd_)
{
    other.fd_ = -EBADF;
}

FdLease& FdLease::operator=(FdLease&& other) noexcept
{
    if (this != &other) {
        release();
        object_ = std::move(other.object_);
        fd_ = other.fd_;
        other.fd_ = -EBADF;
    }
    return *this;
}

void FdLease::release()
{
    if (object_)
        object_->cache_.unpin(*object_);
    object_.reset();
    fd_ = -EBADF;
}

bool FdCache::handles_work(const Layer& layer)
{
    auto handle = handle_of(layer.root.get());
    if (!handle)
        return false;
    int fd = ::open_by_handle_at(layer.mount_fd.get(), as_handle(handle.get()), O_PATH | O_CLOEXEC);
    if (fd < 0)
        return false;
    ::close(fd);
    return true;
}

FdCache::FdCache(size_t capacity, bool use_handles) : capacity_(capacity), use_handles_(use_handles) {}

size_t FdCache::open_count() const
{
    std::lock_guard lock(mutex_);
    return listed_;
}

void FdCache::link_front(BackingObject& o)
{
    o.prev_ = nullptr;
    o.next_ = head_;
    if (head_)
        head_->prev_ = &o;
    head_ = &o;
    if (!tail_)
        tail_ = &o;
    o.listed_ = true;
    ++listed_;
}

void FdCache::unlink(BackingObject& o)
{
    if (!o.listed_)
        return;
    (o.prev_ ? o.prev_->next_ : head_) = o.next_;
    (o.next_ ? o.next_->prev_ : tail_) = o.prev_;
    o.prev_ = o.next_ = nullptr;
    o.listed_ = false;
    --listed_;
}

void FdCache::evict(int* to_close, size_t* n, size_t max)
{
    for (BackingObject* o = tail_; o && listed_ > capacity_ && *n < max;) {
        BackingObject* prev = o->prev_;
        if (o->pins_ == 0) {
            unlink(*o);
            if (!o->handle_)
                o->handle_ = handle_of(o->fd_);
            if (o->handle_) {
                to_close[(*n)++] = o->fd_;
                o->fd_ = -1;
            } else {
                o->no_handle_ = true; // cannot be found again: stays open
            }
        }
        o = prev;
    }
}

void FdCache::adopt(BackingObject& o, int fd)
{
    int closing[evict_batch];
    size_t n = 0;
    {
        std::lock_guard lock(mutex_);
        o.fd_ = fd;
        if (use_handles_) {
            link_front(o);
            evict(closing, &n, evict_batch);
        }
    }
    for (size_t i = 0; i < n; ++i)
        ::close(closing[i]);
}

void FdCache::adopt_pinned(BackingObject& o, int fd)
{
    std::lock_guard lock(mutex_);
    o.fd_ = fd;
    o.no_handle_ = true;
}

FdLease FdCache::lease(const std::shared_ptr<BackingObject>& object)
{
    BackingObject& o = *object;
    FdLease lease;
    const unsigned char* handle;
    {
        std::lock_guard lock(mutex_);
        if (o.fd_ >= 0) {
            ++o.pins_;
            if (o.listed_ && head_ != &o) {
                unlink(o);
                link_front(o);
            }
            lease.object_ = object;
            lease.fd_ = o.fd_;
            return lease;
        }
        // Closed, so it has a handle (set once, before its first close).
        handle = o.handle_.get();
    }
    int fd = ::open_by_handle_at(o.layer.mount_fd.get(), as_handle(const_cast<unsigned char*>(handle)),
                                 O_PATH | O_CLOEXEC);
    if (fd < 0) {
        lease.fd_ = -errno;
        return lease;
    }
    int closing[evict_batch];
    size_t n = 0;
    {
        std::lock_guard lock(mutex_);
        if (o.fd_ >= 0) {
            closing[n++] = fd; // another thread reopened it meanwhile
        } else {
            o.fd_ = fd;
            link_front(o);
        }
        ++o.pins_;
        lease.object_ = object;
        lease.fd_ = o.fd_;
        evict(closing, &n, evict_batch);
    }
    for (size_t i = 0; i < n; ++i)
        ::close(closing[i]);
    return lease;
}

void FdCache::unpin(BackingObject& o)
{
    std::lock_guard lock(mutex_);
    --o.pins_;
}

void FdCache::forget(BackingObject& o)
{
    int fd;
    {
        std::lock_guard lock(mutex_);
        unlink(o);
        fd = o.fd_;
        o.fd_ = -1;
    }
    if (fd >= 0)
        ::close(fd);
}

} // namespace layerd::fs
