// SPDX-License-Identifier: LGPL-2.1-or-later
#include "resolve.hpp"

#include <linux/openat2.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>

namespace layerd {

bool is_valid_name(std::string_view name) noexcept
{
    if (name.empty() || name == "." || name == "..")
        return false;
    return name.find('/') == std::string_view::npos && name.find('\0') == std::string_view::npos;
}

std::optional<std::string> normalized_absolute_path(std::string_view path)
{
    if (path.empty() || path.front() != '/')
        return std::nullopt;
    std::string out;
    size_t start = 0;
    while (start < path.size()) {
        size_t end = std::min(path.find('/', start), path.size());
        std::string_view component = path.substr(start, end - start);
        if (component == "." || component == "..")
            return std::nullopt;
        if (!component.empty()) {
            out += '/';
            out += component;
        }
        start = end + 1;
    }
    return out.empty() ? "/" : out;
}

int open_beneath(int dirfd, const char* path, int flags, mode_t mode) noexcept
{
    struct open_how how {};
    how.flags = static_cast<__u64>(flags | O_NOFOLLOW | O_CLOEXEC);
    how.mode = (flags & (O_CREAT | O_TMPFILE)) ? mode : 0;
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
    for (;;) {
        long fd = syscall(SYS_openat2, dirfd, path, &how, sizeof how);
        if (fd >= 0)
            return static_cast<int>(fd);
        if (errno != EINTR && errno != EAGAIN)
            return -errno;
    }
}

ProcFdPath::ProcFdPath(int fd) noexcept
{
    std::snprintf(buf_, sizeof buf_, "/proc/self/fd/%d", fd);
}

int reopen_fd(int path_fd, int flags) noexcept
{
    int fd = ::open(ProcFdPath(path_fd).c_str(), (flags & ~(O_NOFOLLOW | O_CREAT | O_EXCL | O_NOCTTY)) | O_CLOEXEC);
    return fd >= 0 ? fd : -errno;
}

int stat_at(int dirfd, const char* name, struct stat* st) noexcept
{
    return ::fstatat(dirfd, name, st, AT_SYMLINK_NOFOLLOW) == 0 ? 0 : -errno;
}

int stat_fd(int fd, struct stat* st) noexcept
{
    return ::fstat(fd, st) == 0 ? 0 : -errno;
}

} // namespace layerd
