// SPDX-License-Identifier: LGPL-2.1-or-later
#include "layer_set.hpp"

#include "remove_tree.hpp"
#include "resolve.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fmt/format.h>

namespace layerd {

namespace {

[[noreturn]] void fail(const std::string& what, const std::string& path, const std::string& reason)
{
    throw LayerError(fmt::format("{} '{}': {}", what, path, reason));
}

UniqueFd open_dir(const std::string& what, const std::string& path, struct stat* st)
{
    if (path.empty())
        fail(what, path, "empty path");
    int fd = ::open(path.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        fail(what, path, std::strerror(errno));
    UniqueFd dir(fd);
    if (::fstat(dir.get(), st) != 0)
        fail(what, path, std::strerror(errno));
    return dir;
}

// O_PATH does not check read permission: a layer we cannot list is useless.
UniqueFd open_readable(const std::string& what, const std::string& path, int dirfd)
{
    int fd = ::openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        fail(what, path, std::strerror(errno));
    return UniqueFd(fd);
}

// True if directory `inner` is `outer` or lies beneath it (walks up by "..").
bool is_within(int inner_fd, dev_t outer_dev, ino_t outer_ino)
{
    UniqueFd cur(::openat(inner_fd, ".", O_PATH | O_DIRECTORY | O_CLOEXEC));
    for (int depth = 0; cur && depth < 4096; ++depth) {
        struct stat st;
        if (::fstat(cur.get(), &st) != 0)
            return false;
        if (st.st_dev == outer_dev && st.st_ino == outer_ino)
            return true;
        UniqueFd up(::openat(cur.get(), "..", O_PATH | O_DIRECTORY | O_CLOEXEC));
        struct stat ust;
        if (!up || ::fstat(up.get(), &ust) != 0)
            return false;
        if (ust.st_dev == st.st_dev && ust.st_ino == st.st_ino)
            return false; // reached "/"
        cur = std::move(up);
    }
    return false;
}

bool dir_is_empty(int dirfd)
{
    int fd = ::openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return true;
    DIR* d = ::fdopendir(fd);
    if (!d) {
        ::close(fd);
        return true;
    }
    bool empty = true;
    while (struct dirent* de = ::readdir(d)) {
        if (std::strcmp(de->d_name, ".") != 0 && std::strcmp(de->d_name, "..") != 0) {
            empty = false;
            break;
        }
    }
    ::closedir(d);
    return empty;
}

// A Layer on the directory ROOT (O_PATH) names; ST is its stat.
std::shared_ptr<Layer> layer_on(const std::string& what, const std::string& path, UniqueFd root,
                                const struct stat& st, bool writable)
{
    auto layer = std::make_shared<Layer>();
    layer->mount_fd = open_readable(what, path, root.get());
    layer->root = std::move(root);
    layer->path = path;
    layer->dev = st.st_dev;
    layer->ino = st.st_ino;
    layer->writable = writable;
    return layer;
}

} // namespace

std::shared_ptr<Layer> LayerSet::open_layer(const std::string& what, const std::string& path, bool writable)
{
    struct stat st;
    UniqueFd root = open_dir(what, path, &st);
    return layer_on(what, path, std::move(root), st, writable);
}

std::shared_ptr<Layer> LayerSet::reopen_layer(const Layer& layer, bool writable)
{
    UniqueFd root(::fcntl(layer.root.get(), F_DUPFD_CLOEXEC, 0));
    struct stat st;
    if (!root || ::fstat(root.get(), &st) != 0)
        fail("layer", layer.path, std::strerror(errno));
    return layer_on("layer", layer.path, std::move(root), st, writable);
}

namespace {

constexpr const char volatile_marker_dir[] = "incompat";
constexpr const char volatile_marker[] = "incompat/volatile";

} // namespace

LayerSet LayerSet::open(const LayerSetConfig& config)
{
    if (config.lowers.empty())
        throw LayerError("lowerdir: at least one lower directory is required");
    if (config.upper.has_value() != config.work.has_value())
        throw LayerError(config.upper ? fmt::format("upperdir '{}': needs a workdir", *config.upper)
                                      : fmt::format("workdir '{}': needs an upperdir", *config.work));

    LayerSet set;
    set.is_volatile = config.is_volatile;
    if (config.upper)
        set.layers.push_back(open_layer("upperdir", *config.upper, true));
    for (const auto& lower : config.lowers)
        set.layers.push_back(open_layer("lowerdir", lower, false));

    if (const Layer* up = set.upper()) {
        for (size_t i = 1; i < set.layers.size(); ++i) {
            const Layer& lo = *set.layers[i];
            if (is_within(up->root.get(), lo.dev, lo.ino))
                fail("upperdir", up->path, fmt::format("lies inside lowerdir '{}'", lo.path));
            if (is_within(lo.root.get(), up->dev, up->ino))
                fail("lowerdir", lo.path, fmt::format("lies inside upperdir '{}'", up->path));
        }
        struct stat wst;
        UniqueFd workdir = open_dir("workdir", *config.work, &wst);
        open_readable("workdir", *config.work, workdir.get());
        if (wst.st_dev != up->dev)
            fail("workdir", *config.work, fmt::format("is not on the filesystem of upperdir '{}'", up->path));
        if (is_within(workdir.get(), up->dev, up->ino))
            fail("workdir", *config.work, fmt::format("lies inside upperdir '{}'", up->path));
        if (is_within(up->root.get(), wst.st_dev, wst.st_ino))
            fail("upperdir", up->path, fmt::format("lies inside workdir '{}'", *config.work));

        if (::mkdirat(workdir.get(), "work", 0700) != 0 && errno != EEXIST)
            fail("workdir", *config.work, fmt::format("cannot create work/: {}", std::strerror(errno)));
        int wfd = open_beneath(workdir.get(), "work", O_PATH | O_DIRECTORY);
        if (wfd < 0)
            fail("workdir", *config.work, fmt::format("work/: {}", std::strerror(-wfd)));
        set.work = UniqueFd(wfd);
        struct stat mst;
        if (::fstatat(set.work.get(), volatile_marker, &mst, AT_SYMLINK_NOFOLLOW) == 0)
            fail("workdir", *config.work,
                 "a volatile mount was not shut down cleanly, the upper may be inconsistent; "
                 "remove work/incompat/volatile to mount anyway");
        // Leftovers of copy-ups cut short by a crash: never part of the view.
        if (int r = clear_dir(set.work.get()); r < 0)
            fail("workdir", *config.work, fmt::format("cannot clean work/: {}", std::strerror(-r)));
        if (set.is_volatile) {
            if (::mkdirat(set.work.get(), volatile_marker_dir, 0700) != 0 ||
                ::mkdirat(set.work.get(), volatile_marker, 0700) != 0)
                fail("workdir", *config.work, fmt::format("cannot mark volatile: {}", std::strerror(errno)));
        }
    }

    // Inode numbers: the real ones when every layer is on one filesystem,
    // else the filesystem's position in the high bits (kernel overlayfs's xino).
    std::vector<dev_t> devs;
    for (auto& layer : set.layers) {
        auto it = std::find(devs.begin(), devs.end(), layer->dev);
        if (it == devs.end())
            it = devs.insert(devs.end(), layer->dev);
        layer->ino_prefix = static_cast<uint64_t>(it - devs.begin()) << 48;
    }

    if (!config.mountpoint.empty()) {
        struct stat mst;
        UniqueFd mp = open_dir("mountpoint", config.mountpoint, &mst);
        open_readable("mountpoint", config.mountpoint, mp.get());
        bool is_layer = false;
        for (auto& layer : set.layers)
            is_layer |= layer->dev == mst.st_dev && layer->ino == mst.st_ino;
        if (!is_layer && !config.allow_nonempty_mountpoint) {
            struct statx stx;
            if (::statx(mp.get(), "", AT_EMPTY_PATH, STATX_BASIC_STATS, &stx) == 0 &&
                (stx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT) && (stx.stx_attributes & STATX_ATTR_MOUNT_ROOT))
                fail("mountpoint", config.mountpoint, "is busy: something is already mounted there");
            if (!dir_is_empty(mp.get()))
                fail("mountpoint", config.mountpoint, "is not empty (use -o nonempty to mount over it)");
        }
    }
    return set;
}

int LayerSet::clear_volatile_marker() const
{
    if (!is_volatile || !work)
        return 0;
    if (const Layer* up = upper()) {
        int fd = open_beneath(up->root.get(), ".", O_RDONLY | O_DIRECTORY); // syncfs needs a real fd
        if (fd < 0)
            return fd;
        UniqueFd dir(fd);
        if (::syncfs(fd) != 0)
            return -errno;
    }
    if (::unlinkat(work.get(), volatile_marker, AT_REMOVEDIR) != 0 && errno != ENOENT)
        return -errno;
    return 0;
}

} // namespace layerd
