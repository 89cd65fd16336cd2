// SPDX-License-Identifier: LGPL-2.1-or-later
#include "copy_data.hpp"

#include "resolve.hpp"

#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <vector>

namespace layerd {

static int copy_range_rw(int src, int dst, off_t off, off_t end) noexcept
{
    static thread_local std::vector<char> buf(1 << 20);
    while (off < end) {
        size_t want = static_cast<size_t>(std::min<off_t>(end - off, static_cast<off_t>(buf.size())));
        ssize_t n = ::pread(src, buf.data(), want, off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            return 0; // the source is shorter than it said: copy what is there
        for (ssize_t done = 0; done < n;) {
            ssize_t w = ::pwrite(dst, buf.data() + done, static_cast<size_t>(n - done), off + done);
            if (w < 0) {
                if (errno == EINTR)
                    continue;
                return -errno;
            }
            done += w;
        }
        off += n;
    }
    return 0;
}

// Copies [off, end); falls back from copy_file_range to read/write once the
// kernel says it cannot (cross-device, unsupported), remembered in *use_cfr.
static int copy_range(int src, int dst, off_t off, off_t end, bool* use_cfr) noexcept
{
    while (*use_cfr && off < end) {
        loff_t in = off, out = off;
        ssize_t n = ::copy_file_range(src, &in, dst, &out, static_cast<size_t>(end - off), 0);
        if (n > 0) {
            off += n;
            continue;
        }
        if (n == 0)
            return 0;
        if (errno == EINTR)
            continue;
        if (errno == EXDEV || errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP || errno == EBADF) {
            *use_cfr = false;
            break;
        }
        return -errno;
    }
    return copy_range_rw(src, dst, off, end);
}

int copy_file_data(int src, int dst, off_t size) noexcept
{
    if (size == 0)
        return 0;
    if (::ioctl(dst, FICLONE, src) == 0)
        return 0;

    bool use_cfr = true;
    off_t off = 0;
    while (off < size) {
        off_t data = ::lseek(src, off, SEEK_DATA);
        if (data < 0) {
            if (errno == ENXIO)
                break; // only a hole is left
            data = off; // no SEEK_DATA here: copy everything
        }
        if (data >= size)
            break;
        off_t hole = ::lseek(src, data, SEEK_HOLE);
        if (hole < 0 || hole > size)
            hole = size;
        if (int r = copy_range(src, dst, data, hole, &use_cfr); r < 0)
            return r;
        off = hole;
    }
    // A trailing hole: extend without writing.
    return ::ftruncate(dst, size) == 0 ? 0 : -errno;
}

int copy_xattrs(int src_fd, int dst_fd, const std::function<bool(std::string_view)>& keep)
{
    ProcFdPath src(src_fd), dst(dst_fd);
    ssize_t len = ::listxattr(src.c_str(), nullptr, 0);
    if (len < 0)
        return errno == ENOTSUP ? 0 : -errno;
    if (len == 0)
        return 0;
    std::vector<char> names(static_cast<size_t>(len));
    len = ::listxattr(src.c_str(), names.data(), names.size());
    if (len < 0)
        return -errno;
    std::vector<char> value;
    for (ssize_t i = 0; i < len;) {
        const char* name = names.data() + i;
        std::string_view sv(name);
        i += static_cast<ssize_t>(sv.size()) + 1;
        if (!keep(sv))
            continue;
        ssize_t vlen = ::getxattr(src.c_str(), name, nullptr, 0);
        if (vlen < 0) {
            if (errno == ENODATA)
                continue;
            return -errno;
        }
        value.resize(static_cast<size_t>(vlen));
        vlen = ::getxattr(src.c_str(), name, value.data(), value.size());
        if (vlen < 0)
            return -errno;
        if (::setxattr(dst.c_str(), name, value.data(), static_cast<size_t>(vlen), 0) != 0) {
            // A namespace the destination cannot hold (security.* on some
            // filesystems) is not the user's data: skip it as the kernel does.
            if (errno == ENOTSUP || errno == EPERM)
                continue;
            return -errno;
        }
    }
    return 0;
}

} // namespace layerd
