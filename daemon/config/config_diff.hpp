// SPDX-License-Identifier: LGPL-2.1-or-later
// What a reload (Reload() or SIGHUP) changes, stack by stack, and the
// messages the daemon gives when it must refuse a change.
//
// Keys a mounted stack takes on at once: boot, timeline, package_snapshots,
// cleanup (and free_limit), max_depth, allow_users, allow_groups. Keys that
// change what the mount serves or how, and so need an unmount and a mount:
// mountpoint, lowers, upper, volatile, xattr_format. The daemon applies a change that
// needs a remount only to an unmounted stack; for a mounted one it keeps
// the old definition and reports remount_refusal().
#pragma once

#include "config.hpp"

#include <string>
#include <string_view>
#include <vector>

namespace layerd {

struct StackChange {
    enum class Kind {
        added,
        removed,
        changed,
        // The stack's file is bad now: the daemon keeps the old definition
        // (and the mount) until the file is fixed, rather than removing it.
        invalid,
    };
    Kind kind = Kind::changed;
    std::string name;
    // For `changed`, the keys that differ, in file order (cleanup's
    // free_limit is "cleanup"): those applied live, and those that need a
    // remount.
    std::vector<std::string_view> live_keys;
    std::vector<std::string_view> remount_keys;

    bool needs_remount() const { return kind == Kind::changed && !remount_keys.empty(); }
};

struct ConfigChange {
    std::vector<StackChange> stacks; // by name; unchanged stacks are absent
    // layerd.yaml keys that differ; every one of them needs a restart.
    std::vector<std::string_view> global_keys;
};

// OLD is the configuration in force, NOW the one just loaded. When NOW has
// a bad layerd.yaml (global_failed) nothing is reported for the stacks:
// the reload is refused as a whole.
ConfigChange diff(const Config& old, const Config& now);

// "stack 'etc' is mounted; its new mountpoint, lowers need a remount: run
// 'layerctl unmount etc' and reload again (the old definition stays in force)"
std::string remount_refusal(const StackChange& change);

// The same for layerd.yaml keys, which need a restart of layerd.
std::string restart_refusal(const ConfigChange& change);

} // namespace layerd
