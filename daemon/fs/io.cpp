// SPDX-License-Identifier: LGPL-2.1-or-later
// File I/O through stacked handles.
#include "overlay.hpp"

#include "resolve.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace layerd::fs {

int Overlay::open_flags_for(int flags) const
{
    if (options_.writeback_cache) {
        // The kernel may read pages of a write-only file to fill a partial
        // page, and it does O_APPEND itself from its cached size.
        if ((flags & O_ACCMODE) == O_WRONLY)
            flags = (flags & ~O_ACCMODE) | O_RDWR;
        flags &= ~O_APPEND;
    }
    // O_DIRECT alignment rules would apply to the daemon's buffers, not the
    // caller's: the kernel already honours the caller's O_DIRECT.
    return flags & ~(O_CREAT | O_EXCL | O_NOCTTY | O_DIRECT | O_NOFOLLOW);
}

int Overlay::handle_fd(FileHandle& fh, bool for_write, std::shared_lock<std::shared_mutex>* lock)
{
    for (;;) {
        std::shared_lock shared(fh.mutex);
        // A write needs the fd to be of the live upper, as of the last freeze
        // (callers of a write hold changing(), so no freeze comes between).
        uint64_t freezes = freezes_.load(std::memory_order_acquire);
        if (fh.epoch == fh.node->epoch.load(std::memory_order_acquire) &&
            (!for_write || (fh.on_upper && fh.freezes == freezes))) {
            *lock = std::move(shared);
            return fh.fd.get();
        }
        shared.unlock();
        if (for_write)
            if (int r = copy_up(fh.node); r < 0)
                return r;
        std::unique_lock exclusive(fh.mutex);
        uint64_t epoch = fh.node->epoch.load(std::memory_order_acquire);
        auto stack = fh.node->stack();
        if (fh.epoch != epoch) {
            FdLease object = fd_of(stack->top());
            if (!object)
                return object.error();
            int fd = reopen_fd(object.get(), fh.flags & ~O_TRUNC);
            if (fd < 0)
                return fd;
            fh.fd.reset(fd);
            fh.epoch = epoch;
        }
        fh.on_upper = stack->in_upper();
        fh.freezes = freezes;
    }
}

int Overlay::open_fd(uint64_t fh, bool for_write, OpenFd* out)
{
    out->handle = files_.get(fh);
    if (!out->handle)
        return -EBADF;
    out->fd = handle_fd(*out->handle, for_write, &out->lock);
    return out->fd < 0 ? out->fd : 0;
}

void Overlay::open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi)
{
    auto n = node(ino);
    if (!n)
        return (void)fuse_reply_err(req, ESTALE);
    if (n->is_dir())
        return (void)fuse_reply_err(req, EISDIR);
    bool truncate = fi->flags & O_TRUNC;
    std::shared_lock<std::shared_mutex> change;
    if ((fi->flags & O_ACCMODE) != O_RDONLY || truncate) {
        change = changing();
        // Copy-up at open, as the kernel does; a truncating open copies no data.
        if (int r = copy_up(n, !truncate); r < 0)
            return (void)fuse_reply_err(req, -r);
    }
    auto fh = std::make_shared<FileHandle>();
    fh->node = n;
    fh->flags = open_flags_for(fi->flags);
    fh->epoch = n->epoch.load(std::memory_order_acquire);
    auto stack = n->stack();
    FdLease object = fd_of(stack->top());
    if (!object)
        return (void)fuse_reply_err(req, -object.error());
    int fd = reopen_fd(object.get(), fh->flags);
    if (fd < 0)
        return (void)fuse_reply_err(req, -fd);
    fh->fd.reset(fd);
    fh->on_upper = stack->in_upper();
    fh->freezes = freezes_.load(std::memory_order_acquire);
    bool read_only_open = (fi->flags & O_ACCMODE) == O_RDONLY;
    fi->fh = files_.add(std::move(fh));
    // Every change to a node's data goes through this kernel's page cache,
    // so what it cached stays valid across opens and copy-ups.
    fi->keep_cache = 1;
    fi->noflush = read_only_open;
    if (fuse_reply_open(req, fi) != 0)
        files_.remove(fi->fh);
}

