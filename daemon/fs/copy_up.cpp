// SPDX-License-Identifier: LGPL-2.1-or-later
// Copy-up: bringing a node's object into the upper layer. The copy is built
// in work/ (same filesystem as the upper) and renamed into place, so a crash
// leaves either the old view or the complete copy, never half a file.
#include "overlay.hpp"

#include "copy_data.hpp"
#include "remove_tree.hpp"
#include "resolve.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <fmt/format.h>

namespace layerd::fs {

std::string Overlay::temp_name()
{
    return fmt::format("#lw{:x}", temp_counter_.fetch_add(1, std::memory_order_relaxed));
}

int Overlay::sync_file(int fd) const
{
    if (layers_.is_volatile)
        return 0;
    return ::fsync(fd) == 0 ? 0 : -errno;
}

int Overlay::upper_dir(const std::shared_ptr<Node>& dir, std::shared_ptr<const Stack>* stack)
{
    if (int r = copy_up(dir); r < 0)
        return r;
    *stack = dir->stack();
    return 0;
}

namespace {

// Sets timestamps on the object an fd (O_PATH allowed, symlinks included) names.
int set_times(int fd, const struct timespec times[2])
{
    return ::utimensat(fd, "", times, AT_EMPTY_PATH) == 0 ? 0 : -errno;
}

// Builds a copy of `src` (stat `st`) as work/tmp; returns an O_PATH fd of it.
int build_copy(int work, const char* tmp, int src, const struct stat& st, bool with_data, bool durable)
{
    int r = 0;
    switch (st.st_mode & S_IFMT) {
    case S_IFDIR:
        if (::mkdirat(work, tmp, 0700) != 0)
            return -errno;
        break;
    case S_IFREG: {
        int out = open_beneath(work, tmp, O_CREAT | O_EXCL | O_WRONLY, 0600);
        if (out < 0)
            return out;
        UniqueFd outfd(out);
        if (with_data && st.st_size > 0) {
            int in = reopen_fd(src, O_RDONLY);
            if (in < 0)
                return in;
            UniqueFd infd(in);
            if ((r = copy_file_data(in, out, st.st_size)) < 0)
                return r;
        }
        // Data durable before the rename makes it visible: otherwise a crash
        // could leave an empty upper file masking good lower data.
        if (durable && ::fsync(out) != 0)
            return -errno;
        break;
    }
    case S_IFLNK: {
        char target[PATH_MAX + 1];
        ssize_t n = ::readlinkat(src, "", target, PATH_MAX);
        if (n < 0)
            return -errno;
        target[n] = '\0';
        if (::symlinkat(target, work, tmp) != 0)
            return -errno;
        break;
    }
    default:
        if (::mknodat(work, tmp, st.st_mode & (S_IFMT | 07777), st.st_rdev) != 0)
            return -errno;
        break;
    }
    return open_beneath(work, tmp, O_PATH);
}

} // namespace

int Overlay::build_copy_of(const Node& node, const Stack& stack, bool with_data, const std::string& tmp,
                           UniqueFd* copy, struct stat* st)
{
    FdLease src = fd_of(stack.top());
    if (!src)
        return src.error();
    if (int r = stat_fd(src.get(), st); r < 0)
        return r;
    int work = layers_.work.get();
    int fd = build_copy(work, tmp.c_str(), src.get(), *st, with_data, !layers_.is_volatile);
    if (fd < 0)
        return fd;
    copy->reset(fd);

    // Metadata: xattrs (never the overlay's own), origin inode number,
    // owner, then mode (chown clears set-id bits), then times last.
    int r = copy_xattrs(src.get(), fd, [this](std::string_view n) { return !xattrs_.is_private(n); });
    if (r < 0)
        return r;
    if (!S_ISDIR(st->st_mode)) {
        r = write_xattr(fd, xattrs_.origin_ino, std::to_string(node.st_ino));
        if (r < 0 && !S_ISLNK(st->st_mode)) // user.* xattrs do not exist on symlinks
            return r;
    }
    if (::fchownat(fd, "", st->st_uid, st->st_gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0)
        return -errno;
    if (!S_ISLNK(st->st_mode) && ::chmod(ProcFdPath(fd).c_str(), st->st_mode & 07777) != 0)
        return -errno;
    const struct timespec times[2] = {st->st_atim, st->st_mtim};
    return set_times(fd, times);
}

std::shared_ptr<const View> Overlay::view_with_upper(const std::shared_ptr<const View>& old,
                                                     const std::shared_ptr<const View>& current)
{
    const std::shared_ptr<Layer>& upper = current->layers.front();
    if (old->index_of(*upper) < old->layers.size())
        return old;
    auto own = std::make_shared<View>(*old); // same generation: still detached
    own->layers.insert(own->layers.begin(), upper);
    return own;
}

void Overlay::publish_copy(Node& node, const Stack& old, const std::shared_ptr<const View>& view, UniqueFd copy,
                           const struct stat& ust, bool orphan, std::string lower_path)
{
    const Layer* upper = view->upper();
    auto next = std::make_shared<Stack>();
    // An orphan stays in the view it came from: it never joins another. But
    // its copy lives in the current upper, which a later rollback may drop
    // from every current view: its own view keeps that layer alive.
    next->view = orphan ? view_with_upper(old.view, view) : view;
    next->entries.reserve(S_ISDIR(ust.st_mode) ? old.entries.size() + 1 : 1);
    Backing up{upper, ust.st_dev, ust.st_ino, std::make_shared<BackingObject>(fds_, *upper, ust.st_dev, ust.st_ino)};
    if (orphan)
        fds_.adopt_pinned(*up.object, copy.release()); // no name to find it again by
    else
        fds_.adopt(*up.object, copy.release());
    next->entries.push_back(std::move(up));
    if (S_ISDIR(ust.st_mode)) {
        // An empty upper dir that merges with the lower ones below it.
        next->entries.insert(next->entries.end(), old.entries.begin(), old.entries.end());
        next->lower_path = std::move(lower_path);
    }
    if (!orphan)
        nodes_.rekey(node, NodeKey{ust.st_dev, ust.st_ino, 0, view->generation});
    node.set_stack(std::move(next));
}

int Overlay::copy_up(const std::shared_ptr<Node>& node, bool with_data)
{
    // Callers hold changing(): the view cannot be swapped meanwhile.
    std::shared_ptr<const View> view = current_view();
    if (!view->upper())
        return -EROFS;
    std::shared_ptr<const Stack> first = node->stack();
    if (first->in_upper())
        return 0;
    int work = layers_.work.get();

    // Deleted from the view while open, or left behind by a rollback (its
    // view was replaced), with its data in a frozen layer: a write goes to a
    // copy with no name, which lives as long as it is open, and never into
    // the current view.
    if (node->unlinked.load() || first->view->generation != view->generation) {
        if (S_ISDIR(node->type))
            return -EROFS; // a directory of an old view takes no new entries
        std::lock_guard copy_lock(locks_.copy_up(*node));
        std::shared_ptr<const Stack> stack = node->stack();
        if (stack->in_upper())
            return 0;
        std::string tmp = temp_name();
        UniqueFd copy;
        struct stat st;
        int r = build_copy_of(*node, *stack, with_data, tmp, &copy, &st);
        remove_tree_at(work, tmp.c_str());
        if (r < 0)
            return r;
        struct stat ust;
        if ((r = stat_fd(copy.get(), &ust)) < 0)
            return r;
        publish_copy(*node, *stack, view, std::move(copy), ust, true, stack->lower_path);
        return 0;
    }

    for (;;) {
        std::shared_ptr<Node> parent = node->parent();
        std::string name = node->name();
        if (!parent)
            return -EIO; // only the root has none, and the root is always up
        // Parents first, each under its own locks, none held here.
        if (int r = copy_up(parent); r < 0)
            return r;

        std::lock_guard dir_lock(locks_.dir(*parent));
        if (node->parent() != parent || node->name() != name)
            continue; // renamed meanwhile: its new parent may not be up yet
        std::lock_guard copy_lock(locks_.copy_up(*node));
        std::shared_ptr<const Stack> stack = node->stack();
        if (stack->in_upper())
            return 0;
        std::shared_ptr<const Stack> pstack = parent->stack();
        FdLease parent_fd = fd_of(pstack->top());
        if (!parent_fd)
            return parent_fd.error();
        int pfd = parent_fd.get();

        std::string tmp = temp_name();
        auto discard = [&](int err) {
            remove_tree_at(work, tmp.c_str());
            return err;
        };
        UniqueFd copy;
        struct stat st;
        if (int r = build_copy_of(*node, *stack, with_data, tmp, &copy, &st); r < 0)
            return discard(r);

        // A copy-up changes no directory in the view: keep the parent's times
        // (the new entry would otherwise bump its mtime), as the kernel does.
        struct stat pst;
        if (int r = stat_fd(pfd, &pst); r < 0)
            return discard(r);
        if (::renameat2(work, tmp.c_str(), pfd, name.c_str(), RENAME_NOREPLACE) != 0)
            return discard(-errno);
        const struct timespec ptimes[2] = {pst.st_atim, pst.st_mtim};
        set_times(pfd, ptimes);

        struct stat ust;
        if (int r = stat_fd(copy.get(), &ust); r < 0)
            return r;
        // Below the upper, the dir is where its parent is, under its name
        // (it was not renamed in this upper yet): what a later rename's
        // redirect must name, even if the layers below redirect it further.
        std::string lower = pstack->lower_path.empty() ? name : pstack->lower_path + "/" + name;
        publish_copy(*node, *stack, view, std::move(copy), ust, false, std::move(lower));
        return 0;
    }
}

} // namespace layerd::fs
