// SPDX-License-Identifier: LGPL-2.1-or-later
#include "layer_view.hpp"

#include "resolve.hpp"

#include <fcntl.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <memory>
#include <unordered_set>

namespace layerd {

namespace {

// The state of one name's lookup across the layers: the kernel's
// ovl_lookup_data, minus metacopy.
struct Lookup {
    // What the next layer is asked for: a single name in the parent's layer
    // dir, or (after an absolute redirect) "/a/b" from the layer's root.
    std::string name;
    bool is_dir = false; // a directory was found: non-directories below are hidden
    bool stop = false;   // nothing below the current layer takes part
};

// Reads an xattr of any size into *out: 0, -ENODATA when absent, or -errno.
int read_xattr_value(int fd, const char* name, std::string* out)
{
    ProcFdPath path(fd);
    for (;;) {
        ssize_t n = ::getxattr(path.c_str(), name, nullptr, 0);
        if (n < 0)
            return errno == ENOTSUP ? -ENODATA : -errno;
        out->resize(static_cast<size_t>(n));
        if (n == 0)
            return 0;
        ssize_t m = ::getxattr(path.c_str(), name, out->data(), out->size());
        if (m >= 0) {
            out->resize(static_cast<size_t>(m));
            return 0;
        }
        if (errno != ERANGE) // ERANGE: it grew meanwhile, ask again
            return errno == ENOTSUP ? -ENODATA : -errno;
    }
}

// The kernel's checks on a redirect (ovl_get_redirect_xattr): an absolute one
// is '/' followed by non-empty components, a relative one is a single name.
// A value with a NUL ends there, as the kernel reads it as a C string.
bool valid_redirect(std::string* value)
{
    if (auto nul = value->find('\0'); nul != std::string::npos)
        value->resize(nul);
    if (value->empty())
        return false;
    if ((*value)[0] != '/')
        return is_valid_name(*value);
    size_t pos = 1;
    for (;;) {
        size_t next = value->find('/', pos);
        std::string_view comp = std::string_view(*value).substr(pos, next == std::string::npos ? next : next - pos);
        if (!is_valid_name(comp))
            return false;
        if (next == std::string::npos)
            return true;
        pos = next + 1;
    }
}

// One component in one layer dir (the kernel's ovl_lookup_single). PRELEN
// and POST are what surrounds COMP in d.name when walking an absolute name.
// Sets *found (fd, identity) when this layer has an object that takes part.
int lookup_single(int base, const std::string& comp, size_t prelen, const std::string& post, bool bottom,
                  const OverlayXattrs& xattrs, Lookup& d, LayerObject* found, struct stat* st)
{
    bool last_element = post.empty();
    int fd = open_beneath(base, comp.c_str(), O_PATH);
    if (fd == -ENOENT || fd == -ENAMETOOLONG)
        return 0;
    if (fd < 0)
        return fd;
    UniqueFd obj(fd);
    if (int r = stat_fd(fd, st); r < 0)
        return r;
    if (is_whiteout(*st)) {
        d.stop = true;
        return 0;
    }
    if (!S_ISDIR(st->st_mode)) {
        d.stop = true;
        if (d.is_dir || !last_element)
            return 0; // hidden by the directory above, or no directory to walk
        found->fd = std::move(obj);
        return 0;
    }
    if (last_element)
        d.is_dir = true;
    found->fd = std::move(obj);
    if (bottom)
        return 0; // nothing below: the kernel reads no xattrs here
    if (is_opaque_dir(fd, xattrs)) {
        d.stop = true; // an absolute redirect further down the walk resets it
        return 0;
    }
    std::string redirect;
    int r = read_xattr_value(fd, xattrs.redirect.c_str(), &redirect);
    if (r == -ENODATA)
        return 0;
    if (r < 0)
        return r;
    if (!valid_redirect(&redirect))
        return -EINVAL;
    if (redirect[0] == '/') {
        // Layers below look up this absolute path from their root; an opaque
        // ancestor met on the way no longer stops them.
        d.stop = false;
        d.name = redirect + post;
    } else {
        d.name = d.name.substr(0, prelen) + redirect + post;
    }
    return 0;
}

// Looks d.name up in one layer (the kernel's ovl_lookup_layer): a single name
// in BASE, or an absolute path walked from BASE (then a layer root).
int lookup_layer(int base, bool bottom, const OverlayXattrs& xattrs, Lookup& d, LayerObject* found,
                 struct stat* st)
{
    if (d.name[0] != '/')
        return lookup_single(base, d.name, 0, std::string(), bottom, xattrs, d, found, st);