void Overlay::read(fuse_req_t req, fuse_ino_t, size_t size, off_t off, fuse_file_info* fi)
{
    OpenFd file;
    if (int r = open_fd(fi->fh, false, &file); r < 0)
        return (void)fuse_reply_err(req, -r);
    int fd = file.fd;
    // An fd-backed buffer: libfuse splices it to the kernel (never with
    // SPLICE_F_MOVE: these pages may be mapped MAP_SHARED elsewhere).
    fuse_bufvec buf = FUSE_BUFVEC_INIT(size);
    buf.buf[0].flags = static_cast<fuse_buf_flags>(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
    buf.buf[0].fd = fd;
    buf.buf[0].pos = off;
    fuse_reply_data(req, &buf, static_cast<fuse_buf_copy_flags>(0));
}

namespace {

// With the writeback cache a write's error reaches no writer as it is: the
// kernel keeps EIO (or ENOSPC) for whoever closes or fsyncs the file later.
// So a failure other than a full disk or quota is said here, once per
// request, with the errno the kernel drops.
void report_write_failure(fuse_ino_t ino, off_t off, int err)
{
    if (err != ENOSPC && err != EDQUOT)
        fuse_log(FUSE_LOG_ERR, "write of inode %llu at offset %lld failed: %s\n",
                 static_cast<unsigned long long>(ino), static_cast<long long>(off), std::strerror(err));
}

} // namespace

void Overlay::write_buf(fuse_req_t req, fuse_ino_t ino, fuse_bufvec* in, off_t off, fuse_file_info* fi)
{
    auto change = changing();
    OpenFd file;
    if (int r = open_fd(fi->fh, true, &file); r < 0) {
        report_write_failure(ino, off, -r);
        return (void)fuse_reply_err(req, -r);
    }
    int fd = file.fd;
    fuse_bufvec out = FUSE_BUFVEC_INIT(fuse_buf_size(in));
    out.buf[0].flags = static_cast<fuse_buf_flags>(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
    out.buf[0].fd = fd;
    out.buf[0].pos = off;
    ssize_t n = fuse_buf_copy(&out, in, static_cast<fuse_buf_copy_flags>(0));
    if (n < 0) {
        report_write_failure(ino, off, static_cast<int>(-n));
        fuse_reply_err(req, static_cast<int>(-n));
    } else {
        fuse_reply_write(req, static_cast<size_t>(n));
    }
}

void Overlay::release(fuse_req_t req, fuse_ino_t, fuse_file_info* fi)
{
    files_.remove(fi->fh);
    fuse_reply_err(req, 0);
}

void Overlay::fsync(fuse_req_t req, fuse_ino_t, int datasync, fuse_file_info* fi)
{
    OpenFd file;
    if (int r = open_fd(fi->fh, false, &file); r < 0)
        return (void)fuse_reply_err(req, -r);
    int fd = file.fd;
    int r = datasync ? ::fdatasync(fd) : ::fsync(fd);
    fuse_reply_err(req, r == 0 ? 0 : errno);
}

void Overlay::fallocate(fuse_req_t req, fuse_ino_t, int mode, off_t offset, off_t length, fuse_file_info* fi)
{
    auto change = changing();
    OpenFd file;
    if (int r = open_fd(fi->fh, true, &file); r < 0)
        return (void)fuse_reply_err(req, -r);
    int fd = file.fd;
    fuse_reply_err(req, ::fallocate(fd, mode, offset, length) == 0 ? 0 : errno);
}

void Overlay::lseek(fuse_req_t req, fuse_ino_t, off_t off, int whence, fuse_file_info* fi)
{
    OpenFd file;
    if (int r = open_fd(fi->fh, false, &file); r < 0)
        return (void)fuse_reply_err(req, -r);
    int fd = file.fd;
    off_t res = ::lseek(fd, off, whence);
    if (res < 0)
        fuse_reply_err(req, errno);
    else
        fuse_reply_lseek(req, res);
}

} // namespace layerd::fs
