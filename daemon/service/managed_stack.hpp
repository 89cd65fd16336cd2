// SPDX-License-Identifier: LGPL-2.1-or-later
// One configured stack as the daemon keeps it, mounted or not: its
// definition (replaced by a reload) and, while mounted, its MountedStack.
// No D-Bus in here; StackObject exports it.
//
// Threads: mount(), unmount() and mounted() are for one thread at a time
// (the stack's worker, or the main thread while no worker exists). The
// other methods may be called from any thread.
#pragma once

#include "config.hpp"
#include "mounted_stack.hpp"
#include "snapshot_store.hpp"

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace layerd::service {

// The engine's configuration of a stack definition.
StackConfig stack_config_of(const StackDefinition& definition, const std::string& state_dir);

class ManagedStack {
public:
    ManagedStack(StackDefinition definition, SnapshotStore& store, std::string state_dir);
    ManagedStack(const ManagedStack&) = delete;
    ManagedStack& operator=(const ManagedStack&) = delete;
    ~ManagedStack();

    const std::string& name() const { return name_; }

    // The newest definition: what the next mount uses, and whose
    // allow_users / allow_groups apply right away.
    StackDefinition definition() const;
    void set_definition(StackDefinition definition);
    // What the mount serves: the definition it was mounted with while
    // mounted, the newest one otherwise.
    StackDefinition active() const;
    bool is_mounted() const { return mounted_flag_; }

    // Mounts the stack; false (and nothing done) when it already is. Throws
    // when it cannot (missing dirs, a read-only stack, ...).
    bool mount();
    // Unmounts; throws ServiceError(NotMounted) when it is not. *LAZY says
    // whether the mount was busy and had to be detached.
    void unmount(bool* lazy);
    // Throws ServiceError(NotMounted).
    MountedStack& mounted();

    // From the state database, whether mounted or not.
    std::vector<SnapshotRecord> snapshots();
    std::optional<SnapshotRecord> snapshot(uint32_t number);
    void update_snapshot(uint32_t number, const SnapshotChanges& changes);
    unsigned depth();
    int64_t live_layer();

private:
    std::string name_;
    SnapshotStore& store_;
    std::string state_dir_;
    mutable std::mutex mutex_;
    StackDefinition definition_; // guarded by mutex_
    std::optional<StackDefinition> mounted_definition_; // guarded by mutex_
    std::unique_ptr<MountedStack> mounted_;             // the worker's
    std::atomic<bool> mounted_flag_{false};
};

} // namespace layerd::service
