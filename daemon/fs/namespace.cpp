// SPDX-License-Identifier: LGPL-2.1-or-later
// Namespace changes: create, mkdir, mknod, symlink, link, unlink, rmdir, rename.
// All of them happen in the upper layer under the parent's directory lock; each
// step on disk is one atomic rename, so a crash never shows a half state.
#include "overlay.hpp"

#include "remove_tree.hpp"
#include "resolve.hpp"

#include <linux/fs.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <mutex>
#include <optional>

namespace layerd::fs {

struct Overlay::NewObject {
    mode_t mode = 0;              // type and permission bits
    dev_t rdev = 0;
    const char* target = nullptr; // symlink
    const Node* link_to = nullptr;
    int open_flags = -1;          // create(): the flags to open the new file with
    uid_t uid = 0;
    gid_t gid = 0;
};

int Overlay::make_object(const std::shared_ptr<Node>& parent, const char* name, const NewObject& obj,
                         UniqueFd* opened)
{
    if (read_only())
        return -EROFS;
    if (!is_valid_name(name))
        return -EINVAL;
    std::shared_ptr<const Stack> pstack;
    if (int r = upper_dir(parent, &pstack); r < 0)
        return r;
    std::lock_guard dir_lock(locks_.dir(*parent));
    pstack = parent->stack();
    FdLease parent_fd = fd_of(pstack->top());
    if (!parent_fd)
        return parent_fd.error();
    int pfd = parent_fd.get();

    struct stat cur;
    int r = stat_at(pfd, name, &cur);
    if (r == 0 && !is_whiteout(cur))
        return -EEXIST;
    if (r < 0 && r != -ENOENT)
        return r;
    bool over_whiteout = r == 0;

    struct stat pst;
    if ((r = stat_fd(pfd, &pst)) < 0)
        return r;
    uid_t uid = obj.uid;
    gid_t gid = obj.gid;
    mode_t perm = obj.mode & 07777;
    if (pst.st_mode & S_ISGID) { // BSD group semantics of a setgid dir
        gid = pst.st_gid;
        if (S_ISDIR(obj.mode))
            perm |= S_ISGID;
    }

    // Over a whiteout the object is built in work/ and renamed over it.
    int work = layers_.work.get();
    std::string tmp = over_whiteout ? temp_name() : std::string();
    int dfd = over_whiteout ? work : pfd;
    const char* dname = over_whiteout ? tmp.c_str() : name;
    auto discard = [&](int err) {
        if (over_whiteout)
            remove_tree_at(work, tmp.c_str());
        else
            ::unlinkat(pfd, name, S_ISDIR(obj.mode) ? AT_REMOVEDIR : 0);
        return err;
    };

    UniqueFd file;
    if (obj.link_to) {
        FdLease source = fd_of(obj.link_to->stack()->top());
        if (!source)
            return source.error();
        if (::linkat(AT_FDCWD, ProcFdPath(source.get()).c_str(), dfd, dname, AT_SYMLINK_FOLLOW) != 0)
            return -errno;
    } else if (S_ISREG(obj.mode) && obj.open_flags >= 0) {
        int flags = (obj.open_flags & ~(O_CREAT | O_EXCL | O_TRUNC | O_NOFOLLOW | O_DIRECT | O_NOCTTY)) | O_CREAT | O_EXCL;
        int fd = open_beneath(dfd, dname, flags, perm);
        if (fd < 0)
            return fd;
        file.reset(fd);
    } else if (S_ISDIR(obj.mode)) {
        if (::mkdirat(dfd, dname, perm) != 0)
            return -errno;
    } else if (S_ISLNK(obj.mode)) {
        if (::symlinkat(obj.target, dfd, dname) != 0)
            return -errno;
    } else if (::mknodat(dfd, dname, (obj.mode & S_IFMT) | perm, obj.rdev) != 0) {
        return -errno;
    }

    if (!obj.link_to && (uid != my_uid_ || gid != my_gid_)) {
        if (::fchownat(dfd, dname, uid, gid, AT_SYMLINK_NOFOLLOW) != 0)
            return discard(-errno);
        // chown cleared the set-id bits the caller asked for: put them back.
        if (!S_ISLNK(obj.mode) && (perm & (S_ISUID | S_ISGID)) && ::fchmodat(dfd, dname, perm, 0) != 0)
            return discard(-errno);
    }

    if (over_whiteout) {
        if (S_ISDIR(obj.mode)) {
            // A new dir where a lower one was deleted: opaque, so the old
            // contents stay hidden. Swapped with the whiteout in one step.
            int fd = open_beneath(work, tmp.c_str(), O_PATH | O_DIRECTORY);
            if (fd < 0)
                return discard(fd);
            UniqueFd dirfd(fd);
            if ((r = write_xattr(fd, xattrs_.opaque, "y")) < 0)
                return discard(r);
            if (::renameat2(work, tmp.c_str(), pfd, name, RENAME_EXCHANGE) != 0)
                return discard(-errno);
            remove_tree_at(work, tmp.c_str()); // now the whiteout
        } else if (::renameat(work, tmp.c_str(), pfd, name) != 0) {
            return discard(-errno);
        }
    }
    if (opened)
        *opened = std::move(file);
    return 0;
}

int Overlay::merged_dir_is_empty(const Stack& dir) const
{
    std::vector<DirEntry> entries;
    if (int r = list_merged(dir, &entries); r < 0)
        return r;
    return entries.size() <= 2 ? 0 : -ENOTEMPTY; // "." and ".."
}

// Replaces the directory NAME in the upper dir pfd by an empty opaque one,
// atomically, and removes the old one (which holds only whiteouts).
int Overlay::clear_upper_dir(int pfd, const char* name)
{
    int work = layers_.work.get();
    std::string tmp = temp_name();
    if (::mkdirat(work, tmp.c_str(), 0700) != 0)
        return -errno;
    int fd = open_beneath(work, tmp.c_str(), O_PATH | O_DIRECTORY);
    if (fd < 0) {
        remove_tree_at(work, tmp.c_str());
        return fd;
    }
    UniqueFd fresh(fd);
    int old = open_beneath(pfd, name, O_PATH | O_DIRECTORY);
    if (old < 0) {
        remove_tree_at(work, tmp.c_str());
        return old;
    }
    UniqueFd oldfd(old);
    struct stat st;
    if (stat_fd(old, &st) == 0) {
        ::fchownat(fd, "", st.st_uid, st.st_gid, AT_EMPTY_PATH);
        ::chmod(ProcFdPath(fd).c_str(), st.st_mode & 07777);
    }
    int r = write_xattr(fd, xattrs_.opaque, "y");
    if (r == 0 && ::renameat2(work, tmp.c_str(), pfd, name, RENAME_EXCHANGE) != 0)
        r = -errno;
    remove_tree_at(work, tmp.c_str());
    return r;
}

int Overlay::remove_entry(const std::shared_ptr<Node>& parent, const char* name, bool dir)
{
    if (read_only())
        return -EROFS;
    std::shared_ptr<const Stack> pstack;
    if (int r = upper_dir(parent, &pstack); r < 0)
        return r;
    std::lock_guard dir_lock(locks_.dir(*parent));
    pstack = parent->stack();
    FdLease parent_fd = fd_of(pstack->top());
    if (!parent_fd)
        return parent_fd.error();
    int pfd = parent_fd.get();

    std::shared_ptr<Stack> cstack;
    struct stat cst;
    if (int r = resolve_child(*pstack, name, &cstack, &cst); r < 0)
        return r;
    if (dir && !S_ISDIR(cst.st_mode))
        return -ENOTDIR;
    if (!dir && S_ISDIR(cst.st_mode))
        return -EISDIR;
    if (dir)
        if (int r = merged_dir_is_empty(*cstack); r < 0)
            return r;
    std::shared_ptr<Node> child = existing_node(parent, name, cstack, cst);

    int work = layers_.work.get();
    bool whiteout = in_lower(*pstack, name);
    if (!cstack->in_upper()) {
        if (int r = make_whiteout(pfd, name); r < 0)
            return r;
        child->unlinked = true;
        return 0;
    }
    std::string tmp = temp_name();
    // Gone from the view: what is left of it is the node's alone.
    auto removed = [&](int r) {
        note_removed(*child);
        return r;
    };
    if (whiteout) {
        // Swap the entry with a fresh whiteout in one step, then drop it.
        if (int r = make_whiteout(work, tmp.c_str()); r < 0)
            return r;
        if (::renameat2(work, tmp.c_str(), pfd, name, RENAME_EXCHANGE) != 0) {
            int err = -errno;
            ::unlinkat(work, tmp.c_str(), 0);
            return err;
        }
        return removed(remove_tree_at(work, tmp.c_str()));
    }
    if (::unlinkat(pfd, name, dir ? AT_REMOVEDIR : 0) == 0)
        return removed(0);
    if (!dir || errno != ENOTEMPTY)
        return -errno;
    // An upper-only dir that still holds whiteouts: move it out, then remove.
    if (::renameat(pfd, name, work, tmp.c_str()) != 0)
        return -errno;
    return removed(remove_tree_at(work, tmp.c_str()));
}

void Overlay::note_removed(Node& node)
{
    // A lower object keeps its names in its layer but is gone from the view.
    // An upper one is gone when its last link went; with links left (a hard
    // link elsewhere) it is still reachable. Either way, once gone, a later
    // copy-up (after a snapshot froze its layer) must make a nameless copy,
    // never put the object back under a name the view has given away.
    std::shared_ptr<const Stack> stack = node.stack();
    bool gone = !stack->in_upper();
    if (!gone) {
        FdLease fd = fd_of(stack->top());
        struct stat st;
        gone = !fd || stat_fd(fd.get(), &st) < 0 || st.st_nlink == 0 || S_ISDIR(st.st_mode);
    }
    if (gone)
        node.unlinked = true;
}

int Overlay::rename_entry(const std::shared_ptr<Node>& op, const char* name, const std::shared_ptr<Node>& np,
                          const char* newname, unsigned flags)
{
    if (read_only())
        return -EROFS;
    if (flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE))
        return -EINVAL;
    if (!is_valid_name(newname))
        return -EINVAL;
    std::shared_ptr<const Stack> ostack, nstack;
    if (int r = upper_dir(op, &ostack); r < 0)
        return r;
    if (int r = upper_dir(np, &nstack); r < 0)
        return r;

