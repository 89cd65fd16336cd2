// SPDX-License-Identifier: LGPL-2.1-or-later
// Directories: the merged listing of a directory's layers.
#include "overlay.hpp"

#include "resolve.hpp"

#include <dirent.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <unordered_set>

namespace layerd::fs {

int Overlay::list_merged(const Stack& dir, std::vector<DirEntry>* out, uint64_t* listed_at) const
{
    return gate_.read([&](uint64_t seq) {
        if (listed_at)
            *listed_at = seq;
        return list_merged_once(dir, out);
    });
}

int Overlay::list_merged_once(const Stack& dir, std::vector<DirEntry>* out) const
{
    out->clear();
    out->push_back({".", DT_DIR});
    out->push_back({"..", DT_DIR});
    // Names seen in a higher layer, whiteouts included: they mask lower ones.
    bool merged = dir.entries.size() > 1;
    std::unordered_set<std::string> seen;
    for (unsigned layer = 0; layer < dir.entries.size(); ++layer) {
        const Backing& b = dir.entries[layer];
        FdLease dirfd = fd_of(b);
        if (!dirfd && dir.gone_after_merge(layer, dirfd.error()))
            continue;
        if (!dirfd)
            return dirfd.error();
        int fd = open_beneath(dirfd.get(), ".", O_RDONLY | O_DIRECTORY);
        if (fd < 0)
            return fd;
        DIR* d = ::fdopendir(fd);
        if (!d) {
            int err = -errno;
            ::close(fd);
            return err;
        }
        errno = 0;
        while (struct dirent* de = ::readdir(d)) {
            const char* name = de->d_name;
            if (std::strcmp(name, ".") == 0 || std::strcmp(name, "..") == 0)
                continue;
            if (merged && !seen.emplace(name).second)
                continue;
            unsigned char type = de->d_type;
            if (type == DT_CHR || type == DT_UNKNOWN) {
                struct stat st;
                if (stat_at(fd, name, &st) < 0)
                    continue; // gone meanwhile
                if (is_whiteout(st))
                    continue;
                type = static_cast<unsigned char>(IFTODT(st.st_mode));
            }
            out->push_back({name, type, layer});
        }
        int err = errno;
        ::closedir(d);
        if (err != 0)
            return -err;
    }
    // Offsets are indexes into a listing, and the kernel may go on from an
    // offset of a listing it cached with another handle's listing. A merge
    // moves names between frozen layers, so their getdents order is not the
    // view's: listings of dirs with a frozen layer are sorted, and so the
    // same view always lists in the same order. A dir only in the upper
    // changes only through the kernel, which then drops what it cached.
    if (!dir.in_upper() || dir.has_lower())
        std::sort(out->begin() + 2, out->end(), [](const DirEntry& a, const DirEntry& b) { return a.name < b.name; });
    return 0;
}

void Overlay::opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi)
{
    auto n = node(ino);
    if (!n)
        return (void)fuse_reply_err(req, ESTALE);
    if (!n->is_dir())
        return (void)fuse_reply_err(req, ENOTDIR);
    auto dh = std::make_shared<DirHandle>();
    dh->node = n;
    fi->fh = dirs_.add(std::move(dh));
    // The kernel may keep listings: every change to a directory reaches the
    // overlay through the kernel, which then drops what it cached.
    fi->cache_readdir = 1;
    fi->keep_cache = 1;
    if (fuse_reply_open(req, fi) != 0)
        dirs_.remove(fi->fh);
}

void Overlay::readdir(fuse_req_t req, fuse_ino_t, size_t size, off_t off, fuse_file_info* fi, bool plus)
{
    auto dh = dirs_.get(fi->fh);
    if (!dh)
        return (void)fuse_reply_err(req, EBADF);
    std::lock_guard lock(dh->mutex);
    const std::shared_ptr<Node>& dir = dh->node;
    auto stack = dir->stack();
    if (off == 0 || dh->entries.empty()) {
        // Offset 0 is a fresh listing (rewinddir shows what changed).
        if (int r = list_merged(*stack, &dh->entries, &dh->listed_at); r < 0)
            return (void)fuse_reply_err(req, -r);
    }
    thread_local std::vector<char> buffer;
    buffer.resize(size);
    char* p = buffer.data();
    size_t rem = size;
    for (size_t i = static_cast<size_t>(off); i < dh->entries.size(); ++i) {
        const DirEntry& de = dh->entries[i];
        bool dot = de.name == "." || de.name == "..";
        size_t used;
        if (plus) {
            fuse_entry_param e {};
            if (dot) {
                e.attr.st_ino = dir->st_ino;
                e.attr.st_mode = S_IFDIR;
            } else {
                // Start below the read-only layers that did not list it.
                int r = entry_for(dir, de.name.c_str(), &e, de.layer, dh->listed_at);
                if (r == -ENOENT)
                    continue; // removed since the listing was made
                if (r < 0)
                    return (void)fuse_reply_err(req, -r);
            }
            used = fuse_add_direntry_plus(req, p, rem, de.name.c_str(), &e, static_cast<off_t>(i + 1));
            if (used > rem) {
                if (e.ino)
                    nodes_.forget(e.ino, 1); // not sent: the kernel never saw it
                break;
            }
        } else {
            struct stat st {};
            st.st_mode = static_cast<mode_t>(DTTOIF(de.d_type));
            st.st_ino = dir->st_ino;
            if (!dot) {
                std::shared_ptr<Stack> cstack;
                struct stat cst;
                if (resolve_child(*stack, de.name, &cstack, &cst, de.layer, dh->listed_at) < 0)
                    continue;
                st.st_ino = st_ino_of(*cstack, cst);
            }
            used = fuse_add_direntry(req, p, rem, de.name.c_str(), &st, static_cast<off_t>(i + 1));
            if (used > rem)
                break;
        }
        p += used;
        rem -= used;
    }
    fuse_reply_buf(req, buffer.data(), size - rem);
}

void Overlay::releasedir(fuse_req_t req, fuse_ino_t, fuse_file_info* fi)
{
    dirs_.remove(fi->fh);
    fuse_reply_err(req, 0);
}

void Overlay::fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info*)
{
    auto n = node(ino);
    if (!n)
        return (void)fuse_reply_err(req, ESTALE);
    auto stack = n->stack();
    if (!stack->in_upper())
        return (void)fuse_reply_err(req, 0); // lower layers never change
    FdLease dirfd = fd_of(stack->top());
    if (!dirfd)
        return (void)fuse_reply_err(req, -dirfd.error());
    int fd = reopen_fd(dirfd.get(), O_RDONLY | O_DIRECTORY);
    if (fd < 0)
        return (void)fuse_reply_err(req, -fd);
    int r = datasync ? ::fdatasync(fd) : ::fsync(fd);
    int err = r == 0 ? 0 : errno;
    ::close(fd);
    fuse_reply_err(req, err);
}

} // namespace layerd::fs
