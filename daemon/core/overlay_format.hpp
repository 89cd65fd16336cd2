// SPDX-License-Identifier: LGPL-2.1-or-later
// Kernel overlayfs's on-disk format (Documentation/filesystems/overlayfs.rst):
// whiteouts, opaque dirs, redirects, and the overlay's private xattrs.
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace layerd {

enum class XattrFormat {
    trusted, // trusted.overlay.* (the kernel's default; needs CAP_SYS_ADMIN)
    user,    // user.overlay.* (the kernel's `userxattr`)
};

// The names of the overlay's own xattrs in one format.
struct OverlayXattrs {
    explicit OverlayXattrs(XattrFormat format);

    // Private xattrs are never shown to users nor settable by them.
    bool is_private(std::string_view name) const noexcept { return name.starts_with(prefix); }

    std::string prefix;   // "trusted.overlay."
    std::string opaque;   // "...opaque" = "y"
    std::string redirect; // "...redirect" = absolute path of the lower dir
    // layerd's own: the st_ino a copied-up object keeps from its origin.
    std::string origin_ino;
};

// A whiteout is a character device 0/0.
inline bool is_whiteout(const struct stat& st) noexcept
{
    return S_ISCHR(st.st_mode) && st.st_rdev == 0;
}

// Reads a small xattr of the object an fd (O_PATH allowed) names.
// Returns the value, or nullopt when absent; -errno other failures in *err.
std::optional<std::string> read_xattr(int fd, const std::string& name, int* err = nullptr);
// Sets an xattr on the object an fd (O_PATH allowed) names; 0 or -errno.
int write_xattr(int fd, const std::string& name, std::string_view value) noexcept;

bool is_opaque_dir(int fd, const OverlayXattrs& xattrs);

// Creates a whiteout NAME in dirfd (mknod char 0/0); 0 or -errno.
int make_whiteout(int dirfd, const char* name) noexcept;

} // namespace layerd
