// SPDX-License-Identifier: LGPL-2.1-or-later
// Snapper's three cleanup algorithms (number, timeline, empty-pre-post) as
// pure functions over a list of snapshots: they read no clock, no database
// and no filesystem, so the snapshot store, the daemon and the tests can all
// ask "what would cleanup delete now?" and get the same answer. The caller
// deletes what they return, in the order returned.
//
// The semantics are snapper's (client/cleanup.cc, client/utils/equal-date.cc,
// snapper-configs(5)); where layerd differs it says so below.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace layerd {

enum class SnapshotKind { single, pre, post };

// What cleanup needs to know of one snapshot. Deliberately not the database
// record: the store maps its rows onto this.
struct CleanupCandidate {
    uint32_t number = 0; // unique; a higher number is a newer snapshot
    SnapshotKind type = SnapshotKind::single;
    std::optional<uint32_t> pre_number; // post only: the pre it pairs with
    int64_t time = 0;                   // creation, seconds since the epoch
    std::string cleanup;                // "", "number", "timeline", "empty-pre-post"
    bool important = false;             // snapper's userdata important=yes
};

enum class CleanupAlgorithm { number, timeline, empty_pre_post };

// "number", "timeline", "empty-pre-post": the strings stored in a snapshot's
// cleanup field and accepted by Cleanup(s algorithm).
std::string_view to_string(CleanupAlgorithm algorithm);
std::optional<CleanupAlgorithm> cleanup_algorithm_from_string(std::string_view name);

// A limit that is either one number ("50") or snapper's range "min-max"
// ("10-50"). The max applies normally; the min is how far cleanup may go
// when the filesystem is short of space.
struct LimitRange {
    uint32_t min = 0;
    uint32_t max = 0;

    constexpr LimitRange() = default;
    // Implicit on purpose: "limit: 50" is the range 50-50.
    constexpr LimitRange(uint32_t n) : min(n), max(n) {}
    constexpr LimitRange(uint32_t lo, uint32_t hi) : min(lo), max(hi) {}

    // "N" or "MIN-MAX", decimal digits only, MIN <= MAX; nullopt otherwise.
    static std::optional<LimitRange> parse(std::string_view text);
    std::string to_string() const;
    // snapper runs the free-space pass only when some limit is a real range.
    constexpr bool is_range() const { return min != max; }
    bool operator==(const LimitRange&) const = default;
};

// Which end of every LimitRange applies: `max` when there is enough free
// space (snapper's ordinary pass), `min` when there is not.
enum class LimitBound { max, min };

// Defaults are snapper's built-in ones (used when a key is missing; its
// config template ships 1800 s ages and ranges instead).
struct NumberCleanup {
    LimitRange limit{50};           // NUMBER_LIMIT
    LimitRange limit_important{10}; // NUMBER_LIMIT_IMPORTANT
    int64_t min_age = 3600;         // NUMBER_MIN_AGE, seconds
};

struct TimelineCleanup {
    LimitRange hourly{10};   // TIMELINE_LIMIT_HOURLY
    LimitRange daily{10};    // TIMELINE_LIMIT_DAILY
    LimitRange weekly{0};    // TIMELINE_LIMIT_WEEKLY (weeks start on Monday)
    LimitRange monthly{10};  // TIMELINE_LIMIT_MONTHLY
    LimitRange quarterly{0}; // TIMELINE_LIMIT_QUARTERLY (Jan, Apr, Jul, Oct)
    LimitRange yearly{10};   // TIMELINE_LIMIT_YEARLY
    int64_t min_age = 3600;  // TIMELINE_MIN_AGE, seconds
};

struct EmptyPrePostCleanup {
    int64_t min_age = 3600; // EMPTY_PRE_POST_MIN_AGE, seconds
    // layerd deletes only what a snapshot's cleanup field allows, so both
    // halves must be marked "empty-pre-post". snapper looks at every pair
    // whatever its mark (its package hooks mark pairs "number" and rely on
    // this); false reproduces that.
    bool require_mark = true;
};

// One stack's cleanup section; an absent algorithm is switched off.
struct CleanupConfig {
    std::optional<NumberCleanup> number;
    std::optional<TimelineCleanup> timeline;
    std::optional<EmptyPrePostCleanup> empty_pre_post;
};

// One snapshot to delete and why: the algorithm that selected it, and
// whether it went only because the filesystem was short of space.
struct Deletion {
    uint32_t number = 0;
    CleanupAlgorithm algorithm = CleanupAlgorithm::number;
    bool for_free_space = false;
    bool operator==(const Deletion&) const = default;
};

