// SPDX-License-Identifier: LGPL-2.1-or-later
// Resolving names across the layers, node identity and attributes.
#include "overlay.hpp"

#include "layer_view.hpp"
#include "resolve.hpp"

#include <sys/resource.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <climits>
#include <optional>
#include <cstring>

namespace layerd::fs {

namespace {

// How many layer fds may stay open: half the fd limit, the rest is for open
// files and directories and libfuse.
size_t fd_cache_capacity()
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
        return 4096;
    return std::max<size_t>(64, rl.rlim_cur / 2);
}

std::string join_path(const std::string& dir, std::string_view name)
{
    std::string p;
    p.reserve(dir.size() + 1 + name.size());
    if (!dir.empty()) {
        p = dir;
        p += '/';
    }
    p += name;
    return p;
}

} // namespace

int Overlay::open_backing(const Layer& layer, int dirfd, const char* path, Backing* out, struct stat* st) const
{
    int fd = open_beneath(dirfd, path, O_PATH);
    if (fd < 0)
        return fd;
    if (int r = stat_fd(fd, st); r < 0) {
        ::close(fd);
        return r;
    }
    out->layer = &layer;
    out->dev = st->st_dev;
    out->ino = st->st_ino;
    out->object = std::make_shared<BackingObject>(fds_, layer, st->st_dev, st->st_ino);
    fds_.adopt(*out->object, fd);
    return 0;
}

Overlay::Overlay(LayerSet layers, OverlayOptions options)
    : layers_(std::move(layers)), options_(options), xattrs_(options.xattr_format),
      fds_(fd_cache_capacity(), FdCache::handles_work(*layers_.layers.front())), my_uid_(geteuid()), my_gid_(getegid())
{
    auto view = std::make_shared<View>();
    view->layers = layers_.layers;
    view_ = view;
    auto stack = root_stack(view);
    if (!stack)
        throw LayerError(layers_.layers.front()->path + ": cannot open the layer's root");
    struct stat top;
    if (int r = stat_fd(fd_of(stack->top()).get(), &top); r < 0)
        throw LayerError(layers_.layers.front()->path + ": " + std::strerror(-r));
    auto root = std::make_shared<Node>(NodeTable::root_id, S_IFDIR, st_ino_of(*stack, top));
    root->key = NodeKey{stack->top().dev, stack->top().ino, 0, 0};
    root->set_stack(std::move(stack));
    nodes_.insert_root(std::move(root));
}

std::shared_ptr<Stack> Overlay::root_stack(const std::shared_ptr<const View>& view)
{
    // The root merges every layer's root directory (the kernel ignores opaque
    // and redirect xattrs on layer roots).
    auto stack = std::make_shared<Stack>();
    stack->view = view;
    for (const auto& layer : view->layers) {
        Backing b;
        struct stat st;
        if (open_backing(*layer, layer->root.get(), ".", &b, &st) < 0)
            return nullptr;
        stack->entries.push_back(std::move(b));
    }
    return stack;
}

int Overlay::resolve_child(const Stack& dir, std::string_view name, std::shared_ptr<Stack>* out,
                           struct stat* top_st, size_t first, uint64_t listed_at) const
{
    return gate_.read([&](uint64_t seq) {
        // A merge step since the listing may have moved NAME up.
        return resolve_child_once(dir, name, out, top_st, seq == listed_at ? first : 0);
    });
}

int Overlay::resolve_child_once(const Stack& dir, std::string_view name, std::shared_ptr<Stack>* out,
                                struct stat* top_st, size_t first) const
{
    if (name.size() > NAME_MAX)
        return -ENAMETOOLONG;
    if (!is_valid_name(name))
        return -EINVAL;
    char cname[NAME_MAX + 1];
    std::memcpy(cname, name.data(), name.size());
    cname[name.size()] = '\0';

