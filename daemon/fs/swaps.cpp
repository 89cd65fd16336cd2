// SPDX-License-Identifier: LGPL-2.1-or-later
// Swaps of the view on a live mount: freezing the upper (a snapshot) and
// replacing the view (a rollback). Both run between operations that change
// the upper (they hold change_mutex_ exclusively), from a thread that serves
// no FUSE request.
#include "overlay.hpp"

#include "resolve.hpp"

#include <unistd.h>

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
    // Dropping the root's entries drops everything cached below them.
    std::lock_guard session_lock(session_mutex_);
    if (session_) {
        for (const auto& name : names)
            if (name != "." && name != "..")
                fuse_lowlevel_notify_inval_entry(session_, NodeTable::root_id, name.c_str(), name.size());
        fuse_lowlevel_notify_inval_inode(session_, NodeTable::root_id, 0, 0);
    }
    return 0;
}

} // namespace layerd::fs