    NodeLocks::DirPair dir_locks(locks_, *op, *np);
    ostack = op->stack();
    nstack = np->stack();

    std::shared_ptr<Stack> sstack, dstack;
    struct stat sst, dst;
    if (int r = resolve_child(*ostack, name, &sstack, &sst); r < 0)
        return r;
    int rd = resolve_child(*nstack, newname, &dstack, &dst);
    if (rd < 0 && rd != -ENOENT)
        return rd;
    bool dst_exists = rd == 0;
    if ((flags & RENAME_NOREPLACE) && dst_exists)
        return -EEXIST;
    if ((flags & RENAME_EXCHANGE) && !dst_exists)
        return -ENOENT;

    std::shared_ptr<Node> src = existing_node(op, name, sstack, sst);
    std::shared_ptr<Node> target = dst_exists ? existing_node(np, newname, dstack, dst) : nullptr;
    if (target && target->key == src->key)
        return 0; // two names of one file: rename(2) does nothing
    if (dst_exists && !(flags & RENAME_EXCHANGE)) {
        if (S_ISDIR(sst.st_mode) && !S_ISDIR(dst.st_mode))
            return -ENOTDIR;
        if (!S_ISDIR(sst.st_mode) && S_ISDIR(dst.st_mode))
            return -EISDIR;
        if (S_ISDIR(dst.st_mode))
            if (int r = merged_dir_is_empty(*dstack); r < 0)
                return r;
    }

