// SPDX-License-Identifier: LGPL-2.1-or-later
// Cleanup of one stack (DESIGN §2 "cleanup"): snapper's algorithms from
// core/cleanup.hpp run against the store, the free-space pass measured on
// the state dir's filesystem, and the removal of what crashes leave behind.
#include "mounted_stack.hpp"
#include "stack_io.hpp"

#include "layer_view.hpp"
#include "remove_tree.hpp"

#include <fcntl.h>
#include <sys/statvfs.h>

#include <cerrno>
#include <charconv>
#include <ctime>
#include <fmt/format.h>
#include <set>

namespace layerd {

namespace {

SnapshotKind kind_of(SnapshotType type)
{
    switch (type) {
    case SnapshotType::Pre:
        return SnapshotKind::pre;
    case SnapshotType::Post:
        return SnapshotKind::post;
    case SnapshotType::Single:
        break;
    }
    return SnapshotKind::single;
}

std::vector<CleanupCandidate> candidates_of(const std::vector<SnapshotRecord>& snapshots)
{
    std::vector<CleanupCandidate> out;
    out.reserve(snapshots.size());
    for (const SnapshotRecord& s : snapshots)
        out.push_back({s.number, kind_of(s.type), s.pre_number, s.time, s.cleanup, s.important});
    return out;
}

// Timeline periods are local calendar periods, as in snapper.
int32_t local_utc_offset(int64_t utc_seconds)
{
    time_t t = static_cast<time_t>(utc_seconds);
    struct tm tm {};
    if (!::localtime_r(&t, &tm))
        return 0;
    return static_cast<int32_t>(tm.tm_gmtoff);
}

// Only the algorithm asked for, or all of them.
CleanupConfig restricted_to(const CleanupConfig& config, std::optional<CleanupAlgorithm> algorithm)
{
    if (!algorithm)
        return config;
    CleanupConfig only;
    switch (*algorithm) {
    case CleanupAlgorithm::number:
        only.number = config.number;
        break;
    case CleanupAlgorithm::timeline:
        only.timeline = config.timeline;
        break;
    case CleanupAlgorithm::empty_pre_post:
        only.empty_pre_post = config.empty_pre_post;
        break;
    }
    return only;
}

} // namespace

void MountedStack::delete_for_cleanup(uint32_t number, CleanupResult* result)
{
    try {
        delete_snapshots({number});
        result->deleted.push_back(number);
    } catch (const std::exception& e) {
        result->failures.push_back(fmt::format("snapshot {}: {}", number, e.what()));
    }
}

void MountedStack::run_cleanup_pass(CleanupAlgorithm algorithm, const CleanupConfig& config, int64_t now,
                                    CleanupResult* result)
{
    std::vector<CleanupCandidate> snapshots = candidates_of(store_.list_snapshots(config_.name));
    std::vector<Deletion> deletions;
    switch (algorithm) {
    case CleanupAlgorithm::number:
        if (config.number)
            deletions = number_cleanup(snapshots, *config.number, now);
        break;
    case CleanupAlgorithm::timeline:
        if (config.timeline)
            deletions = timeline_cleanup(snapshots, *config.timeline, now, LimitBound::max, local_utc_offset);
        break;
    case CleanupAlgorithm::empty_pre_post:
        if (config.empty_pre_post)
            deletions = empty_pre_post_cleanup(snapshots, *config.empty_pre_post, now,
                                               [&](uint32_t pre, uint32_t post) { return diff_is_empty(pre, post); });
        break;
    }
    for (const Deletion& d : deletions)
        delete_for_cleanup(d.number, result);
}

bool MountedStack::diff_is_empty(uint32_t a, uint32_t b)
{
    try {
        return diff_until(a, b, [](const DiffEntry&) { return 1; }) == 0;
    } catch (const std::exception&) {
        return false; // a pair that cannot be compared is kept
    }
}

bool MountedStack::enough_free_space()
{
    struct statvfs st {};
    if (::statvfs(stack_dir_.c_str(), &st) != 0 || st.f_blocks == 0)
        return true; // unknown: nothing is deleted for want of space
    return static_cast<double>(st.f_bavail) >= config_.free_limit * static_cast<double>(st.f_blocks);
}

CleanupResult MountedStack::cleanup(std::optional<CleanupAlgorithm> algorithm, int64_t now)
try {
    require_upper();
    CleanupResult result;
    CleanupConfig config = restricted_to(config_.cleanup, algorithm);
    for (auto a : {CleanupAlgorithm::number, CleanupAlgorithm::timeline, CleanupAlgorithm::empty_pre_post})
        run_cleanup_pass(a, config, now, &result);

    // snapper's space-driven pass: down to the lower limits while short.
    if (config_.free_limit > 0) {
        free_space_cleanup(
            candidates_of(store_.list_snapshots(config_.name)), config, now,
            [&](std::span<const Deletion> step) {
                for (const Deletion& d : step)
                    delete_for_cleanup(d.number, &result);
                return enough_free_space();
            },
            [&](uint32_t pre, uint32_t post) { return diff_is_empty(pre, post); }, local_utc_offset);
    }
    result.layers_removed = remove_leftovers(&result);
    return result;
} catch (const StoreError& e) {
    fail_store(config_.name, e);
}

unsigned MountedStack::remove_leftovers(CleanupResult* result)
{
    unsigned removed = 0;
    // Layers no snapshot, view or merge needs any more (a crash between a
    // snapshot's row and its layer, say): removed, or merged into their
    // only child, like the layer of a deleted snapshot.
    std::set<int64_t> known;
    size_t before = 0;
    for (const LayerRecord& l : store_.list_layers(config_.name)) {
        known.insert(l.id);
        ++before;
    }
    for (int64_t id : known) {
        auto rec = store_.get_layer(id);
        if (!rec || (rec->state != LayerState::Frozen && rec->state != LayerState::Hidden))
            continue;
        try {
            remove_layer_if_unused(id);
        } catch (const std::exception& e) {
            result->failures.push_back(fmt::format("layer {}: {}", id, e.what()));
        }
    }
    size_t after = store_.list_layers(config_.name).size();
    removed += static_cast<unsigned>(before - std::min(before, after));

    // Empty layer dirs the database does not know: a create that died
    // before its transaction committed. Anything else unknown is not ours
    // to guess about and stays (recovery reports it).
    UniqueFd layers = open_dir_or_fail(stack_dir_ + "/layers", O_RDONLY);
    std::vector<LayerDirEntry> entries;
    if (int r = read_layer_dir(layers.get(), &entries); r < 0)
        fail_io("reading " + stack_dir_ + "/layers", -r);
    for (const LayerDirEntry& e : entries) {
        int64_t id = 0;
        auto [end, ec] = std::from_chars(e.name.data(), e.name.data() + e.name.size(), id);
        if (ec != std::errc() || end != e.name.data() + e.name.size() || store_.get_layer(id))
            continue;
        if (::unlinkat(layers.get(), e.name.c_str(), AT_REMOVEDIR) == 0)
            ++removed;
    }

    // The merge work dir holds a merge's trash and plans; with no merge of
    // this stack in progress, whatever is there is a crash's leftover.
    bool merging = false;
    for (const MergeRecord& m : store_.merges_in_progress())
        merging |= m.stack == config_.name;
    if (!merging) {
        UniqueFd merge = open_dir_or_fail(stack_dir_ + "/merge", O_RDONLY);
        std::vector<LayerDirEntry> leftovers;
        if (read_layer_dir(merge.get(), &leftovers) == 0 && !leftovers.empty()) {
            if (int r = clear_dir(merge.get()); r < 0)
                result->failures.push_back(fmt::format("clearing {}/merge: {}", stack_dir_, std::strerror(-r)));
            else
                removed += static_cast<unsigned>(leftovers.size());
        }
    }
    return removed;
}

} // namespace layerd
