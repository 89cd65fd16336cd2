// SPDX-License-Identifier: LGPL-2.1-or-later
#include "managed_stack.hpp"

#include "bus_error.hpp"
#include "log.hpp"

#include <sys/mount.h>

#include <cerrno>
#include <fmt/format.h>

namespace layerd::service {

StackConfig stack_config_of(const StackDefinition& d, const std::string& state_dir)
{
    StackConfig c;
    c.name = d.name;
    c.lowers = d.lowers;
    c.mountpoint = d.mountpoint;
    c.state_dir = state_dir;
    c.xattr_format = d.xattr_format;
    c.max_depth = d.max_depth;
    c.cleanup = d.cleanup;
    c.free_limit = d.free_limit;
    c.read_only = !d.upper;
    c.volatile_upper = d.volatile_upper;
    return c;
}

ManagedStack::ManagedStack(StackDefinition definition, SnapshotStore& store, std::string state_dir)
    : name_(definition.name), store_(store), state_dir_(std::move(state_dir)), definition_(std::move(definition))
{
}

ManagedStack::~ManagedStack() = default;

StackDefinition ManagedStack::definition() const
{
    std::lock_guard lock(mutex_);
    return definition_;
}

void ManagedStack::set_definition(StackDefinition definition)
{
    std::lock_guard lock(mutex_);
    definition_ = std::move(definition);
}

StackDefinition ManagedStack::active() const
{
    std::lock_guard lock(mutex_);
    return mounted_definition_ ? *mounted_definition_ : definition_;
}

bool ManagedStack::mount()
{
    if (mounted_)
        return false;
    StackDefinition d = definition();
    mounted_ = std::make_unique<MountedStack>(store_, stack_config_of(d, state_dir_));
    {
        std::lock_guard lock(mutex_);
        mounted_definition_ = d;
    }
    mounted_flag_ = true;
    return true;
}

void ManagedStack::unmount(bool* lazy)
{
    if (!mounted_)
        throw ServiceError(ErrorKind::NotMounted, fmt::format("stack {} is not mounted", name_));
    // A probe that changes nothing that matters: MNT_EXPIRE fails with EBUSY
    // on a mount in use and with EAGAIN (marking it expired) otherwise. The
    // MountedStack then unmounts, detaching a busy mount.
    std::string mountpoint = mounted_->config().mountpoint;
    *lazy = ::umount2(mountpoint.c_str(), MNT_EXPIRE) != 0 && errno == EBUSY;
    mounted_flag_ = false;
    mounted_.reset();
    std::lock_guard lock(mutex_);
    mounted_definition_.reset();
}

MountedStack& ManagedStack::mounted()
{
    if (!mounted_)
        throw ServiceError(ErrorKind::NotMounted,
                           fmt::format("stack {} is not mounted; mount it first (layerctl mount {})", name_, name_));
    // What a reload changed since, of the keys a mounted stack takes at once.
    StackDefinition d = definition();
    mounted_->set_limits(d.cleanup, d.free_limit, d.max_depth);
    return *mounted_;
}

std::vector<SnapshotRecord> ManagedStack::snapshots()
{
    if (!store_.has_stack(name_))
        return {};
    return store_.list_snapshots(name_);
}

std::optional<SnapshotRecord> ManagedStack::snapshot(uint32_t number)
{
    if (!store_.has_stack(name_))
        return std::nullopt;
    return store_.get_snapshot(name_, number);
}

void ManagedStack::update_snapshot(uint32_t number, const SnapshotChanges& changes)
{
    store_.update_snapshot(name_, number, changes);
}

unsigned ManagedStack::depth()
{
    // One read transaction: a consistent chain even while the worker changes it.
    return store_.read_transaction([&] {
        unsigned depth = 0;
        if (!store_.has_stack(name_))
            return depth;
        auto live = store_.live_layer(name_);
        if (!live)
            return depth;
        auto rec = store_.get_layer(*live);
        std::optional<int64_t> parent = rec ? rec->parent : std::nullopt;
        while (parent) {
            ++depth;
            rec = store_.get_layer(*parent);
            parent = rec ? rec->parent : std::nullopt;
        }
        return depth;
    });
}

int64_t ManagedStack::live_layer()
{
    if (!store_.has_stack(name_))
        return 0;
    return store_.live_layer(name_).value_or(0);
}

} // namespace layerd::service
