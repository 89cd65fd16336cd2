// SPDX-License-Identifier: LGPL-2.1-or-later
// Extended attributes; the overlay's own are neither shown nor settable.
#include "overlay.hpp"

#include "resolve.hpp"

#include <sys/xattr.h>

#include <cerrno>
#include <cstring>

namespace layerd::fs {

void Overlay::getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size)
{
    auto n = node(ino);
    if (!n)
        return (void)fuse_reply_err(req, ESTALE);
    if (xattrs_.is_private(name))
        return (void)fuse_reply_err(req, EOPNOTSUPP);
    FdLease fd = fd_of(n->stack()->top());
    if (!fd)
        return (void)fuse_reply_err(req, -fd.error());
    ProcFdPath path(fd.get());
    if (size == 0) {
        ssize_t len = ::getxattr(path.c_str(), name, nullptr, 0);
        return (void)(len < 0 ? fuse_reply_err(req, errno) : fuse_reply_xattr(req, static_cast<size_t>(len)));
    }
    thread_local std::vector<char> buf;
    buf.resize(size);
    ssize_t len = ::getxattr(path.c_str(), name, buf.data(), size);
    if (len < 0)
        return (void)fuse_reply_err(req, errno);
    fuse_reply_buf(req, buf.data(), static_cast<size_t>(len));
}

void Overlay::listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
    auto n = node(ino);
    if (!n)
        return (void)fuse_reply_err(req, ESTALE);
    FdLease fd = fd_of(n->stack()->top());
    if (!fd)
        return (void)fuse_reply_err(req, -fd.error());
    ProcFdPath path(fd.get());
    thread_local std::vector<char> names;
    for (;;) {
        ssize_t len = ::listxattr(path.c_str(), nullptr, 0);
        if (len < 0)
            return (void)fuse_reply_err(req, errno);
        names.resize(static_cast<size_t>(len));
        len = ::listxattr(path.c_str(), names.data(), names.size());
        if (len < 0 && errno == ERANGE)
            continue; // grew meanwhile
        if (len < 0)
            return (void)fuse_reply_err(req, errno);
        names.resize(static_cast<size_t>(len));
        break;
    }
    // Drop the overlay's own names, in place.
    size_t out = 0;
    for (size_t i = 0; i < names.size();) {
        size_t l = std::strlen(names.data() + i) + 1;
        if (!xattrs_.is_private(std::string_view(names.data() + i, l - 1))) {
            std::memmove(names.data() + out, names.data() + i, l);
            out += l;
        }
        i += l;
    }
    if (size == 0)
        return (void)fuse_reply_xattr(req, out);
    if (out > size)
        return (void)fuse_reply_err(req, ERANGE);
    fuse_reply_buf(req, names.data(), out);
}

void Overlay::setxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size, int flags)
{
    auto n = node(ino);
    if (!n)
        return (void)fuse_reply_err(req, ESTALE);
    if (xattrs_.is_private(name))
        return (void)fuse_reply_err(req, EOPNOTSUPP);
    auto change = changing();
    if (int r = copy_up(n); r < 0)
        return (void)fuse_reply_err(req, -r);
    FdLease fd = fd_of(n->stack()->top());
    if (!fd)
        return (void)fuse_reply_err(req, -fd.error());
    ProcFdPath path(fd.get());
    fuse_reply_err(req, ::setxattr(path.c_str(), name, value, size, flags) == 0 ? 0 : errno);
}

void Overlay::removexattr(fuse_req_t req, fuse_ino_t ino, const char* name)
{
    auto n = node(ino);
    if (!n)
        return (void)fuse_reply_err(req, ESTALE);
    if (xattrs_.is_private(name))
        return (void)fuse_reply_err(req, EOPNOTSUPP);
    auto change = changing();
    if (read_only())
        return (void)fuse_reply_err(req, EROFS);
    // Removing what is not there changes nothing: no copy-up for it.
    {
        FdLease fd = fd_of(n->stack()->top());
        if (!fd)
            return (void)fuse_reply_err(req, -fd.error());
        if (::getxattr(ProcFdPath(fd.get()).c_str(), name, nullptr, 0) < 0)
            return (void)fuse_reply_err(req, errno);
    }
    if (int r = copy_up(n); r < 0)
        return (void)fuse_reply_err(req, -r);
    FdLease fd = fd_of(n->stack()->top());
    if (!fd)
        return (void)fuse_reply_err(req, -fd.error());
    ProcFdPath path(fd.get());
    fuse_reply_err(req, ::removexattr(path.c_str(), name) == 0 ? 0 : errno);
}

} // namespace layerd::fs
