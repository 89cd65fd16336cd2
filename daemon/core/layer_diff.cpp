// SPDX-License-Identifier: LGPL-2.1-or-later
// How the diff stays small. A view differs from the other only through the
// layers it does not share. Walking down from the root, a directory present
// in both views is "settled" when its layer dirs in the shared layers are the
// same objects, in the same order, on both sides. Then a child name that none
// of its non-shared layer dirs holds (on either side) is looked up with the
// same state (same name, no stop, no redirect met) in the same shared layer
// dirs on both sides: it cannot differ, nor can anything below it. So the
// only candidates are the names its non-shared layer dirs hold, read raw
// (files, whiteouts, directories, opaque or not). Those layer dirs are the
// ones merged into the directory, wherever they sit in their layer (a redirect
// may have brought them from another path), so renames need no special case
// here. A directory that is not settled (it appears or disappears on one side,
// turns opaque, or its shared part is found through a different redirect) has
// its whole subtree compared from the merged listings; inside it, directories
// that are settled again go back to candidates.
#include "layer_diff.hpp"

#include "resolve.hpp"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace layerd {

namespace {

bool is_acl_xattr(std::string_view name)
{
    return name == "system.posix_acl_access" || name == "system.posix_acl_default";
}

// Reads up to SIZE bytes at OFFSET, fewer only at end of file.
ssize_t read_full(int fd, char* buf, size_t size, off_t offset)
{
    size_t done = 0;
    while (done < size) {
        ssize_t n = ::pread(fd, buf + done, size - done, offset + static_cast<off_t>(done));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            break;
        done += static_cast<size_t>(n);
    }
    return static_cast<ssize_t>(done);
}

// Byte comparison of two regular files of the same size.
int same_bytes(const ViewEntry& a, const ViewEntry& b, bool* same)
{
    int fa = reopen_fd(a.fd(), O_RDONLY);
    if (fa < 0)
        return fa;
    UniqueFd ua(fa);
    int fb = reopen_fd(b.fd(), O_RDONLY);
    if (fb < 0)
        return fb;
    UniqueFd ub(fb);
    constexpr size_t chunk = 64 * 1024;
    std::vector<char> buf(2 * chunk);
    char* ba = buf.data();
    char* bb = buf.data() + chunk;
    for (off_t off = 0;; off += static_cast<off_t>(chunk)) {
        ssize_t na = read_full(fa, ba, chunk, off);
        if (na < 0)
            return static_cast<int>(na);
        ssize_t nb = read_full(fb, bb, chunk, off);
        if (nb < 0)
            return static_cast<int>(nb);
        if (na != nb || std::memcmp(ba, bb, static_cast<size_t>(na)) != 0) {
            *same = false;
            return 0;
        }
        if (static_cast<size_t>(na) < chunk) {
            *same = true;
            return 0;
        }
    }
}

int compare_xattrs(const ViewEntry& a, const ViewEntry& b, const OverlayXattrs& xattrs, unsigned* status)
{
    XattrList xa, xb;
    if (int r = view_xattrs(a, xattrs, &xa); r < 0)
        return r;
    if (int r = view_xattrs(b, xattrs, &xb); r < 0)
        return r;
    auto split = [](const XattrList& all, XattrList* acl, XattrList* other) {
        for (const auto& kv : all)
            (is_acl_xattr(kv.first) ? acl : other)->push_back(kv);
    };
    XattrList acl_a, other_a, acl_b, other_b;
    split(xa, &acl_a, &other_a);
    split(xb, &acl_b, &other_b);
    if (acl_a != acl_b)
        *status |= DiffEntry::acl;
    if (other_a != other_b)
        *status |= DiffEntry::xattrs;
    return 0;
}

class ViewDiff {
public:
    ViewDiff(const std::vector<int>& a_layers, const std::vector<int>& b_layers, size_t shared,
             const OverlayXattrs& xattrs, const DiffCallback& callback, DiffStats& stats)
        : a_{a_layers, static_cast<int>(a_layers.size() - shared)},
          b_{b_layers, static_cast<int>(b_layers.size() - shared)}, xattrs_(xattrs), callback_(callback),
          stats_(stats)
    {
    }

