// SPDX-License-Identifier: LGPL-2.1-or-later
#include "remove_tree.hpp"

#include "resolve.hpp"
#include "unique_fd.hpp"

#include <dirent.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <vector>

namespace layerd {

int clear_dir(int dirfd) noexcept
{
    int fd = open_beneath(dirfd, ".", O_RDONLY | O_DIRECTORY);
    if (fd < 0)
        return fd;
    DIR* dir = ::fdopendir(fd);
    if (!dir) {
        ::close(fd);
        return -errno;
    }
    std::vector<std::string> names;
    while (struct dirent* de = ::readdir(dir)) {
        std::string_view n(de->d_name);
        if (n != "." && n != "..")
            names.emplace_back(n);
    }
    ::closedir(dir);
    int result = 0;
    for (const auto& n : names)
        if (int r = remove_tree_at(dirfd, n.c_str()); r < 0 && result == 0)
            result = r;
    return result;
}

int remove_tree_at(int dirfd, const char* name) noexcept
{
    if (::unlinkat(dirfd, name, 0) == 0 || errno == ENOENT)
        return 0;
    if (errno != EISDIR && errno != EPERM)
        return -errno;
    int sub = open_beneath(dirfd, name, O_RDONLY | O_DIRECTORY);
    if (sub < 0)
        return sub == -ENOENT ? 0 : sub;
    UniqueFd subfd(sub);
    if (int r = clear_dir(subfd.get()); r < 0)
        return r;
    if (::unlinkat(dirfd, name, AT_REMOVEDIR) == 0 || errno == ENOENT)
        return 0;
    return -errno;
}

} // namespace layerd
