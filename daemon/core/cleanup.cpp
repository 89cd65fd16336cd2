// SPDX-License-Identifier: LGPL-2.1-or-later
#include "cleanup.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <chrono>
#include <unordered_map>
#include <unordered_set>

namespace layerd {

namespace {

using List = std::vector<const CleanupCandidate*>;

// The whole snapshot set, sorted by number, with the pair lookups the
// filters need. Partners are found among all snapshots, not only among the
// candidates: a kept partner is what holds a pre or post back.
class SnapshotIndex {
public:
    explicit SnapshotIndex(std::span<const CleanupCandidate> snapshots)
    {
        all_.reserve(snapshots.size());
        for (const auto& s : snapshots)
            all_.push_back(&s);
        std::stable_sort(all_.begin(), all_.end(),
                         [](auto* a, auto* b) { return a->number < b->number; });
        for (auto* s : all_) {
            by_number_.emplace(s->number, s);
            // snapper's findPost takes the first post naming the pre.
            if (s->type == SnapshotKind::post && s->pre_number)
                post_by_pre_.emplace(*s->pre_number, s);
        }
    }

    const List& ascending() const { return all_; }

    const CleanupCandidate* partner(const CleanupCandidate& s) const
    {
        if (s.type == SnapshotKind::pre) {
            auto it = post_by_pre_.find(s.number);
            return it == post_by_pre_.end() ? nullptr : it->second;
        }
        if (s.type == SnapshotKind::post && s.pre_number) {
            auto it = by_number_.find(*s.pre_number);
            if (it != by_number_.end() && it->second->type == SnapshotKind::pre)
                return it->second;
        }
        return nullptr;
    }

private:
    List all_;
    std::unordered_map<uint32_t, const CleanupCandidate*> by_number_;
    std::unordered_map<uint32_t, const CleanupCandidate*> post_by_pre_;
};

// snapper's "younger than" test (time > now - min_age), written so that no
// now/time/min_age values can overflow; a negative min_age means none.
struct Cutoff {
    int64_t now;
    int64_t min_age;
};

Cutoff age_cutoff(int64_t now, int64_t min_age) { return {now, std::max<int64_t>(min_age, 0)}; }

bool old_enough(const CleanupCandidate& s, Cutoff cutoff)
{
    if (s.time > cutoff.now)
        return false;
    // now - time is in [0, 2^64) and fits unsigned arithmetic exactly.
    const uint64_t age = static_cast<uint64_t>(cutoff.now) - static_cast<uint64_t>(s.time);
    return age >= static_cast<uint64_t>(cutoff.min_age);
}

// snapper's filter: drop the too young, then every pre or post whose
// partner exists but is not itself among the survivors.
List filter(const SnapshotIndex& index, const List& candidates, Cutoff cutoff)
{
    List old;
    std::unordered_set<uint32_t> present;
    for (auto* s : candidates)
        if (old_enough(*s, cutoff)) {
            old.push_back(s);
            present.insert(s->number);
        }
    List out;
    for (auto* s : old) {
        const CleanupCandidate* p = index.partner(*s);
        if (p && !present.contains(p->number))
            continue;
        out.push_back(s);
    }
    return out;
}

size_t limit_value(const LimitRange& r, LimitBound bound)
{
    return bound == LimitBound::max ? r.max : r.min;
}

List marked(const SnapshotIndex& index, std::string_view mark)
{
    List out;
    for (auto* s : index.ascending())
        if (s->cleanup == mark)
            out.push_back(s);
    return out;
}

// Candidates are returned oldest first, like snapper's reversed list.
List number_candidates(const SnapshotIndex& index, const NumberCleanup& config, LimitBound bound)
{
    List all = marked(index, "number");
    const size_t limit = limit_value(config.limit, bound);
    const size_t limit_important = limit_value(config.limit_important, bound);
    size_t kept = 0, kept_important = 0;
    List out;
    for (auto it = all.rbegin(); it != all.rend(); ++it) {
        bool keep = false;
        if (kept_important < limit_important && (*it)->important) {
            ++kept_important;
            keep = true;
        }
        // Important snapshots take normal slots too: snapper counts every
        // snapshot against NUMBER_LIMIT while it lasts.
        if (kept < limit) {
            ++kept;
            keep = true;
        }
        if (!keep)
            out.push_back(*it);
    }
    std::reverse(out.begin(), out.end());
    return out;
}

constexpr size_t period_kinds = 6; // hour, day, week, month, quarter, year

int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

// Keys that are equal exactly when two instants fall in the same local
// hour, day, ISO week, month, quarter and year.
std::array<int64_t, period_kinds> period_keys(int64_t utc, const UtcOffset& offset)
{
    // Keeps the calendar conversion inside years chrono represents; a
    // timestamp this far out is garbage whichever period it lands in.
    constexpr int64_t bound = int64_t{1} << 39;
    utc = std::clamp(utc, -bound, bound);
    const int64_t local = utc + (offset ? offset(utc) : 0);

    const int64_t day = floor_div(local, 86400);
    const std::chrono::year_month_day ymd{
        std::chrono::sys_days{std::chrono::days{day}}};
    const int64_t year = static_cast<int>(ymd.year());
    const int64_t month0 = static_cast<unsigned>(ymd.month()) - 1;
    return {
        floor_div(local, 3600),
        day,
        // 1970-01-01 was a Thursday: shifting by 3 days starts weeks on
        // Monday, as snapper's equal_week (ISO 8601) does.
        floor_div(day + 3, 7),
        year * 12 + month0,
        year * 4 + month0 / 3,
        year,
    };
}

List timeline_candidates(const SnapshotIndex& index, const TimelineCleanup& config,
                         LimitBound bound, const UtcOffset& offset)
{
    List all = marked(index, "timeline");
    const size_t n = all.size();
    std::vector<std::array<int64_t, period_kinds>> keys(n);
    for (size_t i = 0; i < n; ++i)
        keys[i] = period_keys(all[i]->time, offset);

    // snapper's is_first walks from a snapshot towards older ones: the first
    // one in another period proves it first, an earlier time in the same
    // period disproves it. Equivalently: first unless some snapshot in the
    // unbroken run of same-period older neighbours has an earlier time. One
    // sweep from the oldest keeps the run's minimum, so this is linear even
    // when clocks went backwards.
    std::vector<std::array<bool, period_kinds>> first(n);
    for (size_t k = 0; k < period_kinds; ++k) {
        int64_t run_min = 0;
        for (size_t i = 0; i < n; ++i) {
            if (i == 0 || keys[i][k] != keys[i - 1][k]) {
                first[i][k] = true;
                run_min = all[i]->time;
            } else {
                first[i][k] = all[i]->time <= run_min;
                run_min = std::min(run_min, all[i]->time);
            }
        }
    }

    const std::array<size_t, period_kinds> limits = {
        limit_value(config.hourly, bound),  limit_value(config.daily, bound),
        limit_value(config.weekly, bound),  limit_value(config.monthly, bound),
        limit_value(config.quarterly, bound), limit_value(config.yearly, bound),
    };
    std::array<size_t, period_kinds> kept{};
    List out;
    for (size_t i = n; i-- > 0;) {
        bool keep = false;
        for (size_t k = 0; k < period_kinds; ++k)
            if (kept[k] < limits[k] && first[i][k]) {
                ++kept[k];
                keep = true;
            }
        if (!keep)
            out.push_back(all[i]);
    }
    std::reverse(out.begin(), out.end());
    return out;
}

List empty_pre_post_candidates(const SnapshotIndex& index, const EmptyPrePostCleanup& config,
                               int64_t now, const EmptyDiff& is_empty)
{
    List out;
    if (!is_empty)
        return out;
    const Cutoff cutoff = age_cutoff(now, config.min_age);
    for (auto* pre : index.ascending()) {
        if (pre->type != SnapshotKind::pre)
            continue;
        const CleanupCandidate* post = index.partner(*pre);
        if (!post)
            continue;
        if (config.require_mark &&
            (pre->cleanup != "empty-pre-post" || post->cleanup != "empty-pre-post"))
            continue;
        // The filter would drop a pair with a young half anyway; skipping it
        // here saves the comparison.
        if (!old_enough(*pre, cutoff) || !old_enough(*post, cutoff))
            continue;
        if (is_empty(pre->number, post->number)) {
            out.push_back(pre);
            out.push_back(post);
        }
    }
    return out;
}

std::vector<Deletion> as_deletions(const List& list, CleanupAlgorithm algorithm, bool for_space)
{
    std::vector<Deletion> out;
    out.reserve(list.size());
    for (auto* s : list)
        out.push_back({s->number, algorithm, for_space});
    return out;
}

// snapper grows a prefix of the candidates until the filter lets something
// through, then deletes what passed: deleting just the first candidate is not
// possible when it is a pre whose post comes later. Tracking which snapshots
// are waiting for a partner finds that prefix in one pass.
List first_deletable_prefix(const SnapshotIndex& index, const List& candidates, Cutoff cutoff)
{
    std::unordered_set<uint32_t> seen_old;
    std::unordered_set<uint32_t> waited_for; // partners of old candidates seen so far
    for (size_t i = 0; i < candidates.size(); ++i) {
        const CleanupCandidate& s = *candidates[i];
        if (!old_enough(s, cutoff))
            continue;
        const CleanupCandidate* p = index.partner(s);
        const bool fires = !p || seen_old.contains(p->number) || waited_for.contains(s.number);
        if (fires) {
            List prefix(candidates.begin(), candidates.begin() + i + 1);
            return filter(index, prefix, cutoff);
        }
        seen_old.insert(s.number);
        waited_for.insert(p->number);
    }
    return {};
}

int64_t min_age_of(CleanupAlgorithm algorithm, const CleanupConfig& config)
{
    switch (algorithm) {
    case CleanupAlgorithm::number:
        return config.number->min_age;
    case CleanupAlgorithm::timeline:
        return config.timeline->min_age;
    case CleanupAlgorithm::empty_pre_post:
        return config.empty_pre_post->min_age;
    }
    return 0;
}

bool enabled(CleanupAlgorithm algorithm, const CleanupConfig& config)
{
    switch (algorithm) {
    case CleanupAlgorithm::number:
        return config.number.has_value();
    case CleanupAlgorithm::timeline:
        return config.timeline.has_value();
    case CleanupAlgorithm::empty_pre_post:
        return config.empty_pre_post.has_value();
    }
    return false;
}

} // namespace

std::string_view to_string(CleanupAlgorithm algorithm)
{
    switch (algorithm) {
    case CleanupAlgorithm::number:
        return "number";
    case CleanupAlgorithm::timeline:
        return "timeline";
    case CleanupAlgorithm::empty_pre_post:
        return "empty-pre-post";
    }
    return "";
}

std::optional<CleanupAlgorithm> cleanup_algorithm_from_string(std::string_view name)
{
    for (auto a : {CleanupAlgorithm::number, CleanupAlgorithm::timeline,
                   CleanupAlgorithm::empty_pre_post})
        if (name == to_string(a))
            return a;
    return std::nullopt;
}

std::optional<LimitRange> LimitRange::parse(std::string_view text)
{
    auto number = [](std::string_view s) -> std::optional<uint32_t> {
        // from_chars alone would accept a sign-free "12abc" prefix.
        if (s.empty() || !std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; }))
            return std::nullopt;
        uint32_t v = 0;
        auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
        if (ec != std::errc() || end != s.data() + s.size())
            return std::nullopt;
        return v;
    };
    const size_t dash = text.find('-');
    if (dash == std::string_view::npos) {
        auto v = number(text);
        return v ? std::optional<LimitRange>(LimitRange(*v)) : std::nullopt;
    }
    auto lo = number(text.substr(0, dash));
    auto hi = number(text.substr(dash + 1));
    if (!lo || !hi || *lo > *hi)
        return std::nullopt;
    return LimitRange(*lo, *hi);
}