    int run()
    {
        ViewEntry ra, rb;
        if (int r = view_root(a_.layers, &ra); r < 0)
            return r;
        if (int r = view_root(b_.layers, &rb); r < 0)
            return r;
        if (!settled(ra, rb))
            return -EINVAL; // the shared layers are not the same directories
        std::string path;
        return by_candidates(path, ra, rb);
    }

private:
    struct Side {
        const std::vector<int>& layers;
        int own; // layers [0, own) are this view's own; the rest are shared
    };

    // A child on one side; an entry with no objects when it is not there.
    int child(const Side& side, const ViewEntry& dir, const std::string& name, ViewEntry* out)
    {
        if (!dir.is_dir())
            return 0;
        ++stats_.lookups;
        int r = resolve_child(side.layers, dir, name, xattrs_, out);
        return r == -ENOENT ? 0 : r;
    }

    // See the comment at the top of the file.
    bool settled(const ViewEntry& a, const ViewEntry& b) const
    {
        auto first_shared = [](const ViewEntry& e, const Side& side) {
            size_t i = 0;
            while (i < e.objects.size() && e.objects[i].layer < side.own)
                ++i;
            return i;
        };
        size_t ia = first_shared(a, a_);
        size_t ib = first_shared(b, b_);
        if (a.objects.size() - ia != b.objects.size() - ib)
            return false;
        for (; ia < a.objects.size(); ++ia, ++ib) {
            const LayerObject& oa = a.objects[ia];
            const LayerObject& ob = b.objects[ib];
            if (oa.layer - a_.own != ob.layer - b_.own || oa.dev != ob.dev || oa.ino != ob.ino)
                return false;
        }
        return true;
    }

    int emit(const std::string& path, unsigned status)
    {
        DiffEntry e;
        e.path = path;
        e.status = status;
        return callback_(e);
    }

    // PATH as A and B show it (either may be absent), then what is below.
    int visit(std::string& path, const ViewEntry& a, const ViewEntry& b)
    {
        bool in_a = !a.objects.empty();
        bool in_b = !b.objects.empty();
        if (!in_a && !in_b)
            return 0;
        unsigned status = 0;
        if (!in_a)
            status = DiffEntry::created;
        else if (!in_b)
            status = DiffEntry::deleted;
        else if (int r = compare_entries(a, b, xattrs_, &status); r < 0)
            return r;
        if (status != 0)
            if (int r = emit(path, status); r != 0)
                return r;
        static const ViewEntry none;
        if (a.is_dir() && b.is_dir())
            return settled(a, b) ? by_candidates(path, a, b) : by_listing(path, a, b);
        if (a.is_dir())
            return by_listing(path, a, none);
        if (b.is_dir())
            return by_listing(path, none, b);
        return 0;
    }

    // A settled directory: only names its non-shared layer dirs hold.
    int by_candidates(std::string& path, const ViewEntry& a, const ViewEntry& b)
    {
        std::vector<std::string> names;
        std::vector<LayerDirEntry> raw;
        for (auto [entry, side] : {std::pair{&a, &a_}, std::pair{&b, &b_}}) {
            for (const LayerObject& obj : entry->objects) {
                if (obj.layer >= side->own)
                    break;
                ++stats_.dirs_listed;
                int r = read_layer_dir(obj.fd.get(), &raw);
                if (r == -ENOENT)
                    continue; // a live layer dir removed meanwhile
                if (r < 0)
                    return r;
                for (LayerDirEntry& e : raw)
                    names.push_back(std::move(e.name));
            }
        }
        std::sort(names.begin(), names.end());
        names.erase(std::unique(names.begin(), names.end()), names.end());
        return children(path, a, b, names);
    }