    // Renames happen in the upper layer: bring what moves there first. A
    // directory comes up alone (no data); its lower contents stay put and
    // follow it through a redirect.
    if (int r = copy_up(src); r < 0)
        return r;
    if (flags & RENAME_EXCHANGE)
        if (int r = copy_up(target); r < 0)
            return r;

    // Marks a moving upper dir so it shows the right contents at its new place.
    auto mark_dir = [&](const Node& n, const Stack& to_dir, const char* to_name) -> int {
        if (!n.is_dir())
            return 0;
        auto s = n.stack();
        FdLease fd = fd_of(s->top());
        if (!fd)
            return fd.error();
        if (s->has_lower())
            return write_xattr(fd.get(), xattrs_.redirect, "/" + s->lower_path);
        if (in_lower(to_dir, to_name))
            return write_xattr(fd.get(), xattrs_.opaque, "y");
        return 0;
    };
    if (int r = mark_dir(*src, *nstack, newname); r < 0)
        return r;
    if (flags & RENAME_EXCHANGE)
        if (int r = mark_dir(*target, *ostack, name); r < 0)
            return r;

    FdLease old_dir = fd_of(ostack->top());
    FdLease new_dir = fd_of(nstack->top());
    if (!old_dir || !new_dir)
        return old_dir ? new_dir.error() : old_dir.error();
    int ofd = old_dir.get();
    int nfd = new_dir.get();
    if (flags & RENAME_EXCHANGE) {
        if (::renameat2(ofd, name, nfd, newname, RENAME_EXCHANGE) != 0)
            return -errno;
    } else {
        struct stat ust;
        bool upper_whiteout = stat_at(nfd, newname, &ust) == 0 && is_whiteout(ust);
        bool leave_whiteout = in_lower(*ostack, name);
        auto do_rename = [&]() -> int {
            unsigned how = 0;
            if (upper_whiteout && (leave_whiteout || S_ISDIR(sst.st_mode)))
                how = RENAME_EXCHANGE; // the whiteout moves to the old name
            else if (leave_whiteout)
                how = RENAME_WHITEOUT;
            if (::renameat2(ofd, name, nfd, newname, how) != 0)
                return -errno;
            if (how == RENAME_EXCHANGE && !leave_whiteout)
                ::unlinkat(ofd, name, 0);
            return 0;
        };
        int r = do_rename();
        if (r == -ENOTEMPTY && dst_exists && S_ISDIR(dst.st_mode)) {
            // The target is empty in the view but its upper dir holds whiteouts.
            if ((r = clear_upper_dir(nfd, newname)) < 0)
                return r;
            r = do_rename();
        }
        if (r < 0)
            return r;
        if (target)
            note_removed(*target);
    }
    src->set_place(np, newname);
    if (flags & RENAME_EXCHANGE)
        target->set_place(op, name);
    return 0;
}