// Seconds east of UTC in effect at a UTC instant. Timeline periods (hour,
// day, week, month, quarter, year) are calendar periods in that local time,
// as snapper uses localtime_r. An empty function means UTC. The caller
// resolves time zones (that reads tz files); fixed_utc_offset() covers the
// DST-free case.
using UtcOffset = std::function<int32_t(int64_t utc_seconds)>;
UtcOffset fixed_utc_offset(int32_t seconds_east);

// Whether the diff between a pre and its post is empty. Only asked for
// pairs that are otherwise deletable (comparisons are the costly part).
using EmptyDiff = std::function<bool(uint32_t pre, uint32_t post)>;

// The three algorithms, one pass each, as snapper runs them without a space
// condition (with LimitBound::min, everything down to the lower limits goes
// at once; free_space_cleanup() is the measured, one-step-at-a-time form).
// Each returns the deletions oldest first. Rules common to all three:
//  - only snapshots whose cleanup field names the algorithm are considered;
//  - a snapshot is too young while time > now - min_age (age exactly
//    min_age is old enough);
//  - a pre is never deleted while its post exists and is not deleted with
//    it, and a post never while its pre exists and is not: pairs go
//    together or not at all, whatever the partner's mark.
//
// number: from the newest (highest number) down, the first `limit`
// number-marked snapshots are kept, important or not, and so are the first
// `limit_important` important ones; pre and post each count as one. Young
// snapshots count toward the limits.
std::vector<Deletion> number_cleanup(std::span<const CleanupCandidate> snapshots,
                                     const NumberCleanup& config, int64_t now,
                                     LimitBound bound = LimitBound::max);

// timeline: a snapshot is the first of its hour (day, week, ...) when no
// older timeline snapshot in that period has an earlier time. From the
// newest down, each first-of-period counts toward that period's limit while
// the limit lasts; a snapshot kept by any period is kept.
std::vector<Deletion> timeline_cleanup(std::span<const CleanupCandidate> snapshots,
                                       const TimelineCleanup& config, int64_t now,
                                       LimitBound bound = LimitBound::max,
                                       const UtcOffset& offset = {});

// empty-pre-post: every pre with a post (the lowest-numbered post naming it)
// whose diff is empty, both old enough; deleted pre then post, by pre number.
// No limits. An empty `is_empty` deletes nothing.
std::vector<Deletion> empty_pre_post_cleanup(std::span<const CleanupCandidate> snapshots,
                                             const EmptyPrePostCleanup& config, int64_t now,
                                             const EmptyDiff& is_empty);

// One step of snapper's space-driven pass for one algorithm: with the lower
// limits, the oldest candidates that can go on their own (usually one
// snapshot, a whole pair when a pre is held back until its post can go too).
// Empty when nothing more may go, or the algorithm is switched off.
std::vector<Deletion> next_free_space_step(std::span<const CleanupCandidate> snapshots,
                                           CleanupAlgorithm algorithm,
                                           const CleanupConfig& config, int64_t now,
                                           const EmptyDiff& is_empty = {},
                                           const UtcOffset& offset = {});

// Deletes `step` (nothing when it is empty) and then reports whether the
// filesystem now has enough free space. It is first called with an empty
// step, to measure before anything goes. An exception stops the cleanup
// and propagates.
using DeleteAndCheck = std::function<bool(std::span<const Deletion> step)>;

// snapper's space-driven pass, as `snapper cleanup --free-space` runs it:
// while there is not enough free space, for number, then timeline, then
// empty-pre-post (the enabled ones), take next_free_space_step() and hand
// it to `delete_and_check`. Lower limits, min ages, marks and pairs are all
// respected, so it can end with too little space. Returns every deletion,
// in the order they were handed over.
//
// snapper's scheduled cleanup with a FREE_LIMIT runs the ordinary pass
// (LimitBound::max) first and then this one, but only for an algorithm with
// at least one real range (never for empty-pre-post, which has no limits):
// a caller reproducing that passes a config with only those algorithms on.
std::vector<Deletion> free_space_cleanup(std::vector<CleanupCandidate> snapshots,
                                         const CleanupConfig& config, int64_t now,
                                         const DeleteAndCheck& delete_and_check,
                                         const EmptyDiff& is_empty = {},
                                         const UtcOffset& offset = {});

} // namespace layerd
