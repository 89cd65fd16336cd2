// SPDX-License-Identifier: LGPL-2.1-or-later
// Attributes: setattr (copy-up first), readlink, statfs.
#include "overlay.hpp"

#include "resolve.hpp"

#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <climits>

namespace layerd::fs {

void Overlay::setattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set, fuse_file_info* fi)
{
    auto n = node(ino);
    if (!n)
        return (void)fuse_reply_err(req, ESTALE);
    auto change = changing();
    auto reply_current = [&] {
        struct stat st;
        if (int r = stat_node(*n, &st); r < 0)
            return (void)fuse_reply_err(req, -r);
        fuse_reply_attr(req, &st, options_.timeout);
    };
    // ctime cannot be set; the kernel's writeback cache sends it alone, e.g.
    // right after an unlink. Nothing to copy up for that.
    to_set &= ~FUSE_SET_ATTR_CTIME;
    if (to_set == 0)
        return reply_current();
    if (n->unlinked.load() && !n->stack()->in_upper()) {
        // A deleted lower file has no name left to copy up to: it keeps its
        // times and stays as it was.
        if ((to_set & ~(FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_ATIME_NOW |
                        FUSE_SET_ATTR_MTIME_NOW)) == 0)
            return reply_current();
        return (void)fuse_reply_err(req, ENOENT);
    }
    bool truncate_to_zero = (to_set & FUSE_SET_ATTR_SIZE) && attr->st_size == 0;
    if (int r = copy_up(n, !truncate_to_zero); r < 0)
        return (void)fuse_reply_err(req, -r);
    auto stack = n->stack();
    FdLease lease = fd_of(stack->top());
    if (!lease)
        return (void)fuse_reply_err(req, -lease.error());
    int fd = lease.get();
    auto fail = [&](int err) { fuse_reply_err(req, err); };

    if (to_set & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) {
        uid_t uid = (to_set & FUSE_SET_ATTR_UID) ? attr->st_uid : static_cast<uid_t>(-1);
        gid_t gid = (to_set & FUSE_SET_ATTR_GID) ? attr->st_gid : static_cast<gid_t>(-1);
        if (::fchownat(fd, "", uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0)
            return fail(errno);
    }
    if ((to_set & FUSE_SET_ATTR_MODE) && ::chmod(ProcFdPath(fd).c_str(), attr->st_mode & 07777) != 0)
        return fail(errno);
    if (to_set & FUSE_SET_ATTR_SIZE) {
        int r;
        OpenFd file;
        if (fi && (r = open_fd(fi->fh, true, &file)) != -EBADF) {
            r = r < 0 ? r : (::ftruncate(file.fd, attr->st_size) == 0 ? 0 : -errno);
        } else {
            int wfd = reopen_fd(fd, O_WRONLY);
            r = wfd < 0 ? wfd : (::ftruncate(wfd, attr->st_size) == 0 ? 0 : -errno);
            if (wfd >= 0)
                ::close(wfd);
        }
        if (r < 0)
            return fail(-r);
    }
    if (to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME)) {
        struct timespec times[2] = {{0, UTIME_OMIT}, {0, UTIME_OMIT}};
        if (to_set & FUSE_SET_ATTR_ATIME_NOW)
            times[0].tv_nsec = UTIME_NOW;
        else if (to_set & FUSE_SET_ATTR_ATIME)
            times[0] = attr->st_atim;
        if (to_set & FUSE_SET_ATTR_MTIME_NOW)
            times[1].tv_nsec = UTIME_NOW;
        else if (to_set & FUSE_SET_ATTR_MTIME)
            times[1] = attr->st_mtim;
        if (::utimensat(fd, "", times, AT_EMPTY_PATH) != 0)
            return fail(errno);
    }
    struct stat st;
    if (int r = stat_node(*n, *stack, &st); r < 0)
        return fail(-r);
    fuse_reply_attr(req, &st, options_.timeout);
}

void Overlay::readlink(fuse_req_t req, fuse_ino_t ino)
{
    auto n = node(ino);
    if (!n)
        return (void)fuse_reply_err(req, ESTALE);
    FdLease fd = fd_of(n->stack()->top());
    if (!fd)
        return (void)fuse_reply_err(req, -fd.error());
    char target[PATH_MAX + 1];
    ssize_t len = ::readlinkat(fd.get(), "", target, PATH_MAX);
    if (len < 0)
        return (void)fuse_reply_err(req, errno);
    target[len] = '\0';
    fuse_reply_readlink(req, target);
}

void Overlay::statfs(fuse_req_t req, fuse_ino_t)
{
    // The filesystem new data lands on: the upper's, or the top lower's.
    struct statvfs sv;
    if (::fstatvfs(current_view()->layers.front()->root.get(), &sv) != 0)
        return (void)fuse_reply_err(req, errno);
    fuse_reply_statfs(req, &sv);
}

} // namespace layerd::fs