static uid_t caller_uid(fuse_req_t req) { return fuse_req_ctx(req)->uid; }
static gid_t caller_gid(fuse_req_t req) { return fuse_req_ctx(req)->gid; }

void Overlay::mknod(fuse_req_t req, fuse_ino_t parent_ino, const char* name, mode_t mode, dev_t rdev)
{
    auto parent = node(parent_ino);
    if (!parent)
        return (void)fuse_reply_err(req, ESTALE);
    auto change = changing();
    if (S_ISCHR(mode) && rdev == makedev(0, 0))
        return (void)fuse_reply_err(req, EPERM); // that is a whiteout
    NewObject obj{.mode = mode, .rdev = rdev, .uid = caller_uid(req), .gid = caller_gid(req)};
    if (int r = make_object(parent, name, obj, nullptr); r < 0)
        return (void)fuse_reply_err(req, -r);
    reply_entry(req, parent, name);
}

void Overlay::mkdir(fuse_req_t req, fuse_ino_t parent_ino, const char* name, mode_t mode)
{
    auto parent = node(parent_ino);
    if (!parent)
        return (void)fuse_reply_err(req, ESTALE);
    auto change = changing();
    NewObject obj{.mode = S_IFDIR | (mode & 07777), .uid = caller_uid(req), .gid = caller_gid(req)};
    if (int r = make_object(parent, name, obj, nullptr); r < 0)
        return (void)fuse_reply_err(req, -r);
    reply_entry(req, parent, name);
}

