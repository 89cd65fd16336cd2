// SPDX-License-Identifier: LGPL-2.1-or-later
// The libfuse low-level op table: thin thunks into Overlay, and INIT.
#include "overlay.hpp"

namespace layerd::fs {

void Overlay::init(fuse_conn_info* conn)
{
    auto want = [conn](unsigned cap) {
        if (conn->capable & cap)
            conn->want |= cap;
    };
    want(FUSE_CAP_SPLICE_WRITE);
    want(FUSE_CAP_SPLICE_READ);
    // Never move pages into the page cache: they may be mapped MAP_SHARED.
    conn->want &= ~FUSE_CAP_SPLICE_MOVE;
    if (options_.writeback_cache)
        want(FUSE_CAP_WRITEBACK_CACHE);
    want(FUSE_CAP_READDIRPLUS);
    conn->want &= ~FUSE_CAP_READDIRPLUS_AUTO;
    want(FUSE_CAP_PARALLEL_DIROPS);
    want(FUSE_CAP_ATOMIC_O_TRUNC);
    want(FUSE_CAP_CACHE_SYMLINKS);
    want(FUSE_CAP_ASYNC_DIO);
    // Cached data only changes through the overlay, which invalidates it
    // itself; the kernel must not drop it on an mtime it did not expect.
    conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
    want(FUSE_CAP_EXPLICIT_INVAL_DATA);
    // Locks are between processes of this one mount: the kernel keeps them.
    conn->want &= ~(FUSE_CAP_POSIX_LOCKS | FUSE_CAP_FLOCK_LOCKS);
    // A capability, not a wish: whether a swap can expire the root's
    // entries instead of dropping their subtrees at once (kernel 6.2+).
    expire_only_.store((conn->capable & FUSE_CAP_EXPIRE_ONLY) != 0, std::memory_order_relaxed);
    conn->max_write = 1u << 20;
    conn->time_gran = 1;
}

namespace {

Overlay& fs(fuse_req_t req) { return *static_cast<Overlay*>(fuse_req_userdata(req)); }

const fuse_lowlevel_ops ops = [] {
    fuse_lowlevel_ops o {};
    o.init = [](void* userdata, fuse_conn_info* conn) { static_cast<Overlay*>(userdata)->init(conn); };
    o.lookup = [](fuse_req_t req, fuse_ino_t parent, const char* name) { fs(req).lookup(req, parent, name); };
    o.forget = [](fuse_req_t req, fuse_ino_t ino, uint64_t n) {
        fs(req).forget(ino, n);
        fuse_reply_none(req);
    };
    o.forget_multi = [](fuse_req_t req, size_t count, fuse_forget_data* forgets) {
        for (size_t i = 0; i < count; ++i)
            fs(req).forget(forgets[i].ino, forgets[i].nlookup);
        fuse_reply_none(req);
    };
    o.getattr = [](fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) { fs(req).getattr(req, ino, fi); };
    o.setattr = [](fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set, fuse_file_info* fi) {
        fs(req).setattr(req, ino, attr, to_set, fi);
    };
    o.readlink = [](fuse_req_t req, fuse_ino_t ino) { fs(req).readlink(req, ino); };
    o.mknod = [](fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev) {
        fs(req).mknod(req, parent, name, mode, rdev);
    };
    o.mkdir = [](fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) {
        fs(req).mkdir(req, parent, name, mode);
    };
    o.unlink = [](fuse_req_t req, fuse_ino_t parent, const char* name) { fs(req).unlink(req, parent, name); };
    o.rmdir = [](fuse_req_t req, fuse_ino_t parent, const char* name) { fs(req).rmdir(req, parent, name); };
    o.symlink = [](fuse_req_t req, const char* target, fuse_ino_t parent, const char* name) {
        fs(req).symlink(req, target, parent, name);
    };
    o.rename = [](fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent, const char* newname,
                  unsigned int flags) { fs(req).rename(req, parent, name, newparent, newname, flags); };
    o.link = [](fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char* newname) {
        fs(req).link(req, ino, newparent, newname);
    };
    o.open = [](fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) { fs(req).open(req, ino, fi); };
    o.read = [](fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
        fs(req).read(req, ino, size, off, fi);
    };
    o.write_buf = [](fuse_req_t req, fuse_ino_t ino, fuse_bufvec* bufv, off_t off, fuse_file_info* fi) {
        fs(req).write_buf(req, ino, bufv, off, fi);
    };
    o.release = [](fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) { fs(req).release(req, ino, fi); };
    o.fsync = [](fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info* fi) {
        fs(req).fsync(req, ino, datasync, fi);
    };
    o.opendir = [](fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) { fs(req).opendir(req, ino, fi); };
    o.readdir = [](fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
        fs(req).readdir(req, ino, size, off, fi, false);
    };
    o.readdirplus = [](fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
        fs(req).readdir(req, ino, size, off, fi, true);
    };
    o.releasedir = [](fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) { fs(req).releasedir(req, ino, fi); };
    o.fsyncdir = [](fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info* fi) {
        fs(req).fsyncdir(req, ino, datasync, fi);
    };
    o.statfs = [](fuse_req_t req, fuse_ino_t ino) { fs(req).statfs(req, ino); };
    o.setxattr = [](fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size, int flags) {
        fs(req).setxattr(req, ino, name, value, size, flags);
    };
    o.getxattr = [](fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
        fs(req).getxattr(req, ino, name, size);
    };
    o.listxattr = [](fuse_req_t req, fuse_ino_t ino, size_t size) { fs(req).listxattr(req, ino, size); };
    o.removexattr = [](fuse_req_t req, fuse_ino_t ino, const char* name) { fs(req).removexattr(req, ino, name); };
    o.create = [](fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, fuse_file_info* fi) {
        fs(req).create(req, parent, name, mode, fi);
    };
    o.fallocate = [](fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length, fuse_file_info* fi) {
        fs(req).fallocate(req, ino, mode, offset, length, fi);
    };
    o.lseek = [](fuse_req_t req, fuse_ino_t ino, off_t off, int whence, fuse_file_info* fi) {
        fs(req).lseek(req, ino, off, whence, fi);
    };
    return o;
}();

} // namespace

const fuse_lowlevel_ops& Overlay::operations()
{
    return ops;
}

} // namespace layerd::fs
