// SPDX-License-Identifier: LGPL-2.1-or-later
// Resolving names beneath a layer's directory fd. Nothing here ever follows a
// symlink or a magic link, so no entry of a layer can reach outside it.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>

#include <optional>
#include <string>
#include <string_view>

namespace layerd {

// True for a single path component the overlay may look up: not empty, not
// "." or "..", no '/'. Names from the kernel and from layers both pass here.
bool is_valid_name(std::string_view name) noexcept;

// An absolute path with single slashes and no trailing one ("/a//b/" gives
// "/a/b"; "/" stays "/"); nullopt when PATH is relative or has a "." or ".."
// component, which are refused rather than resolved.
std::optional<std::string> normalized_absolute_path(std::string_view path);

// openat2(dirfd, name, flags | O_NOFOLLOW | O_CLOEXEC) with RESOLVE_BENEATH,
// RESOLVE_NO_SYMLINKS and RESOLVE_NO_MAGICLINKS. `path` may have several
// components (used for redirects); each is resolved beneath dirfd.
// Returns the fd or -errno.
int open_beneath(int dirfd, const char* path, int flags, mode_t mode = 0) noexcept;

// "/proc/self/fd/N" for an fd, so calls with no *at() form (xattrs, reopening
// an O_PATH fd with real access flags) reach the object the fd names.
class ProcFdPath {
public:
    explicit ProcFdPath(int fd) noexcept;
    const char* c_str() const noexcept { return buf_; }

private:
    char buf_[32];
};

// Reopens an O_PATH fd with real open flags (never following a symlink the fd
// names: the kernel refuses to open those through /proc). Returns fd or -errno.
int reopen_fd(int path_fd, int flags) noexcept;

// fstatat(dirfd, name, AT_SYMLINK_NOFOLLOW); returns 0 or -errno.
int stat_at(int dirfd, const char* name, struct stat* st) noexcept;
// fstat of any fd, O_PATH included; returns 0 or -errno.
int stat_fd(int fd, struct stat* st) noexcept;

} // namespace layerd