std::string LimitRange::to_string() const
{
    return is_range() ? std::to_string(min) + "-" + std::to_string(max) : std::to_string(max);
}

UtcOffset fixed_utc_offset(int32_t seconds_east)
{
    return [seconds_east](int64_t) { return seconds_east; };
}

std::vector<Deletion> number_cleanup(std::span<const CleanupCandidate> snapshots,
                                     const NumberCleanup& config, int64_t now, LimitBound bound)
{
    SnapshotIndex index(snapshots);
    return as_deletions(filter(index, number_candidates(index, config, bound),
                               age_cutoff(now, config.min_age)),
                        CleanupAlgorithm::number, false);
}

std::vector<Deletion> timeline_cleanup(std::span<const CleanupCandidate> snapshots,
                                       const TimelineCleanup& config, int64_t now,
                                       LimitBound bound, const UtcOffset& offset)
{
    SnapshotIndex index(snapshots);
    return as_deletions(filter(index, timeline_candidates(index, config, bound, offset),
                               age_cutoff(now, config.min_age)),
                        CleanupAlgorithm::timeline, false);
}

std::vector<Deletion> empty_pre_post_cleanup(std::span<const CleanupCandidate> snapshots,
                                             const EmptyPrePostCleanup& config, int64_t now,
                                             const EmptyDiff& is_empty)
{
    SnapshotIndex index(snapshots);
    return as_deletions(filter(index, empty_pre_post_candidates(index, config, now, is_empty),
                               age_cutoff(now, config.min_age)),
                        CleanupAlgorithm::empty_pre_post, false);
}