void Overlay::symlink(fuse_req_t req, const char* target, fuse_ino_t parent_ino, const char* name)
{
    auto parent = node(parent_ino);
    if (!parent)
        return (void)fuse_reply_err(req, ESTALE);
    auto change = changing();
    NewObject obj{.mode = S_IFLNK | 0777, .target = target, .uid = caller_uid(req), .gid = caller_gid(req)};
    if (int r = make_object(parent, name, obj, nullptr); r < 0)
        return (void)fuse_reply_err(req, -r);
    reply_entry(req, parent, name);
}

void Overlay::link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t new_parent, const char* new_name)
{
    auto n = node(ino);
    auto parent = node(new_parent);
    if (!n || !parent)
        return (void)fuse_reply_err(req, ESTALE);
    auto change = changing();
    if (int r = copy_up(n); r < 0)
        return (void)fuse_reply_err(req, -r);
    NewObject obj{.mode = n->type, .link_to = n.get()};
    if (int r = make_object(parent, new_name, obj, nullptr); r < 0)
        return (void)fuse_reply_err(req, -r);
    reply_entry(req, parent, new_name);
}

void Overlay::create(fuse_req_t req, fuse_ino_t parent_ino, const char* name, mode_t mode, fuse_file_info* fi)
{
    auto parent = node(parent_ino);
    if (!parent)
        return (void)fuse_reply_err(req, ESTALE);
    auto change = changing();
    int flags = open_flags_for(fi->flags);
    NewObject obj{.mode = S_IFREG | (mode & 07777), .open_flags = flags, .uid = caller_uid(req),
                  .gid = caller_gid(req)};
    UniqueFd fd;
    if (int r = make_object(parent, name, obj, &fd); r < 0)
        return (void)fuse_reply_err(req, -r);
    fuse_entry_param e {};
    if (int r = entry_for(parent, name, &e); r < 0)
        return (void)fuse_reply_err(req, -r);
    auto child = node(e.ino);
    auto fh = std::make_shared<FileHandle>();
    fh->node = child;
    fh->flags = flags;
    fh->epoch = child->epoch.load(std::memory_order_acquire);
    fh->on_upper = true;
    fh->freezes = freezes_.load(std::memory_order_acquire);
    fh->fd = std::move(fd);
    fi->fh = files_.add(std::move(fh));
    fi->keep_cache = 1;
    if (fuse_reply_create(req, &e, fi) != 0)
        files_.remove(fi->fh); // the kernel is gone: it will not release it
}

void Overlay::unlink(fuse_req_t req, fuse_ino_t parent_ino, const char* name)
{
    auto parent = node(parent_ino);
    if (!parent)
        return (void)fuse_reply_err(req, ESTALE);
    auto change = changing();
    fuse_reply_err(req, -remove_entry(parent, name, false));
}

void Overlay::rmdir(fuse_req_t req, fuse_ino_t parent_ino, const char* name)
{
    auto parent = node(parent_ino);
    if (!parent)
        return (void)fuse_reply_err(req, ESTALE);
    auto change = changing();
    fuse_reply_err(req, -remove_entry(parent, name, true));
}

void Overlay::rename(fuse_req_t req, fuse_ino_t parent_ino, const char* name, fuse_ino_t new_parent_ino,
                     const char* new_name, unsigned int flags)
{
    auto parent = node(parent_ino);
    auto new_parent = node(new_parent_ino);
    if (!parent || !new_parent)
        return (void)fuse_reply_err(req, ESTALE);
    auto change = changing();
    fuse_reply_err(req, -rename_entry(parent, name, new_parent, new_name, flags));
}

} // namespace layerd::fs