    // A directory that appeared, went, or whose layers differ: everything.
    int by_listing(std::string& path, const ViewEntry& a, const ViewEntry& b)
    {
        ++stats_.expanded;
        std::vector<std::string> names, more;
        if (a.is_dir()) {
            ++stats_.dirs_listed;
            if (int r = list_dir(a, &names); r < 0)
                return r;
        }
        if (b.is_dir()) {
            ++stats_.dirs_listed;
            if (int r = list_dir(b, &more); r < 0)
                return r;
            if (names.empty()) {
                names = std::move(more);
            } else {
                std::vector<std::string> both;
                both.reserve(names.size() + more.size());
                std::set_union(std::make_move_iterator(names.begin()), std::make_move_iterator(names.end()),
                               std::make_move_iterator(more.begin()), std::make_move_iterator(more.end()),
                               std::back_inserter(both));
                names = std::move(both);
            }
        }
        return children(path, a, b, names);
    }

    int children(std::string& path, const ViewEntry& a, const ViewEntry& b, const std::vector<std::string>& names)
    {
        size_t len = path.size();
        for (const std::string& name : names) {
            ViewEntry ca, cb;
            if (int r = child(a_, a, name, &ca); r < 0)
                return r;
            if (int r = child(b_, b, name, &cb); r < 0)
                return r;
            path += '/';
            path += name;
            int r = visit(path, ca, cb);
            path.resize(len);
            if (r != 0)
                return r;
        }
        return 0;
    }

    Side a_, b_;
    const OverlayXattrs& xattrs_;
    const DiffCallback& callback_;
    DiffStats& stats_;
};

} // namespace

std::string DiffEntry::flags() const
{
    std::string s(6, '.');
    if (status & created)
        s[0] = '+';
    else if (status & deleted)
        s[0] = '-';
    else if (status & type)
        s[0] = 't';
    else if (status & content)
        s[0] = 'c';
    if (status & permissions)
        s[1] = 'p';
    if (status & owner)
        s[2] = 'u';
    if (status & group)
        s[3] = 'g';
    if (status & xattrs)
        s[4] = 'x';
    if (status & acl)
        s[5] = 'a';
    return s;
}

int compare_entries(const ViewEntry& a, const ViewEntry& b, const OverlayXattrs& xattrs, unsigned* status)
{
    *status = 0;
    // One inode: data and every attribute are the same.
    if (a.st.st_dev == b.st.st_dev && a.st.st_ino == b.st.st_ino)
        return 0;
    mode_t ta = a.st.st_mode & S_IFMT;
    if (ta != (b.st.st_mode & S_IFMT)) {
        *status |= DiffEntry::type | DiffEntry::content;
    } else if (S_ISREG(ta)) {
        bool same = a.st.st_size == b.st.st_size;
        if (same)
            if (int r = same_bytes(a, b, &same); r < 0)
                return r;
        if (!same)
            *status |= DiffEntry::content;
    } else if (S_ISLNK(ta)) {
        if (a.symlink_target != b.symlink_target)
            *status |= DiffEntry::content;
    } else if (S_ISCHR(ta) || S_ISBLK(ta)) {
        if (a.st.st_rdev != b.st.st_rdev)
            *status |= DiffEntry::content;
    }
    if ((a.st.st_mode & 07777) != (b.st.st_mode & 07777))
        *status |= DiffEntry::permissions;
    if (a.st.st_uid != b.st.st_uid)
        *status |= DiffEntry::owner;
    if (a.st.st_gid != b.st.st_gid)
        *status |= DiffEntry::group;
    return compare_xattrs(a, b, xattrs, status);
}

int diff_views(const std::vector<int>& a_layers, const std::vector<int>& b_layers, size_t shared_suffix,
               const OverlayXattrs& xattrs, const DiffCallback& callback, DiffStats* stats)
{
    if (a_layers.empty() || b_layers.empty() || shared_suffix > a_layers.size() || shared_suffix > b_layers.size())
        return -EINVAL;
    DiffStats local;
    ViewDiff diff(a_layers, b_layers, shared_suffix, xattrs, callback, stats ? *stats : local);
    return diff.run();
}

} // namespace layerd
