// SPDX-License-Identifier: LGPL-2.1-or-later
// undo-change (DESIGN §2): paths of the live view made what they are in a
// snapshot. What differs comes from the diff of the snapshot against the
// live view (the layers between them, not a walk of the tree); each changed
// entry is then written through the mount, beneath its root fd, so the
// engine copies up, whites out and tells the kernel as for any other write.
// A replaced file is a new file: fds and mappings of the old one keep it.
#include "mounted_stack.hpp"
#include "stack_io.hpp"

#include "copy_data.hpp"
#include "layer_view.hpp"
#include "remove_tree.hpp"
#include "resolve.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <fmt/format.h>
#include <set>

namespace layerd {

namespace {

[[noreturn]] void invalid(const std::string& what)
{
    throw SnapshotError(SnapshotError::Kind::InvalidArgument, what);
}

std::string normalized(const std::string& path)
{
    std::optional<std::string> out = normalized_absolute_path(path);
    if (!out)
        invalid(fmt::format("'{}' is not an absolute path without '.' or '..' components", path));
    return *out;
}

bool at_or_below(std::string_view path, std::string_view top)
{
    if (top == "/")
        return true;
    return path.starts_with(top) && (path.size() == top.size() || path[top.size()] == '/');
}

// The parent of "/a/b" relative to the root ("a"; "." for "/b"), and "b".
std::pair<std::string, std::string> split(const std::string& path)
{
    size_t slash = path.rfind('/');
    std::string parent = slash == 0 ? "." : path.substr(1, slash - 1);
    return {parent, path.substr(slash + 1)};
}

std::atomic<uint64_t> temp_counter{0};

// Writes what the snapshot holds at one path into the live view.
class LiveWriter {
public:
    LiveWriter(int root, const OverlayXattrs& xattrs) : root_(root), xattrs_(xattrs) {}

    // 0, -ENOENT/-ENOTDIR when the parent is not there, or -errno.
    int remove(const std::string& path)
    {
        auto [parent, name] = split(path);
        UniqueFd dir;
        if (int r = open_parent(parent, &dir); r < 0)
            return r;
        return remove_tree_at(dir.get(), name.c_str());
    }

    // Makes PATH the snapshot's object SRC: replaced whole unless it is a
    // directory that only needs its metadata (REPLACE false).
    int restore(const std::string& path, const ViewEntry& src, bool replace)
    {
        auto [parent, name] = split(path);
        UniqueFd dir;
        if (int r = open_parent(parent, &dir); r < 0)
            return r;
        if (!replace)
            return set_metadata(dir.get(), name, src);
        if (S_ISDIR(src.st.st_mode)) {
            if (int r = remove_tree_at(dir.get(), name.c_str()); r < 0)
                return r;
            if (::mkdirat(dir.get(), name.c_str(), 0700) != 0)
                return -errno;
            return set_metadata(dir.get(), name, src);
        }
        // Built under a temp name and renamed over: no reader ever sees a
        // half-written file at PATH.
        std::string tmp = fmt::format(".layerd-undo.{}.{}", ::getpid(), temp_counter.fetch_add(1));
        int r = make_object(dir.get(), tmp, src);
        if (r == 0)
            r = set_metadata(dir.get(), tmp, src);
        if (r == 0) {
            // A directory in the way goes first: rename cannot replace it.
            struct stat st;
            if (stat_at(dir.get(), name.c_str(), &st) == 0 && S_ISDIR(st.st_mode))
                r = remove_tree_at(dir.get(), name.c_str());
        }
        if (r == 0 && ::renameat(dir.get(), tmp.c_str(), dir.get(), name.c_str()) != 0)
            r = -errno;
        if (r < 0)
            ::unlinkat(dir.get(), tmp.c_str(), 0);
        return r;
    }

    // Times of a directory whose entries were changed above.
    int restore_times(const std::string& path, const ViewEntry& src)
    {
        if (path == "/")
            return set_times(root_, ".", src.st);
        auto [parent, name] = split(path);
        UniqueFd dir;
        if (int r = open_parent(parent, &dir); r < 0)
            return r;
        return set_times(dir.get(), name, src.st);
    }

private:
    int open_parent(const std::string& parent, UniqueFd* out)
    {
        int fd = open_beneath(root_, parent.c_str(), O_PATH | O_DIRECTORY);
        if (fd < 0)
            return fd;
        out->reset(fd);
        return 0;
    }

    static int make_object(int dir, const std::string& name, const ViewEntry& src)
    {
        const struct stat& st = src.st;
        if (S_ISLNK(st.st_mode))
            return ::symlinkat(src.symlink_target.c_str(), dir, name.c_str()) == 0 ? 0 : -errno;
        if (!S_ISREG(st.st_mode))
            return ::mknodat(dir, name.c_str(), st.st_mode & (S_IFMT | 0700), st.st_rdev) == 0 ? 0 : -errno;
        int in = reopen_fd(src.fd(), O_RDONLY);
        if (in < 0)
            return in;
        UniqueFd from(in);
        int fd = ::openat(dir, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0)
            return -errno;
        UniqueFd to(fd);
        if (int r = copy_file_data(from.get(), to.get(), st.st_size); r < 0)
            return r;
        return ::fsync(to.get()) == 0 ? 0 : -errno;
    }