    const View& view = *dir.view;
    auto child = std::make_shared<Stack>();
    child->view = dir.view;
    std::string redirect;      // a relative redirect: the name in the parent's lower dirs
    std::string abs_redirect;  // an absolute one: the path below each lower layer root
    unsigned abs_from = 0;     // layers at and past this index use abs_redirect
    bool absolute = false;
    bool stop = false;
    // Where the name is looked up in the view below the upper: what a
    // redirect written by a rename must name (the kernel's absolute
    // redirects are paths in that view, not in the bottom layer).
    std::optional<std::string> below_upper;

    // One candidate object; returns false when the merge ends here.
    auto visit = [&](const Layer& layer, int dirfd, const char* path) -> int {
        Backing b;
        struct stat st;
        int r = open_backing(layer, dirfd, path, &b, &st);
        if (r == -ENOENT || (r == -ENOTDIR && !child->entries.empty()))
            return 0;
        if (r < 0) {
            stop = true;
            return child->entries.empty() ? r : 0;
        }
        if (is_whiteout(st)) {
            stop = true;
            return 0;
        }
        if (child->entries.empty()) {
            *top_st = st;
        } else if (!S_ISDIR(st.st_mode)) {
            stop = true; // a non-directory below a directory is hidden by it
            return 0;
        }
        bool is_dir = S_ISDIR(st.st_mode);
        child->entries.push_back(b);
        if (!is_dir) {
            stop = true;
            return 0;
        }
        if (view.is_bottom(layer))
            return 0; // nothing below the bottom layer: no need for its xattrs
        FdLease fd = fd_of(b);
        if (!fd)
            return fd.error();
        if (is_opaque_dir(fd.get(), xattrs_)) {
            stop = true;
            return 0;
        }
        if (auto rd = read_xattr(fd.get(), xattrs_.redirect); rd && !rd->empty()) {
            if ((*rd)[0] == '/') {
                absolute = true;
                abs_redirect = rd->substr(rd->find_first_not_of('/') == std::string::npos ? rd->size()
                                                                                          : rd->find_first_not_of('/'));
                abs_from = static_cast<unsigned>(view.index_of(layer)) + 1;
            } else if (is_valid_name(*rd)) {
                redirect = *rd;
            }
        }
        return 0;
    };

    for (size_t i = 0; i < dir.entries.size(); ++i) {
        const Backing& d = dir.entries[i];
        if (stop || absolute)
            break;
        // Only read-only layers are skipped: the upper may have gained the
        // name since the listing that gave `first` was made.
        if (i < first && !d.layer->writable)
            continue;
        const char* path = redirect.empty() ? cname : redirect.c_str();
        if (!below_upper && !d.layer->writable)
            below_upper = join_path(dir.lower_path, path);
        FdLease dirfd = fd_of(d);
        if (!dirfd && dir.gone_after_merge(i, dirfd.error()))
            continue;
        if (!dirfd)
            return dirfd.error();
        if (int r = visit(*d.layer, dirfd.get(), path); r < 0)
            return r;
    }
    if (absolute && !stop && abs_from < view.layers.size()) {
        // An absolute redirect names a path in the view of the layers below,
        // which the kernel walks one component at a time (each may itself be
        // redirected, whited out or opaque): the core resolver does the same.
        std::vector<int> below;
        for (unsigned i = abs_from; i < view.layers.size(); ++i)
            below.push_back(view.layers[i]->root.get());
        ViewEntry lower;
        int r = resolve_path(below, abs_redirect, xattrs_, &lower);
        if (r < 0 && r != -ENOENT && r != -ENOTDIR)
            return r;
        if (r == 0 && lower.is_dir()) {
            for (LayerObject& o : lower.objects) {
                const Layer& layer = *view.layers[abs_from + static_cast<unsigned>(o.layer)];
                Backing b{&layer, o.dev, o.ino, std::make_shared<BackingObject>(fds_, layer, o.dev, o.ino)};
                fds_.adopt(*b.object, o.fd.release());
                child->entries.push_back(std::move(b));
            }
        }
    }
    if (child->entries.empty())
        return -ENOENT;
    if (S_ISDIR(top_st->st_mode))
        child->lower_path = below_upper ? *below_upper
                            : absolute  ? abs_redirect
                                        : join_path(dir.lower_path, redirect.empty() ? name : redirect);
    *out = std::move(child);
    return 0;
}

