// SPDX-License-Identifier: LGPL-2.1-or-later
#include "overlay_format.hpp"

#include "resolve.hpp"

#include <sys/sysmacros.h>
#include <sys/xattr.h>

#include <cerrno>

namespace layerd {

OverlayXattrs::OverlayXattrs(XattrFormat format)
    : prefix(format == XattrFormat::user ? "user.overlay." : "trusted.overlay.")
    , opaque(prefix + "opaque")
    , redirect(prefix + "redirect")
    , origin_ino(prefix + "layerd.ino")
{
}

std::optional<std::string> read_xattr(int fd, const std::string& name, int* err)
{
    char buf[4096];
    ssize_t n = ::getxattr(ProcFdPath(fd).c_str(), name.c_str(), buf, sizeof buf);
    if (err)
        *err = 0;
    if (n >= 0)
        return std::string(buf, static_cast<size_t>(n));
    if (errno != ENODATA && errno != ENOTSUP && err)
        *err = -errno;
    return std::nullopt;
}

int write_xattr(int fd, const std::string& name, std::string_view value) noexcept
{
    return ::setxattr(ProcFdPath(fd).c_str(), name.c_str(), value.data(), value.size(), 0) == 0 ? 0 : -errno;
}

bool is_opaque_dir(int fd, const OverlayXattrs& xattrs)
{
    char c;
    ssize_t n = ::getxattr(ProcFdPath(fd).c_str(), xattrs.opaque.c_str(), &c, 1);
    return n == 1 && c == 'y';
}

int make_whiteout(int dirfd, const char* name) noexcept
{
    return ::mknodat(dirfd, name, S_IFCHR | 0, makedev(0, 0)) == 0 ? 0 : -errno;
}

} // namespace layerd
