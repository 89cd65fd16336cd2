// SPDX-License-Identifier: LGPL-2.1-or-later
#include "config_diff.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <map>

namespace layerd {

namespace {

bool same_cleanup(const CleanupConfig& a, const CleanupConfig& b)
{
    const auto same_number = [](const NumberCleanup& x, const NumberCleanup& y) {
        return x.limit == y.limit && x.limit_important == y.limit_important && x.min_age == y.min_age;
    };
    const auto same_timeline = [](const TimelineCleanup& x, const TimelineCleanup& y) {
        return x.hourly == y.hourly && x.daily == y.daily && x.weekly == y.weekly && x.monthly == y.monthly &&
               x.quarterly == y.quarterly && x.yearly == y.yearly && x.min_age == y.min_age;
    };
    const auto same_empty = [](const EmptyPrePostCleanup& x, const EmptyPrePostCleanup& y) {
        return x.min_age == y.min_age && x.require_mark == y.require_mark;
    };
    const auto same = [](const auto& x, const auto& y, const auto& equal) {
        return x.has_value() == y.has_value() && (!x || equal(*x, *y));
    };
    return same(a.number, b.number, same_number) && same(a.timeline, b.timeline, same_timeline) &&
           same(a.empty_pre_post, b.empty_pre_post, same_empty);
}

StackChange compare(const StackDefinition& old, const StackDefinition& now)
{
    StackChange change;
    change.name = now.name;
    const auto note = [&](bool differs, std::string_view key, bool remount) {
        if (differs)
            (remount ? change.remount_keys : change.live_keys).push_back(key);
    };
    note(old.mountpoint != now.mountpoint, "mountpoint", true);
    note(old.lowers != now.lowers, "lowers", true);
    note(old.upper != now.upper, "upper", true);
    note(old.volatile_upper != now.volatile_upper, "volatile", true);
    note(old.boot != now.boot, "boot", false);
    note(old.xattr_format != now.xattr_format, "xattr_format", true);
    note(old.timeline != now.timeline, "timeline", false);
    note(old.package_snapshots != now.package_snapshots, "package_snapshots", false);
    note(!same_cleanup(old.cleanup, now.cleanup) || old.free_limit != now.free_limit, "cleanup", false);
    note(old.max_depth != now.max_depth, "max_depth", false);
    note(old.allow_users != now.allow_users, "allow_users", false);
    note(old.allow_groups != now.allow_groups, "allow_groups", false);
    return change;
}

std::string joined(const std::vector<std::string_view>& keys)
{
    return fmt::format("{}", fmt::join(keys, ", "));
}

} // namespace

ConfigChange diff(const Config& old, const Config& now)
{
    ConfigChange change;
    if (now.global_failed)
        return change;
    if (old.global.state_dir != now.global.state_dir)
        change.global_keys.emplace_back("state_dir");

    std::map<std::string_view, const StackDefinition*> before;
    for (const StackDefinition& stack : old.stacks)
        before.emplace(stack.name, &stack);
    std::map<std::string_view, const StackDefinition*> after;
    for (const StackDefinition& stack : now.stacks)
        after.emplace(stack.name, &stack);
    const auto is_broken = [&](std::string_view name) {
        return std::any_of(now.errors.begin(), now.errors.end(),
                           [&](const ConfigError& e) { return e.stack() == name; });
    };

    std::map<std::string_view, StackChange> changes;
    for (const auto& [name, stack] : before) {
        auto it = after.find(name);
        if (it == after.end()) {
            StackChange gone;
            gone.name = stack->name;
            gone.kind = is_broken(name) ? StackChange::Kind::invalid : StackChange::Kind::removed;
            changes.emplace(name, std::move(gone));
            continue;
        }
        StackChange changed = compare(*stack, *it->second);
        if (!changed.live_keys.empty() || !changed.remount_keys.empty())
            changes.emplace(name, std::move(changed));
    }
    for (const auto& [name, stack] : after) {
        if (before.contains(name))
            continue;
        StackChange added;
        added.name = stack->name;
        added.kind = StackChange::Kind::added;
        changes.emplace(name, std::move(added));
    }
    for (auto& [name, stack_change] : changes)
        change.stacks.push_back(std::move(stack_change));
    return change;
}

std::string remount_refusal(const StackChange& change)
{
    return fmt::format("stack '{}' is mounted and its new {} {} a remount: run 'layerctl unmount {}' and reload "
                       "again (until then the old definition stays in force)",
                       change.name, joined(change.remount_keys), change.remount_keys.size() == 1 ? "needs" : "need",
                       change.name);
}

std::string restart_refusal(const ConfigChange& change)
{
    return fmt::format("layerd.yaml changed {}, which only a restart of layerd applies (until then the old value "
                       "stays in force)",
                       joined(change.global_keys));
}

} // namespace layerd