std::vector<Deletion> next_free_space_step(std::span<const CleanupCandidate> snapshots,
                                           CleanupAlgorithm algorithm,
                                           const CleanupConfig& config, int64_t now,
                                           const EmptyDiff& is_empty, const UtcOffset& offset)
{
    if (!enabled(algorithm, config))
        return {};
    SnapshotIndex index(snapshots);
    List candidates;
    switch (algorithm) {
    case CleanupAlgorithm::number:
        candidates = number_candidates(index, *config.number, LimitBound::min);
        break;
    case CleanupAlgorithm::timeline:
        candidates = timeline_candidates(index, *config.timeline, LimitBound::min, offset);
        break;
    case CleanupAlgorithm::empty_pre_post:
        candidates = empty_pre_post_candidates(index, *config.empty_pre_post, now, is_empty);
        break;
    }
    return as_deletions(first_deletable_prefix(index, candidates,
                                               age_cutoff(now, min_age_of(algorithm, config))),
                        algorithm, true);
}

std::vector<Deletion> free_space_cleanup(std::vector<CleanupCandidate> snapshots,
                                         const CleanupConfig& config, int64_t now,
                                         const DeleteAndCheck& delete_and_check,
                                         const EmptyDiff& is_empty, const UtcOffset& offset)
{
    std::vector<Deletion> done;
    bool enough = delete_and_check({});

    // Each step recomputes the candidates, so a pair's comparison would be
    // asked for again and again; the answer cannot change within one run.
    std::unordered_map<uint64_t, bool> empties;
    EmptyDiff cached;
    if (is_empty)
        cached = [&](uint32_t pre, uint32_t post) {
            const uint64_t key = (uint64_t{pre} << 32) | post;
            auto it = empties.find(key);
            if (it == empties.end())
                it = empties.emplace(key, is_empty(pre, post)).first;
            return it->second;
        };

    for (auto algorithm : {CleanupAlgorithm::number, CleanupAlgorithm::timeline,
                           CleanupAlgorithm::empty_pre_post}) {
        while (!enough) {
            std::vector<Deletion> step =
                next_free_space_step(snapshots, algorithm, config, now, cached, offset);
            if (step.empty())
                break;
            enough = delete_and_check(step);
            done.insert(done.end(), step.begin(), step.end());
            std::unordered_set<uint32_t> gone;
            for (const auto& d : step)
                gone.insert(d.number);
            std::erase_if(snapshots, [&](const CleanupCandidate& s) { return gone.contains(s.number); });
        }
    }
    return done;
}

} // namespace layerd