    // Owner, mode, xattrs (exactly the snapshot's, the overlay's own never
    // touched) and times of DIR/NAME, from SRC.
    int set_metadata(int dir, const std::string& name, const ViewEntry& src)
    {
        const struct stat& st = src.st;
        if (::fchownat(dir, name.c_str(), st.st_uid, st.st_gid, AT_SYMLINK_NOFOLLOW) != 0)
            return -errno;
        if (!S_ISLNK(st.st_mode)) {
            // After the chown, which clears set-id bits.
            if (::fchmodat(dir, name.c_str(), st.st_mode & 07777, 0) != 0)
                return -errno;
            if (int r = set_xattrs(dir, name, src); r < 0)
                return r;
        }
        return set_times(dir, name, st);
    }

    int set_xattrs(int dir, const std::string& name, const ViewEntry& src)
    {
        XattrList want;
        if (int r = view_xattrs(src, xattrs_, &want); r < 0)
            return r;
        int fd = open_beneath(dir, name.c_str(), O_PATH);
        if (fd < 0)
            return fd;
        UniqueFd obj(fd);
        ProcFdPath proc(obj.get());
        std::vector<char> names(4096);
        ssize_t n;
        while ((n = ::listxattr(proc.c_str(), names.data(), names.size())) < 0 && errno == ERANGE)
            names.resize(names.size() * 2);
        if (n < 0)
            return errno == ENOTSUP ? 0 : -errno;
        for (ssize_t i = 0; i < n; i += static_cast<ssize_t>(std::strlen(names.data() + i)) + 1) {
            std::string_view have(names.data() + i);
            bool wanted = std::any_of(want.begin(), want.end(), [&](const auto& x) { return x.first == have; });
            if (!wanted && ::removexattr(proc.c_str(), names.data() + i) != 0 && errno != ENODATA)
                return -errno;
        }
        for (const auto& [key, value] : want)
            if (::setxattr(proc.c_str(), key.c_str(), value.data(), value.size(), 0) != 0)
                return -errno;
        return 0;
    }

    static int set_times(int dir, const std::string& name, const struct stat& st)
    {
        const struct timespec times[2] = {st.st_atim, st.st_mtim};
        return ::utimensat(dir, name.c_str(), times, AT_SYMLINK_NOFOLLOW) == 0 ? 0 : -errno;
    }

    int root_;
    const OverlayXattrs& xattrs_;
};

} // namespace

void MountedStack::undo_change(uint32_t number, const std::vector<std::string>& paths)
try {
    require_upper();
    if (number == 0)
        invalid("snapshot 0 is the live view itself: name a snapshot to restore from");
    if (paths.empty())
        invalid("name at least one path to restore");
    std::vector<std::string> wanted;
    wanted.reserve(paths.size());
    for (const std::string& p : paths)
        wanted.push_back(normalized(p));

    // What differs, oldest ancestor first. The ancestors of a wanted path
    // that the live view lacks, or has as another type, are recreated too
    // (as directories only: their other entries are not asked for).
    struct Change {
        std::string path;
        unsigned status;
    };
    std::vector<Change> changes;
    diff_until(number, 0, [&](const DiffEntry& e) {
        bool take = std::any_of(wanted.begin(), wanted.end(), [&](const std::string& w) {
            if (at_or_below(e.path, w))
                return true;
            return at_or_below(w, e.path) && (e.status & (DiffEntry::deleted | DiffEntry::type));
        });
        if (take)
            changes.push_back({e.path, e.status});
        return 0;
    });
    if (changes.empty())
        return;

    Views views = open_views(number, number);
    OverlayXattrs xattrs(config_.xattr_format);
    UniqueFd root = open_dir_or_fail(config_.mountpoint, O_PATH);
    LiveWriter live(root.get(), xattrs);
    std::string failures;
    auto fail = [&](const std::string& path, int err) {
        failures += fmt::format("{}{}: {}", failures.empty() ? "" : "; ", path, std::strerror(-err));
    };
    std::set<std::string, decltype(&path_less)> touched_dirs(&path_less);
    for (const Change& c : changes) {
        touched_dirs.insert(c.path.substr(0, std::max<size_t>(c.path.rfind('/'), 1)));
        if (c.status & DiffEntry::created) {
            // Only in the live view. Below a directory removed or replaced
            // just before, it is gone already.
            if (int r = live.remove(c.path); r < 0 && r != -ENOENT && r != -ENOTDIR)
                fail(c.path, r);
            continue;
        }
        ViewEntry src;
        if (int r = resolve_path(views.a, c.path, xattrs, &src); r < 0) {
            fail(c.path, r);
            continue;
        }
        // Metadata alone is changed in place: the file keeps its identity.
        bool replace = c.status & (DiffEntry::deleted | DiffEntry::type | DiffEntry::content);
        if (int r = live.restore(c.path, src, replace); r < 0)
            fail(c.path, r);
    }
    // Changing entries moved their directories' times: put them back.
    for (auto it = touched_dirs.rbegin(); it != touched_dirs.rend(); ++it) {
        ViewEntry src;
        if (resolve_path(views.a, *it, xattrs, &src) == 0 && src.is_dir())
            if (int r = live.restore_times(*it, src); r < 0 && r != -ENOENT)
                fail(*it, r);
    }
    if (!failures.empty())
        throw SnapshotError(SnapshotError::Kind::Io,
                            fmt::format("undo-change from snapshot {} of {}: {}", number, config_.name, failures));
} catch (const StoreError& e) {
    fail_store(config_.name, e);
}

} // namespace layerd
