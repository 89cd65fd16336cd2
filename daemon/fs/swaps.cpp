// SPDX-License-Identifier: LGPL-2.1-or-later
// Swaps of the view on a live mount: freezing the upper (a snapshot),
// replacing the view (a rollback) and merging two frozen layers (a delete).
// Freezes, swaps and the end of a merge run between operations that change
// the upper (they hold change_mutex_ exclusively); all of them run from a
// thread that serves no FUSE request.
#include "overlay.hpp"

#include "resolve.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <set>

namespace layerd::fs {

namespace {

// Makes everything written to a layer so far durable.
int sync_layer(const Layer& layer)
{
    int fd = open_beneath(layer.root.get(), ".", O_RDONLY | O_DIRECTORY);
    if (fd < 0)
        return fd;
    int r = ::syncfs(fd) == 0 ? 0 : -errno;
    ::close(fd);
    return r;
}

// New layers number their inodes like the layers of the same filesystem.
int adopt_ino_prefix(Layer& layer, const View& view)
{
    for (const auto& l : view.layers) {
        if (l->dev == layer.dev) {
            layer.ino_prefix = l->ino_prefix;
            return 0;
        }
    }
    return -EXDEV;
}

} // namespace

int Overlay::freeze_upper(std::shared_ptr<Layer> next)
{
    std::unique_lock lock(change_mutex_);
    std::shared_ptr<const View> view = current_view();
    Layer& old = *view->layers.front();
    if (!old.writable)
        return -EROFS;
    if (next->dev != old.dev)
        return -EXDEV; // copy-ups rename from the upper's work dir
    next->ino_prefix = old.ino_prefix;
    if (int r = sync_layer(old); r < 0)
        return r;

    auto frozen = std::make_shared<View>();
    frozen->generation = view->generation;
    frozen->layers.reserve(view->layers.size() + 1);
    frozen->layers.push_back(next);
    frozen->layers.insert(frozen->layers.end(), view->layers.begin(), view->layers.end());

    // The root always has the upper's root on top.
    auto root = nodes_.get(NodeTable::root_id);
    auto rstack = root->stack();
    Backing top;
    struct stat st;
    if (int r = open_backing(*next, next->root.get(), ".", &top, &st); r < 0)
        return r;
    auto stack = std::make_shared<Stack>();
    stack->view = frozen;
    stack->entries.push_back(std::move(top));
    stack->entries.insert(stack->entries.end(), rstack->entries.begin(), rstack->entries.end());

    next->writable = true;
    old.writable = false;
    {
        std::lock_guard vlock(view_mutex_);
        view_ = frozen;
    }
    root->set_stack(std::move(stack));
    freezes_.fetch_add(1, std::memory_order_release);
    return 0;
}

int Overlay::replace_view(std::vector<std::shared_ptr<Layer>> layers)
{
    if (layers.empty())
        return -EINVAL;
    auto root = nodes_.get(NodeTable::root_id);
    std::set<std::string> names; // the root's entries in both views
    std::vector<DirEntry> listing;
    {
        std::unique_lock lock(change_mutex_);
        std::shared_ptr<const View> view = current_view();
        for (auto& layer : layers)
            if (int r = adopt_ino_prefix(*layer, *view); r < 0)
                return r;
        if (list_merged(*root->stack(), &listing) == 0)
            for (auto& e : listing)
                names.insert(e.name);

        auto next = std::make_shared<View>();
        next->generation = view->generation + 1;
        next->layers = std::move(layers);
        auto stack = root_stack(next);
        if (!stack)
            return -EIO;
        // The old upper is frozen: its files, still open, are read-only now.
        if (Layer& old = *view->layers.front(); old.writable) {
            if (int r = sync_layer(old); r < 0)
                return r;
            old.writable = false;
        }
        for (size_t i = 1; i < next->layers.size(); ++i)
            next->layers[i]->writable = false;
        next->layers.front()->writable = true;
        {
            std::lock_guard vlock(view_mutex_);
            view_ = next;
        }
        nodes_.rekey(*root, NodeKey{stack->top().dev, stack->top().ino, 0, next->generation});
        root->set_stack(stack);
        freezes_.fetch_add(1, std::memory_order_release);
        if (list_merged(*stack, &listing) == 0)
            for (auto& e : listing)
                names.insert(e.name);
    }
    // Outside every lock: a notification may wait for requests in flight.
    // Only the root's entries need telling: every path is reached through
    // one of them. Expired, the kernel revalidates an entry on its next use,
    // gets the new view's nodeid and only then drops the old dentry with
    // what it cached below (positive and negative); invalidated, it drops
    // every cached subtree now, which with 100k nodes takes ~0.4 s.
    bool expire = expire_only_.load(std::memory_order_relaxed);
    std::lock_guard session_lock(session_mutex_);
    if (session_) {
        for (const auto& name : names) {
            if (name == "." || name == "..")
                continue;
            int r = expire ? fuse_lowlevel_notify_expire_entry(session_, NodeTable::root_id, name.c_str(),
                                                               name.size(), FUSE_LL_EXPIRE_ONLY)
                           : -ENOSYS;
            if (r == -ENOSYS)
                fuse_lowlevel_notify_inval_entry(session_, NodeTable::root_id, name.c_str(), name.size());
        }
        fuse_lowlevel_notify_inval_inode(session_, NodeTable::root_id, 0, 0);
    }
    return 0;
}

int Overlay::run_merge_step(const std::function<int()>& step)
{
    return gate_.write(step);
}

int Overlay::drop_merged_layer(dev_t dev, ino_t ino)
{
    // No copy-up runs meanwhile (it would publish a stack made from one
    // being rewritten), and no reader uses a listing hint across the
    // rewrite (the indexes of the stacks' entries shift).
    std::unique_lock lock(change_mutex_);
    return gate_.write([&]() -> int {
        std::shared_ptr<const View> view = current_view();
        auto it = std::find_if(view->layers.begin(), view->layers.end(),
                               [&](const auto& l) { return l->dev == dev && l->ino == ino; });
        if (it == view->layers.end())
            return 0; // rolled back past it: only old views have it
        if (it == view->layers.begin())
            return -EINVAL; // the top has no child in the view to merge into
        auto next = std::make_shared<View>(*view);
        next->layers.erase(next->layers.begin() + (it - view->layers.begin()));
        {
            std::lock_guard vlock(view_mutex_);
            view_ = next;
        }
        drops_.fetch_add(1, std::memory_order_release);
        for (const auto& node : nodes_.all()) {
            std::shared_ptr<const Stack> stack = node->stack();
            std::shared_ptr<const Stack> fixed;
            // A stack that cannot be rewritten (no fd to spare) still works:
            // its own view keeps P's layer, and P's dirs that are gone read
            // as empty.
            if (without_dropped(*stack, next, &fixed) == 0 && fixed)
                node->replace_stack(stack.get(), std::move(fixed));
        }
        return 0;
    });
}

int Overlay::without_dropped(const Stack& stack, const std::shared_ptr<const View>& view,
                             std::shared_ptr<const Stack>* out) const
{
    out->reset();
    const View& old = *stack.view;
    if (old.generation != view->generation)
        return 0;
    auto in_view = [&](const Layer& l) { return view->index_of(l) < view->layers.size(); };
    if (std::all_of(stack.entries.begin(), stack.entries.end(), [&](const Backing& b) { return in_view(*b.layer); }))
        return 0;
    auto next = std::make_shared<Stack>();
    next->view = view;
    next->lower_path = stack.lower_path;
    for (const Backing& b : stack.entries) {
        if (in_view(*b.layer)) {
            next->entries.push_back(b);
            continue;
        }
        // A merge put what a dropped layer showed into its child, the
        // nearest layer above it that is still in the view.
        const Layer* into = nullptr;
        size_t at = old.index_of(*b.layer);
        if (at == old.layers.size())
            return -EIO; // not resolved in its own view: cannot tell
        while (at-- > 0 && !into)
            if (in_view(*old.layers[at]))
                into = old.layers[at].get();
        if (!into)
            return -EIO;
        // A dir merged with its child's dir, listed just above it: its
        // entries are in that dir now, and it is gone.
        if (!next->entries.empty() && next->entries.back().layer == into)
            continue;
        // Moved up whole, keeping its inode: the same object, now the
        // child's. Its own object names the dropped layer (to reopen it by
        // handle), so the new one gets an fd of its own.
        FdLease fd = fd_of(b);
        if (!fd)
            return fd.error();
        int copy = ::fcntl(fd.get(), F_DUPFD_CLOEXEC, 0);
        if (copy < 0)
            return -errno;
        Backing moved{into, b.dev, b.ino, std::make_shared<BackingObject>(fds_, *into, b.dev, b.ino)};
        fds_.adopt(*moved.object, copy);
        next->entries.push_back(std::move(moved));
    }
    *out = std::move(next);
    return 0;
}

} // namespace layerd::fs