    // Counted from the end: a redirect met on the way rewrites the prefix.
    size_t rem = d.name.size() - 1;
    UniqueFd dir;
    int at = base;
    for (;;) {
        size_t start = d.name.size() - rem;
        size_t next = d.name.find('/', start);
        if (next == std::string::npos)
            next = d.name.size();
        std::string comp = d.name.substr(start, next - start);
        std::string post = d.name.substr(next);
        LayerObject obj;
        if (int r = lookup_single(at, comp, start, post, bottom, xattrs, d, &obj, st); r < 0)
            return r;
        if (!obj.fd)
            return 0; // a component is missing here: nothing in this layer
        if (post.empty()) {
            *found = std::move(obj);
            return 0;
        }
        dir = std::move(obj.fd);
        at = dir.get();
        rem -= comp.size() + 1;
    }
}

int read_symlink(int fd, const struct stat& st, std::string* out)
{
    size_t size = std::max<size_t>(static_cast<size_t>(st.st_size) + 1, 64);
    for (;;) {
        out->resize(size);
        ssize_t n = ::readlinkat(fd, "", out->data(), size);
        if (n < 0)
            return -errno;
        if (static_cast<size_t>(n) < size) {
            out->resize(static_cast<size_t>(n));
            return 0;
        }
        size *= 2;
    }
}

int walk_dir(const std::vector<int>& layers, const OverlayXattrs& xattrs, const ViewEntry& dir, std::string& path,
             const WalkCallback& callback)
{
    std::vector<std::string> names;
    if (int r = list_dir(dir, &names); r < 0)
        return r == -ENOENT ? 0 : r;
    for (const std::string& name : names) {
        ViewEntry child;
        int r = resolve_child(layers, dir, name, xattrs, &child);
        if (r == -ENOENT)
            continue; // removed meanwhile from a live layer
        if (r < 0)
            return r;
        size_t len = path.size();
        path += '/';
        path += name;
        if (int c = callback(path, child); c != 0)
            return c;
        if (child.is_dir())
            if (int c = walk_dir(layers, xattrs, child, path, callback); c != 0)
                return c;
        path.resize(len);
    }
    return 0;
}

} // namespace

int view_root(const std::vector<int>& layers, ViewEntry* out)
{
    if (layers.empty())
        return -EINVAL;
    out->objects.clear();
    out->symlink_target.clear();
    for (size_t i = 0; i < layers.size(); ++i) {
        int fd = ::fcntl(layers[i], F_DUPFD_CLOEXEC, 3);
        if (fd < 0)
            return -errno;
        LayerObject obj;
        obj.fd = UniqueFd(fd);
        struct stat st;
        if (int r = stat_fd(fd, &st); r < 0)
            return r;
        if (!S_ISDIR(st.st_mode))
            return -ENOTDIR;
        if (i == 0)
            out->st = st;
        obj.layer = static_cast<int>(i);
        obj.dev = st.st_dev;
        obj.ino = st.st_ino;
        out->objects.push_back(std::move(obj));
    }
    return 0;
}

int resolve_child(const std::vector<int>& layers, const ViewEntry& dir, std::string_view name,
                  const OverlayXattrs& xattrs, ViewEntry* out)
{
    if (!dir.is_dir())
        return -ENOTDIR;
    if (name.size() > NAME_MAX)
        return -ENAMETOOLONG;
    if (!is_valid_name(name))
        return -EINVAL;

    const int bottom = static_cast<int>(layers.size()) - 1;
    Lookup d;
    d.name = name;
    std::vector<LayerObject> found;
    struct stat top {};

    auto visit = [&](int layer, int base, bool parent_translated) -> int {
        // A redirect found in this layer renames the object for the layers
        // below only: this one was found under the name asked for.
        bool translated = parent_translated || d.name != name;
        LayerObject obj;
        struct stat st;
        if (int r = lookup_layer(base, layer == bottom, xattrs, d, &obj, &st); r < 0)
            return r;
        if (!obj.fd)
            return 0;
        obj.layer = layer;
        obj.dev = st.st_dev;
        obj.ino = st.st_ino;
        obj.translated = translated;
        if (found.empty())
            top = st;
        found.push_back(std::move(obj));
        return 0;
    };

    // The parent's layer dirs first; after an absolute redirect, the roots of
    // the layers below the one that had it (the kernel switches to the root
    // dentry's lower stack).
    int from_root = -1;
    for (const LayerObject& p : dir.objects) {
        if (d.stop)
            break;
        if (int r = visit(p.layer, p.fd.get(), p.translated); r < 0)
            return r;
        if (!d.stop && d.name[0] == '/') {
            from_root = p.layer + 1;
            break;
        }
    }
    if (from_root >= 0)
        for (int layer = from_root; layer <= bottom && !d.stop; ++layer)
            if (int r = visit(layer, layers[static_cast<size_t>(layer)], true); r < 0)
                return r;

    if (found.empty())
        return -ENOENT;
    out->st = top;
    out->objects = std::move(found);
    out->symlink_target.clear();
    if (S_ISLNK(top.st_mode))
        if (int r = read_symlink(out->fd(), top, &out->symlink_target); r < 0)
            return r;
    return 0;
}

int resolve_path(const std::vector<int>& layers, std::string_view path, const OverlayXattrs& xattrs,
                 ViewEntry* out)
{
    ViewEntry cur;
    if (int r = view_root(layers, &cur); r < 0)
        return r;
    size_t pos = 0;
    for (;;) {
        while (pos < path.size() && path[pos] == '/')
            ++pos;
        if (pos == path.size())
            break;
        size_t end = path.find('/', pos);
        if (end == std::string_view::npos)
            end = path.size();
        if (!cur.is_dir())
            return -ENOTDIR;
        ViewEntry next;
        if (int r = resolve_child(layers, cur, path.substr(pos, end - pos), xattrs, &next); r < 0)
            return r;
        cur = std::move(next);
        pos = end;
    }
    *out = std::move(cur);
    return 0;
}

int read_layer_dir(int dir_fd, std::vector<LayerDirEntry>* out)
{
    out->clear();
    int fd = open_beneath(dir_fd, ".", O_RDONLY | O_DIRECTORY);
    if (fd < 0)
        return fd;
    std::unique_ptr<DIR, int (*)(DIR*)> dir(::fdopendir(fd), ::closedir);
    if (!dir) {
        int err = -errno;
        UniqueFd owner(fd);
        return err;
    }
    for (;;) {
        errno = 0;
        struct dirent* de = ::readdir(dir.get());
        if (!de)
            return errno ? -errno : 0;
        const char* name = de->d_name;
        if (std::strcmp(name, ".") == 0 || std::strcmp(name, "..") == 0)
            continue;
        unsigned char type = de->d_type;
        if (type == DT_CHR || type == DT_UNKNOWN) {
            struct stat st;
            int r = stat_at(::dirfd(dir.get()), name, &st);
            if (r == -ENOENT)
                continue; // gone meanwhile
            if (r < 0)
                return r;
            type = is_whiteout(st) ? static_cast<unsigned char>(DT_WHT) : static_cast<unsigned char>(IFTODT(st.st_mode));
        }
        out->push_back({name, type});
    }
}

int list_dir(const ViewEntry& dir, std::vector<std::string>* names)
{
    names->clear();
    if (!dir.is_dir())
        return -ENOTDIR;
    std::vector<LayerDirEntry> raw;
    // Names seen in a higher layer, whiteouts included, mask lower ones.
    std::unordered_set<std::string> seen;
    bool merged = dir.objects.size() > 1;
    for (const LayerObject& obj : dir.objects) {
        if (int r = read_layer_dir(obj.fd.get(), &raw); r < 0)
            return r;
        for (LayerDirEntry& e : raw) {
            if (merged && !seen.insert(e.name).second)
                continue;
            if (e.type != DT_WHT)
                names->push_back(std::move(e.name));
        }
    }
    std::sort(names->begin(), names->end());
    return 0;
}

int walk_view(const std::vector<int>& layers, const OverlayXattrs& xattrs, const WalkCallback& callback)
{
    ViewEntry root;
    if (int r = view_root(layers, &root); r < 0)
        return r;
    std::string path;
    return walk_dir(layers, xattrs, root, path, callback);
}

int view_xattrs(const ViewEntry& entry, const OverlayXattrs& xattrs, XattrList* out)
{
    out->clear();
    if (entry.objects.empty())
        return -EINVAL;
    ProcFdPath path(entry.fd());
    std::string list;
    for (;;) {
        ssize_t n = ::listxattr(path.c_str(), nullptr, 0);
        if (n < 0)
            return errno == ENOTSUP ? 0 : -errno;
        list.resize(static_cast<size_t>(n));
        if (n == 0)
            return 0;
        ssize_t m = ::listxattr(path.c_str(), list.data(), list.size());
        if (m >= 0) {
            list.resize(static_cast<size_t>(m));
            break;
        }
        if (errno != ERANGE)
            return -errno;
    }
    for (size_t pos = 0; pos < list.size();) {
        std::string name(list.c_str() + pos);
        pos += name.size() + 1;
        if (name.empty() || xattrs.is_private(name))
            continue;
        std::string value;
        int r = read_xattr_value(entry.fd(), name.c_str(), &value);
        if (r == -ENODATA)
            continue; // removed meanwhile
        if (r < 0)
            return r;
        out->emplace_back(std::move(name), std::move(value));
    }
    std::sort(out->begin(), out->end());
    return 0;
}

bool path_less(std::string_view a, std::string_view b) noexcept
{
    size_t n = std::min(a.size(), b.size());
    for (size_t i = 0; i < n; ++i) {
        if (a[i] == b[i])
            continue;
        if (a[i] == '/')
            return true;
        if (b[i] == '/')
            return false;
        return static_cast<unsigned char>(a[i]) < static_cast<unsigned char>(b[i]);
    }
    return a.size() < b.size();
}

} // namespace layerd