uint64_t Overlay::st_ino_of(const Stack& stack, const struct stat& top) const
{
    const Backing& t = stack.top();
    if (S_ISDIR(top.st_mode)) {
        // A directory is known by its topmost lower dir (the kernel's origin),
        // so its number does not change when it is copied up.
        for (const Backing& b : stack.entries)
            if (!b.layer->writable)
                return layers_.overlay_ino(*b.layer, b.ino);
        return layers_.overlay_ino(*t.layer, t.ino);
    }
    if (t.layer->writable) {
        // A copied-up object carries the number it had in its lower layer.
        FdLease fd = fd_of(t);
        if (auto v = fd ? read_xattr(fd.get(), xattrs_.origin_ino) : std::nullopt) {
            uint64_t ino = 0;
            auto [p, ec] = std::from_chars(v->data(), v->data() + v->size(), ino);
            if (ec == std::errc() && p == v->data() + v->size() && ino != 0)
                return ino;
        }
    }
    return layers_.overlay_ino(*t.layer, t.ino);
}

NodeKey Overlay::key_of(const Node* parent, std::string_view name, const Backing& top, const struct stat& st) const
{
    NodeKey key{top.dev, top.ino, 0, 0};
    if (!top.layer->writable && !S_ISDIR(st.st_mode) && st.st_nlink > 1 && parent) {
        uint64_t h = parent->id * 0x9E3779B97F4A7C15ull;
        for (char c : name)
            h = (h ^ static_cast<unsigned char>(c)) * 0x100000001B3ull;
        key.alias = h | 1;
    }
    return key;
}

std::shared_ptr<Node> Overlay::node_for(const std::shared_ptr<Node>& parent, std::string_view name,
                                        std::shared_ptr<Stack> stack, const struct stat& st)
{
    NodeKey key = key_of(parent.get(), name, stack->top(), st);
    key.generation = stack->view->generation;
    auto same = [&](const Node& n) { return n.stack()->top().object->same_object(*stack->top().object); };
    return nodes_.lookup(key, same, [&](uint64_t id) {
        auto n = std::make_shared<Node>(id, st.st_mode & S_IFMT, st_ino_of(*stack, st));
        n->set_stack(std::move(stack));
        n->set_place(parent, std::string(name));
        return n;
    });
}

std::shared_ptr<Node> Overlay::existing_node(const std::shared_ptr<Node>& parent, std::string_view name,
                                             std::shared_ptr<Stack> stack, const struct stat& st)
{
    NodeKey key = key_of(parent.get(), name, stack->top(), st);
    key.generation = stack->view->generation;
    if (auto n = nodes_.find(key); n && n->stack()->top().object->same_object(*stack->top().object))
        return n;
    // Not known to the kernel: a node of its own that the table never holds.
    auto n = std::make_shared<Node>(0, st.st_mode & S_IFMT, st_ino_of(*stack, st));
    n->key = key;
    n->set_stack(std::move(stack));
    n->set_place(parent, std::string(name));
    return n;
}

int Overlay::stat_node(const Node& node, const Stack& stack, struct stat* st) const
{
    FdLease fd = fd_of(stack.top());
    if (!fd)
        return fd.error();
    if (int r = stat_fd(fd.get(), st); r < 0)
        return r;
    st->st_ino = node.st_ino;
    if (node.is_dir() && stack.entries.size() > 1)
        st->st_nlink = 1; // as the kernel: a merged dir's link count is unknown
    if (node.unlinked.load(std::memory_order_relaxed))
        st->st_nlink = 0;
    return 0;
}

bool Overlay::in_lower(const Stack& dir, const char* name) const
{
    return gate_.read([&](uint64_t) { return in_lower_once(dir, name); });
}

bool Overlay::in_lower_once(const Stack& dir, const char* name) const
{
    for (size_t i = 0; i < dir.entries.size(); ++i) {
        const Backing& b = dir.entries[i];
        if (b.layer->writable)
            continue;
        FdLease fd = fd_of(b);
        if (!fd && dir.gone_after_merge(i, fd.error()))
            continue;
        if (!fd)
            return true; // unsure: keep a whiteout
        struct stat st;
        int r = stat_at(fd.get(), name, &st);
        if (r == -ENOENT)
            continue;
        return r < 0 || !is_whiteout(st); // unsure: keep a whiteout
    }
    return false;
}

int Overlay::entry_for(const std::shared_ptr<Node>& parent, const char* name, fuse_entry_param* e, size_t first,
                       uint64_t listed_at)
{
    std::shared_ptr<Stack> stack;
    struct stat st;
    uint64_t drops = drops_.load(std::memory_order_acquire);
    if (int r = resolve_child(*parent->stack(), name, &stack, &st, first, listed_at); r < 0)
        return r;
    std::shared_ptr<Node> child = node_for(parent, name, stack, st);
    auto cur = child->stack();
    if (drops_.load(std::memory_order_acquire) != drops) {
        // A layer left the view since the stack was resolved, and its
        // rewrite of every node may have missed this one.
        std::shared_ptr<const Stack> fixed;
        if (without_dropped(*cur, current_view(), &fixed) == 0 && fixed && child->replace_stack(cur.get(), fixed))
            cur = std::move(fixed);
    }
    if (cur.get() == stack.get()) {
        st.st_ino = child->st_ino;
        if (child->is_dir() && stack->entries.size() > 1)
            st.st_nlink = 1;
        e->attr = st;
    } else if (int r = stat_node(*child, *cur, &e->attr); r < 0) {
        nodes_.forget(child->id, 1);
        return r;
    }
    e->ino = child->id;
    e->generation = 0;
    e->attr_timeout = options_.timeout;
    e->entry_timeout = options_.timeout;
    return 0;
}

void Overlay::reply_entry(fuse_req_t req, const std::shared_ptr<Node>& parent, const char* name)
{
    fuse_entry_param e {};
    if (int r = entry_for(parent, name, &e); r < 0)
        fuse_reply_err(req, -r);
    else
        fuse_reply_entry(req, &e);
}

void Overlay::lookup(fuse_req_t req, fuse_ino_t parent_ino, const char* name)
{
    auto parent = node(parent_ino);
    if (!parent)
        return (void)fuse_reply_err(req, ESTALE);
    if (!parent->is_dir())
        return (void)fuse_reply_err(req, ENOTDIR);
    fuse_entry_param e {};
    int r = entry_for(parent, name, &e);
    if (r == -ENOENT) {
        // A negative entry the kernel may cache: only the overlay adds names.
        e.ino = 0;
        e.entry_timeout = options_.timeout;
        fuse_reply_entry(req, &e);
    } else if (r < 0) {
        fuse_reply_err(req, -r);
    } else {
        fuse_reply_entry(req, &e);
    }
}

void Overlay::forget(fuse_ino_t ino, uint64_t nlookup)
{
    nodes_.forget(ino, nlookup);
}

void Overlay::getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*)
{
    auto n = node(ino);
    if (!n)
        return (void)fuse_reply_err(req, ESTALE);
    struct stat st;
    if (int r = stat_node(*n, &st); r < 0)
        return (void)fuse_reply_err(req, -r);
    fuse_reply_attr(req, &st, options_.timeout);
}

} // namespace layerd::fs
