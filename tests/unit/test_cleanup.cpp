// SPDX-License-Identifier: LGPL-2.1-or-later
#include "cleanup.hpp"

#include <gtest/gtest.h>
#include <time.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <chrono>
#include <map>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

using namespace layerd;

namespace {

// Seconds since the epoch of a UTC calendar time, computed without the
// library's own calendar code so the tests check it rather than echo it.
int64_t utc(int y, unsigned mo, unsigned d, int h = 0, int mi = 0, int s = 0)
{
    struct tm tm = {};
    tm.tm_year = y - 1900;
    tm.tm_mon = static_cast<int>(mo) - 1;
    tm.tm_mday = static_cast<int>(d);
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = s;
    return timegm(&tm);
}

CleanupCandidate single(uint32_t n, int64_t t, std::string cleanup = "number", bool important = false)
{
    return {n, SnapshotKind::single, std::nullopt, t, std::move(cleanup), important};
}

CleanupCandidate pre(uint32_t n, int64_t t, std::string cleanup = "number")
{
    return {n, SnapshotKind::pre, std::nullopt, t, std::move(cleanup), false};
}

CleanupCandidate post(uint32_t n, uint32_t pre_n, int64_t t, std::string cleanup = "number")
{
    return {n, SnapshotKind::post, pre_n, t, std::move(cleanup), false};
}

std::vector<uint32_t> numbers(const std::vector<Deletion>& ds)
{
    std::vector<uint32_t> out;
    out.reserve(ds.size());
    for (const auto& d : ds)
        out.push_back(d.number);
    return out;
}

std::vector<uint32_t> range(uint32_t from, uint32_t to) // inclusive
{
    std::vector<uint32_t> out;
    for (uint32_t i = from; i <= to; ++i)
        out.push_back(i);
    return out;
}

constexpr int64_t day_s = 86400;
const int64_t now0 = utc(2024, 6, 1, 12);
const int64_t old_t = now0 - 10 * day_s; // comfortably older than any min_age
const int64_t later = utc(2030, 1, 1);     // "now" for snapshots dated after now0

NumberCleanup number_config(LimitRange limit, LimitRange important = 0, int64_t min_age = 3600)
{
    NumberCleanup c;
    c.limit = limit;
    c.limit_important = important;
    c.min_age = min_age;
    return c;
}

TimelineCleanup timeline_none(int64_t min_age = 0)
{
    TimelineCleanup c;
    c.hourly = c.daily = c.weekly = c.monthly = c.quarterly = c.yearly = 0;
    c.min_age = min_age;
    return c;
}

// ---------------------------------------------------------------- basics

TEST(CleanupLimitRange, ParsesNumbersAndRanges)
{
    EXPECT_EQ(LimitRange::parse("50"), LimitRange(50));
    EXPECT_EQ(LimitRange::parse("0"), LimitRange(0));
    EXPECT_EQ(LimitRange::parse("10-50"), LimitRange(10, 50));
    EXPECT_EQ(LimitRange::parse("7-7"), LimitRange(7));
    EXPECT_EQ(LimitRange::parse("4294967295"), LimitRange(4294967295u));
    for (const char* bad : {"", "-", "-5", "5-", "50-10", "1-2-3", " 5", "5 ", "+5", "0x10",
                            "4294967296", "1e3", "ten", "10 - 50"})
        EXPECT_EQ(LimitRange::parse(bad), std::nullopt) << '"' << bad << '"';
}

TEST(CleanupLimitRange, PrintsBackAndTellsRanges)
{
    EXPECT_EQ(LimitRange(50).to_string(), "50");
    EXPECT_EQ(LimitRange(10, 50).to_string(), "10-50");
    EXPECT_FALSE(LimitRange(50).is_range());
    EXPECT_TRUE(LimitRange(10, 50).is_range());
}

TEST(CleanupAlgorithmNames, RoundTrip)
{
    for (auto a : {CleanupAlgorithm::number, CleanupAlgorithm::timeline,
                   CleanupAlgorithm::empty_pre_post})
        EXPECT_EQ(cleanup_algorithm_from_string(to_string(a)), a);
    EXPECT_EQ(to_string(CleanupAlgorithm::empty_pre_post), "empty-pre-post");
    EXPECT_EQ(cleanup_algorithm_from_string("empty_pre_post"), std::nullopt);
    EXPECT_EQ(cleanup_algorithm_from_string(""), std::nullopt);
    EXPECT_EQ(cleanup_algorithm_from_string("Number"), std::nullopt);
}

TEST(CleanupDefaults, AreSnappers)
{
    NumberCleanup n;
    EXPECT_EQ(n.limit, LimitRange(50));
    EXPECT_EQ(n.limit_important, LimitRange(10));
    EXPECT_EQ(n.min_age, 3600);
    TimelineCleanup t;
    EXPECT_EQ(t.hourly, LimitRange(10));
    EXPECT_EQ(t.daily, LimitRange(10));
    EXPECT_EQ(t.weekly, LimitRange(0));
    EXPECT_EQ(t.monthly, LimitRange(10));
    EXPECT_EQ(t.quarterly, LimitRange(0));
    EXPECT_EQ(t.yearly, LimitRange(10));
    EXPECT_EQ(t.min_age, 3600);
    EmptyPrePostCleanup e;
    EXPECT_EQ(e.min_age, 3600);
    EXPECT_TRUE(e.require_mark);
}

TEST(CleanupEmpty, NoSnapshotsNothingToDo)
{
    std::vector<CleanupCandidate> none;
    EXPECT_TRUE(number_cleanup(none, NumberCleanup{}, now0).empty());
    EXPECT_TRUE(number_cleanup(none, NumberCleanup{}, now0, LimitBound::min).empty());
    EXPECT_TRUE(timeline_cleanup(none, TimelineCleanup{}, now0).empty());
    EXPECT_TRUE(empty_pre_post_cleanup(none, EmptyPrePostCleanup{}, now0,
                                       [](uint32_t, uint32_t) { return true; }).empty());
    CleanupConfig all{NumberCleanup{}, TimelineCleanup{}, EmptyPrePostCleanup{}};
    int calls = 0;
    auto done = free_space_cleanup(none, all, now0, [&](std::span<const Deletion> step) {
        EXPECT_TRUE(step.empty());
        ++calls;
        return false;
    });
    EXPECT_TRUE(done.empty());
    EXPECT_EQ(calls, 1);
}

// ---------------------------------------------------------------- number

TEST(CleanupNumber, KeepsTheNewestOldestFirst)
{
    std::vector<CleanupCandidate> s;
    for (uint32_t i = 1; i <= 6; ++i)
        s.push_back(single(i, old_t + i));
    auto r = number_cleanup(s, number_config(3), now0);
    EXPECT_EQ(numbers(r), (std::vector<uint32_t>{1, 2, 3}));
    for (const auto& d : r) {
        EXPECT_EQ(d.algorithm, CleanupAlgorithm::number);
        EXPECT_FALSE(d.for_free_space);
    }
}

TEST(CleanupNumber, NewestMeansHighestNumberWhateverTheInputOrderOrTimes)
{
    // Snapper ranks by number; times only decide min_age.
    std::vector<CleanupCandidate> s = {single(5, old_t + 1), single(2, old_t + 50),
                                       single(9, old_t + 2), single(7, old_t + 40),
                                       single(1, old_t + 30)};
    EXPECT_EQ(numbers(number_cleanup(s, number_config(2), now0)),
              (std::vector<uint32_t>{1, 2, 5}));
}

TEST(CleanupNumber, OtherAlgorithmsAreNeitherDeletedNorCounted)
{
    std::vector<CleanupCandidate> s = {
        single(1, old_t, "number"),   single(2, old_t, "timeline"),
        single(3, old_t, ""),         single(4, old_t, "empty-pre-post"),
        single(5, old_t, "number"),   single(6, old_t, "timeline"),
        single(7, old_t, "number"),   single(8, old_t, "something-else"),
    };
    EXPECT_EQ(numbers(number_cleanup(s, number_config(1), now0)), (std::vector<uint32_t>{1, 5}));
    EXPECT_EQ(numbers(number_cleanup(s, number_config(0), now0)),
              (std::vector<uint32_t>{1, 5, 7}));
}

TEST(CleanupNumber, ImportantOnesAreKeptUpToTheirOwnLimit)
{
    // Newest first: 8, 7 fill NUMBER_LIMIT=2; important 5 and 3 fill
    // NUMBER_LIMIT_IMPORTANT=2; important 1 is over both.
    std::vector<CleanupCandidate> s;
    for (uint32_t i = 1; i <= 8; ++i)
        s.push_back(single(i, old_t + i, "number", i == 1 || i == 3 || i == 5));
    EXPECT_EQ(numbers(number_cleanup(s, number_config(2, 2), now0)),
              (std::vector<uint32_t>{1, 2, 4, 6}));
}

TEST(CleanupNumber, ImportantOnesAlsoTakeNormalSlots)
{
    // snapper counts every snapshot against NUMBER_LIMIT, important or not.
    std::vector<CleanupCandidate> s;
    for (uint32_t i = 1; i <= 5; ++i)
        s.push_back(single(i, old_t + i, "number", true));
    EXPECT_EQ(numbers(number_cleanup(s, number_config(2, 1), now0)),
              (std::vector<uint32_t>{1, 2, 3}));
    EXPECT_EQ(numbers(number_cleanup(s, number_config(1, 3), now0)),
              (std::vector<uint32_t>{1, 2}));
}

TEST(CleanupNumber, MinAgeBoundaryIsInclusive)
{
    const int64_t min_age = 1800;
    std::vector<CleanupCandidate> s = {
        single(1, now0 - min_age - 1), // older than min_age
        single(2, now0 - min_age),     // exactly min_age old: may go
        single(3, now0 - min_age + 1), // one second too young
        single(4, now0),
    };
    EXPECT_EQ(numbers(number_cleanup(s, number_config(0, 0, min_age), now0)),
              (std::vector<uint32_t>{1, 2}));
    EXPECT_EQ(numbers(number_cleanup(s, number_config(0, 0, 0), now0)),
              (std::vector<uint32_t>{1, 2, 3, 4}));
}

TEST(CleanupNumber, YoungSnapshotsCountTowardTheLimit)
{
    std::vector<CleanupCandidate> s = {single(1, old_t), single(2, old_t), single(3, now0)};
    // 3 (young) and 2 are the newest two: only 1 goes.
    EXPECT_EQ(numbers(number_cleanup(s, number_config(2), now0)), (std::vector<uint32_t>{1}));
}

TEST(CleanupNumber, PrePostPairsGoTogether)
{
    std::vector<CleanupCandidate> s = {pre(1, old_t), post(2, 1, old_t + 1),
                                       pre(3, old_t + 2), post(4, 3, old_t + 3),
                                       single(5, old_t + 4)};
    EXPECT_EQ(numbers(number_cleanup(s, number_config(3), now0)), (std::vector<uint32_t>{1, 2}));
    EXPECT_EQ(numbers(number_cleanup(s, number_config(0), now0)), range(1, 5));
}

TEST(CleanupNumber, PreWhosePostIsKeptIsKept)
{
    std::vector<CleanupCandidate> s = {pre(1, old_t), post(2, 1, old_t + 1),
                                       pre(3, old_t + 2), post(4, 3, old_t + 3),
                                       single(5, old_t + 4)};
    // The limit keeps 5 and 4 and splits the second pair: pre 3 stays with it.
    EXPECT_EQ(numbers(number_cleanup(s, number_config(2), now0)), (std::vector<uint32_t>{1, 2}));
}

TEST(CleanupNumber, PartnerWithAnotherMarkHoldsTheOtherHalf)
{
    std::vector<CleanupCandidate> s = {pre(1, old_t, ""), post(2, 1, old_t + 1, "number"),
                                       pre(3, old_t + 2, "number"), post(4, 3, old_t + 3, "timeline"),
                                       single(5, old_t + 4)};
    EXPECT_EQ(numbers(number_cleanup(s, number_config(0), now0)), (std::vector<uint32_t>{5}));
}

TEST(CleanupNumber, LoneHalvesGoAlone)
{
    // A pre whose post never came (failed transaction), a post whose pre was
    // deleted, and a post naming a snapshot that is not a pre.
    std::vector<CleanupCandidate> s = {pre(1, old_t), post(4, 3, old_t + 1),
                                       single(5, old_t + 2), post(6, 5, old_t + 3)};
    EXPECT_EQ(numbers(number_cleanup(s, number_config(0), now0)),
              (std::vector<uint32_t>{1, 4, 5, 6}));
}

TEST(CleanupNumber, YoungPostHoldsItsOldPre)
{
    std::vector<CleanupCandidate> s = {single(1, old_t), pre(2, old_t), post(3, 2, now0 - 60)};
    EXPECT_EQ(numbers(number_cleanup(s, number_config(0), now0)), (std::vector<uint32_t>{1}));
}

TEST(CleanupNumber, RangeMaxWithEnoughSpaceMinWhenShort)
{
    std::vector<CleanupCandidate> s;
    for (uint32_t i = 1; i <= 60; ++i)
        s.push_back(single(i, old_t + i));
    auto config = number_config(*LimitRange::parse("10-50"));
    EXPECT_EQ(numbers(number_cleanup(s, config, now0, LimitBound::max)), range(1, 10));
    EXPECT_EQ(numbers(number_cleanup(s, config, now0, LimitBound::min)), range(1, 50));
}

TEST(CleanupNumber, ImportantRangeFollowsTheSameBound)
{
    std::vector<CleanupCandidate> s;
    for (uint32_t i = 1; i <= 10; ++i)
        s.push_back(single(i, old_t + i, "number", i <= 6)); // 1..6 important
    auto config = number_config(LimitRange(2, 4), LimitRange(1, 3));
    // max: 10..7 by the limit, then important 6, 5, 4.
    EXPECT_EQ(numbers(number_cleanup(s, config, now0, LimitBound::max)), range(1, 3));
    // min: 10, 9 by the limit, then important 6.
    EXPECT_EQ(numbers(number_cleanup(s, config, now0, LimitBound::min)),
              (std::vector<uint32_t>{1, 2, 3, 4, 5, 7, 8}));
}

TEST(CleanupNumber, NegativeMinAgeActsAsZeroAndHugeValuesDoNotOverflow)
{
    std::vector<CleanupCandidate> s = {single(1, INT64_MIN), single(2, now0)};
    EXPECT_EQ(numbers(number_cleanup(s, number_config(0, 0, -5), now0)),
              (std::vector<uint32_t>{1, 2}));
    EXPECT_EQ(numbers(number_cleanup(s, number_config(0, 0, INT64_MAX), now0)),
              (std::vector<uint32_t>{1}));
    EXPECT_TRUE(number_cleanup(s, number_config(0, 0, INT64_MAX), INT64_MIN + 5).empty());
}

// ---------------------------------------------------------------- timeline

struct Hourly {
    std::vector<CleanupCandidate> snaps;
    std::map<int64_t, uint32_t> by_time;
    int64_t last = 0;
};

// One timeline snapshot 5 minutes past every hour of 2021, 2022 and 2023
// (26280 snapshots, numbered from 1), as the timeline timer makes them.
Hourly three_years_hourly()
{
    Hourly h;
    uint32_t n = 0;
    for (int64_t t = utc(2021, 1, 1, 0, 5); t < utc(2024, 1, 1); t += 3600) {
        h.snaps.push_back(single(++n, t, "timeline"));
        h.by_time[t] = n;
        h.last = t;
    }
    return h;
}

std::set<uint32_t> survivors(const Hourly& h, const std::vector<Deletion>& deleted)
{
    std::set<uint32_t> all;
    for (const auto& s : h.snaps)
        all.insert(s.number);
    for (const auto& d : deleted)
        EXPECT_EQ(all.erase(d.number), 1u) << "deleted twice or unknown: " << d.number;
    return all;
}

TEST(CleanupTimeline, ThreeYearsOfHourlySnapshotsEveryLimit)
{
    Hourly h = three_years_hourly();
    ASSERT_EQ(h.snaps.size(), 26280u);
    TimelineCleanup c;
    c.hourly = 10;
    c.daily = 10;
    c.weekly = 4;
    c.monthly = 10;
    c.quarterly = 4;
    c.yearly = 10;
    c.min_age = 3600;
    auto deleted = timeline_cleanup(h.snaps, c, h.last + 2 * 3600);

    std::set<uint32_t> expect;
    auto at = [&](int y, unsigned m, unsigned d, int hr) { return h.by_time.at(utc(y, m, d, hr, 5)); };
    for (int hr = 14; hr <= 23; ++hr) // hourly: the last 10 hours
        expect.insert(at(2023, 12, 31, hr));
    for (unsigned d = 22; d <= 31; ++d) // daily: the last 10 days, 00:05
        expect.insert(at(2023, 12, d, 0));
    for (unsigned d : {4u, 11u, 18u, 25u}) // weekly: the last 4 Mondays
        expect.insert(at(2023, 12, d, 0));
    for (unsigned m = 3; m <= 12; ++m) // monthly: Mar..Dec 2023
        expect.insert(at(2023, m, 1, 0));
    for (unsigned m : {1u, 4u, 7u, 10u}) // quarterly: 2023's four quarters
        expect.insert(at(2023, m, 1, 0));
    for (int y : {2021, 2022, 2023}) // yearly: only three years exist
        expect.insert(at(y, 1, 1, 0));
    ASSERT_EQ(expect.size(), 36u);

    EXPECT_EQ(survivors(h, deleted), expect);
    EXPECT_EQ(deleted.size(), 26280u - 36u);
    EXPECT_TRUE(std::is_sorted(deleted.begin(), deleted.end(),
                               [](auto& a, auto& b) { return a.number < b.number; }));
    for (const auto& d : deleted)
        EXPECT_EQ(d.algorithm, CleanupAlgorithm::timeline);
}

TEST(CleanupTimeline, ThreeYearsWithSnapperDefaults)
{
    Hourly h = three_years_hourly();
    auto deleted = timeline_cleanup(h.snaps, TimelineCleanup{}, h.last + 2 * 3600);
    std::set<uint32_t> expect;
    auto at = [&](int y, unsigned m, unsigned d, int hr) { return h.by_time.at(utc(y, m, d, hr, 5)); };
    for (int hr = 14; hr <= 23; ++hr)
        expect.insert(at(2023, 12, 31, hr));
    for (unsigned d = 22; d <= 31; ++d)
        expect.insert(at(2023, 12, d, 0));
    for (unsigned m = 3; m <= 12; ++m)
        expect.insert(at(2023, m, 1, 0));
    for (int y : {2021, 2022, 2023})
        expect.insert(at(y, 1, 1, 0));
    EXPECT_EQ(survivors(h, deleted), expect);
}

TEST(CleanupTimeline, ThreeYearsMinAgeKeepsTheYoungest)
{
    Hourly h = three_years_hourly();
    // Nothing kept by limits; the last 3 snapshots are younger than 3 h.
    TimelineCleanup c = timeline_none(3 * 3600);
    auto deleted = timeline_cleanup(h.snaps, c, h.last + 1);
    EXPECT_EQ(survivors(h, deleted), (std::set<uint32_t>{26278, 26279, 26280}));
}

TEST(CleanupTimeline, FirstOfTheHourIsTheEarliestSnapshotInIt)
{
    std::vector<CleanupCandidate> s = {
        single(1, utc(2024, 5, 1, 10, 5), "timeline"), single(2, utc(2024, 5, 1, 10, 20), "timeline"),
        single(3, utc(2024, 5, 1, 10, 59, 59), "timeline"), single(4, utc(2024, 5, 1, 11, 0), "timeline"),
        single(5, utc(2024, 5, 1, 11, 30), "timeline"),
    };
    TimelineCleanup c = timeline_none();
    c.hourly = 2;
    EXPECT_EQ(numbers(timeline_cleanup(s, c, now0)), (std::vector<uint32_t>{2, 3, 5}));
    c.hourly = 1; // only the newest hour's first
    EXPECT_EQ(numbers(timeline_cleanup(s, c, now0)), (std::vector<uint32_t>{1, 2, 3, 5}));
}

TEST(CleanupTimeline, WeeksStartOnMonday)
{
    std::vector<CleanupCandidate> s = {
        single(1, utc(2024, 1, 6, 12), "timeline"),     // Saturday
        single(2, utc(2024, 1, 7, 23, 59, 59), "timeline"), // Sunday, same week
        single(3, utc(2024, 1, 8, 0), "timeline"),      // Monday: a new week
        single(4, utc(2024, 1, 14, 23), "timeline"),    // Sunday of that week
    };
    TimelineCleanup c = timeline_none();
    c.weekly = 5;
    EXPECT_EQ(numbers(timeline_cleanup(s, c, now0)), (std::vector<uint32_t>{2, 4}));
}

TEST(CleanupTimeline, IsoWeekSpansTheNewYear)
{
    std::vector<CleanupCandidate> s = {
        single(1, utc(2020, 12, 31, 12), "timeline"), // Thursday
        single(2, utc(2021, 1, 1, 12), "timeline"),   // Friday, same week
        single(3, utc(2021, 1, 4, 0), "timeline"),    // Monday
    };
    TimelineCleanup c = timeline_none();
    c.weekly = 5;
    EXPECT_EQ(numbers(timeline_cleanup(s, c, now0)), (std::vector<uint32_t>{2}));
    c = timeline_none();
    c.yearly = 5; // the year does not care about weeks
    EXPECT_EQ(numbers(timeline_cleanup(s, c, now0)), (std::vector<uint32_t>{3}));
}

TEST(CleanupTimeline, MonthQuarterAndYearBoundaries)
{
    std::vector<CleanupCandidate> s = {
        single(1, utc(2023, 12, 31, 23, 59, 59), "timeline"),
        single(2, utc(2024, 1, 1, 0, 0, 0), "timeline"),
        single(3, utc(2024, 3, 31, 23, 59, 59), "timeline"),
        single(4, utc(2024, 4, 1, 0, 0, 0), "timeline"),
        single(5, utc(2024, 6, 30, 12), "timeline"),
        single(6, utc(2024, 7, 1, 0), "timeline"),
        single(7, utc(2024, 9, 30, 0), "timeline"),
        single(8, utc(2024, 10, 1, 0), "timeline"),
        single(9, utc(2024, 12, 31, 0), "timeline"),
    };
    TimelineCleanup c = timeline_none();
    c.quarterly = 10;
    EXPECT_EQ(numbers(timeline_cleanup(s, c, later)), (std::vector<uint32_t>{3, 5, 7, 9}));
    c = timeline_none();
    c.monthly = 10;
    EXPECT_TRUE(timeline_cleanup(s, c, later).empty()); // each is first of its month
    c = timeline_none();
    c.yearly = 10;
    EXPECT_EQ(numbers(timeline_cleanup(s, c, later)), range(3, 9));
    c.yearly = 1; // only 2024's first
    EXPECT_EQ(numbers(timeline_cleanup(s, c, later)), (std::vector<uint32_t>{1, 3, 4, 5, 6, 7, 8, 9}));
}

TEST(CleanupTimeline, FixedUtcOffsetMovesPeriodBoundaries)
{
    // Sunday 23:30 UTC and Monday 00:30 UTC.
    std::vector<CleanupCandidate> s = {single(1, utc(2024, 1, 7, 23, 30), "timeline"),
                                       single(2, utc(2024, 1, 8, 0, 30), "timeline")};
    TimelineCleanup daily = timeline_none();
    daily.daily = 10;
    TimelineCleanup weekly = timeline_none();
    weekly.weekly = 10;
    // UTC: two days, two weeks.
    EXPECT_TRUE(timeline_cleanup(s, daily, now0).empty());
    EXPECT_TRUE(timeline_cleanup(s, weekly, now0, LimitBound::max, fixed_utc_offset(0)).empty());
    // UTC-1: both on Sunday.
    EXPECT_EQ(numbers(timeline_cleanup(s, daily, now0, LimitBound::max, fixed_utc_offset(-3600))),
              (std::vector<uint32_t>{2}));
    EXPECT_EQ(numbers(timeline_cleanup(s, weekly, now0, LimitBound::max, fixed_utc_offset(-3600))),
              (std::vector<uint32_t>{2}));
    // UTC+1: both on Monday, same day and week.
    EXPECT_EQ(numbers(timeline_cleanup(s, daily, now0, LimitBound::max, fixed_utc_offset(3600))),
              (std::vector<uint32_t>{2}));
    EXPECT_EQ(numbers(timeline_cleanup(s, weekly, now0, LimitBound::max, fixed_utc_offset(3600))),
              (std::vector<uint32_t>{2}));
    // UTC+0:30 (half-hour zones exist): 00:00 and 01:00 Monday, one day.
    EXPECT_EQ(numbers(timeline_cleanup(s, daily, now0, LimitBound::max, fixed_utc_offset(1800))),
              (std::vector<uint32_t>{2}));
}

TEST(CleanupTimeline, OffsetCallbackFollowsDaylightSavingTime)
{
    // Central Europe, 2024-10-27: 01:00 UTC ends summer time; 00:30 UTC is
    // 02:30 CEST, 01:30 UTC is 02:30 CET: the same local hour twice.
    const int64_t change = utc(2024, 10, 27, 1);
    UtcOffset cet = [change](int64_t t) { return t < change ? 7200 : 3600; };
    std::vector<CleanupCandidate> s = {single(1, utc(2024, 10, 27, 0, 30), "timeline"),
                                       single(2, utc(2024, 10, 27, 1, 30), "timeline")};
    TimelineCleanup c = timeline_none();
    c.hourly = 10;
    EXPECT_TRUE(timeline_cleanup(s, c, later).empty());
    EXPECT_EQ(numbers(timeline_cleanup(s, c, later, LimitBound::max, cet)), (std::vector<uint32_t>{2}));
}

TEST(CleanupTimeline, ClockThatWentBackwards)
{
    // Numbers rank; times pick the period's first. 2 was taken after 1 but
    // its clock says earlier: walking older from 2, snapper finds 1 later in
    // the same hour, so 2 is a first; 1 has nothing older, so it is too.
    std::vector<CleanupCandidate> s = {single(1, utc(2024, 5, 1, 10, 30), "timeline"),
                                       single(2, utc(2024, 5, 1, 10, 10), "timeline"),
                                       single(3, utc(2024, 5, 1, 11, 5), "timeline"),
                                       single(4, utc(2024, 5, 1, 11, 1), "timeline")};
    TimelineCleanup c = timeline_none();
    c.hourly = 10;
    EXPECT_TRUE(timeline_cleanup(s, c, now0).empty());
    // 4: its older neighbour 3 is in the same hour but later -> first.
    // 3: the next older one is in hour 10 -> first. Newest first, the
    // limit of 3 keeps 4, 3 and 2.
    c.hourly = 3;
    EXPECT_EQ(numbers(timeline_cleanup(s, c, now0)), (std::vector<uint32_t>{1}));
}

TEST(CleanupTimeline, SnapshotsAtTheSameSecondAreAllFirst)
{
    const int64_t t = utc(2024, 5, 1, 10, 5);
    std::vector<CleanupCandidate> s = {single(1, t, "timeline"), single(2, t, "timeline"),
                                       single(3, t + 60, "timeline")};
    TimelineCleanup c = timeline_none();
    c.hourly = 10;
    EXPECT_EQ(numbers(timeline_cleanup(s, c, now0)), (std::vector<uint32_t>{3}));
    c.hourly = 1;
    EXPECT_EQ(numbers(timeline_cleanup(s, c, now0)), (std::vector<uint32_t>{1, 3}));
}

TEST(CleanupTimeline, OtherAlgorithmsAreNeitherDeletedNorCounted)
{
    std::vector<CleanupCandidate> s = {
        single(1, utc(2024, 5, 1, 10, 0), "number"),   // would be the hour's first
        single(2, utc(2024, 5, 1, 10, 10), "timeline"),
        single(3, utc(2024, 5, 1, 10, 20), "timeline"),
        single(4, utc(2024, 5, 1, 11, 0), ""),
        single(5, utc(2024, 5, 1, 11, 10), "empty-pre-post"),
        single(6, utc(2024, 5, 1, 12, 0), "timeline"),
    };
    TimelineCleanup c = timeline_none();
    c.hourly = 2;
    EXPECT_EQ(numbers(timeline_cleanup(s, c, now0)), (std::vector<uint32_t>{3}));
    c.hourly = 0;
    EXPECT_EQ(numbers(timeline_cleanup(s, c, now0)), (std::vector<uint32_t>{2, 3, 6}));
}

TEST(CleanupTimeline, RangeMaxWithEnoughSpaceMinWhenShort)
{
    std::vector<CleanupCandidate> s;
    for (uint32_t i = 1; i <= 12; ++i)
        s.push_back(single(i, utc(2024, 5, 1, static_cast<int>(i), 5), "timeline"));
    TimelineCleanup c = timeline_none();
    c.hourly = *LimitRange::parse("2-10");
    EXPECT_EQ(numbers(timeline_cleanup(s, c, now0, LimitBound::max)), range(1, 2));
    EXPECT_EQ(numbers(timeline_cleanup(s, c, now0, LimitBound::min)), range(1, 10));
}

TEST(CleanupTimeline, MinAgeBoundary)
{
    TimelineCleanup c = timeline_none(1800);
    std::vector<CleanupCandidate> s = {single(1, now0 - 1800, "timeline"),
                                       single(2, now0 - 1799, "timeline")};
    EXPECT_EQ(numbers(timeline_cleanup(s, c, now0)), (std::vector<uint32_t>{1}));
}

// ---------------------------------------------------------------- empty-pre-post

struct DiffLog {
    std::set<std::pair<uint32_t, uint32_t>> empty;
    std::vector<std::pair<uint32_t, uint32_t>> asked;
    EmptyDiff fn()
    {
        return [this](uint32_t a, uint32_t b) {
            asked.emplace_back(a, b);
            return empty.contains({a, b});
        };
    }
};

TEST(CleanupEmptyPrePost, DeletesOldEmptyMarkedPairsOnly)
{
    const std::string e = "empty-pre-post";
    std::vector<CleanupCandidate> s = {
        pre(1, old_t, e), post(2, 1, old_t + 1, e),           // empty: goes
        pre(3, old_t, e), post(4, 3, old_t + 1, e),           // changed something
        pre(5, old_t, e), post(6, 5, now0 - 10, e),           // post too young
        pre(7, old_t, e),                                     // no post yet
        pre(8, old_t, "number"), post(9, 8, old_t + 1, "number"), // other mark
        pre(10, old_t, e), post(11, 10, old_t + 1, "number"), // half marked
        single(12, old_t, e),                                 // not a pair
    };
    DiffLog diff;
    diff.empty = {{1, 2}, {5, 6}, {8, 9}, {10, 11}};
    auto r = empty_pre_post_cleanup(s, EmptyPrePostCleanup{}, now0, diff.fn());
    EXPECT_EQ(numbers(r), (std::vector<uint32_t>{1, 2}));
    for (const auto& d : r)
        EXPECT_EQ(d.algorithm, CleanupAlgorithm::empty_pre_post);
    // Comparisons are costly: only pairs that could go were compared.
    EXPECT_EQ(diff.asked, (std::vector<std::pair<uint32_t, uint32_t>>{{1, 2}, {3, 4}}));
}

TEST(CleanupEmptyPrePost, WithoutRequireMarkEveryPairCountsAsSnapperDoes)
{
    std::vector<CleanupCandidate> s = {
        pre(1, old_t, "number"), post(2, 1, old_t + 1, "number"),
        pre(3, old_t, ""), post(4, 3, old_t + 1, "timeline"),
        pre(5, old_t, "empty-pre-post"), post(6, 5, old_t + 1, "empty-pre-post"),
    };
    DiffLog diff;
    diff.empty = {{1, 2}, {3, 4}, {5, 6}};
    EmptyPrePostCleanup c;
    c.require_mark = false;
    EXPECT_EQ(numbers(empty_pre_post_cleanup(s, c, now0, diff.fn())), range(1, 6));
    c.require_mark = true;
    EXPECT_EQ(numbers(empty_pre_post_cleanup(s, c, now0, diff.fn())), (std::vector<uint32_t>{5, 6}));
}

TEST(CleanupEmptyPrePost, OrderIsPreThenPostByPreNumber)
{
    const std::string e = "empty-pre-post";
    std::vector<CleanupCandidate> s = {pre(1, old_t, e), pre(2, old_t, e),
                                       post(3, 1, old_t + 1, e), post(4, 2, old_t + 1, e)};
    auto r = empty_pre_post_cleanup(s, EmptyPrePostCleanup{}, now0,
                                    [](uint32_t, uint32_t) { return true; });
    EXPECT_EQ(numbers(r), (std::vector<uint32_t>{1, 3, 2, 4}));
}

TEST(CleanupEmptyPrePost, MinAgeBoundaryAppliesToBothHalves)
{
    const std::string e = "empty-pre-post";
    EmptyPrePostCleanup c;
    c.min_age = 600;
    std::vector<CleanupCandidate> s = {pre(1, now0 - 900, e), post(2, 1, now0 - 600, e),
                                       pre(3, now0 - 900, e), post(4, 3, now0 - 599, e),
                                       pre(5, now0 - 599, e), post(6, 5, now0 - 599, e)};
    EXPECT_EQ(numbers(empty_pre_post_cleanup(s, c, now0, [](uint32_t, uint32_t) { return true; })),
              (std::vector<uint32_t>{1, 2}));
}

TEST(CleanupEmptyPrePost, NoComparisonNoDeletion)
{
    const std::string e = "empty-pre-post";
    std::vector<CleanupCandidate> s = {pre(1, old_t, e), post(2, 1, old_t + 1, e)};
    EXPECT_TRUE(empty_pre_post_cleanup(s, EmptyPrePostCleanup{}, now0, EmptyDiff{}).empty());
}

// ---------------------------------------------------------------- free space

// A filesystem where every deleted snapshot frees one unit; "enough" once
// `need` units are free. Records every step it is handed.
struct FakeFs {
    size_t need = 0;
    size_t freed = 0;
    std::vector<std::vector<uint32_t>> steps;
    DeleteAndCheck fn()
    {
        return [this](std::span<const Deletion> step) {
            std::vector<uint32_t> nums;
            for (const auto& d : step) {
                EXPECT_TRUE(d.for_free_space);
                nums.push_back(d.number);
            }
            steps.push_back(nums);
            freed += step.size();
            return freed >= need;
        };
    }
};

TEST(CleanupFreeSpace, NothingWhenThereIsAlreadyEnough)
{
    std::vector<CleanupCandidate> s;
    for (uint32_t i = 1; i <= 5; ++i)
        s.push_back(single(i, old_t + i));
    FakeFs fs;
    fs.need = 0;
    CleanupConfig config{number_config(0), std::nullopt, std::nullopt};
    EXPECT_TRUE(free_space_cleanup(s, config, now0, fs.fn()).empty());
    EXPECT_EQ(fs.steps, (std::vector<std::vector<uint32_t>>{{}}));
}

TEST(CleanupFreeSpace, DeletesOneAtATimeDownToTheLowerLimit)
{
    // The ordinary pass ran with the max (4) and left 5..8.
    std::vector<CleanupCandidate> s;
    for (uint32_t i = 5; i <= 8; ++i)
        s.push_back(single(i, old_t + i));
    CleanupConfig config{number_config(LimitRange(2, 4)), std::nullopt, std::nullopt};

    FakeFs fs;
    fs.need = 1;
    EXPECT_EQ(numbers(free_space_cleanup(s, config, now0, fs.fn())), (std::vector<uint32_t>{5}));
    EXPECT_EQ(fs.steps, (std::vector<std::vector<uint32_t>>{{}, {5}}));

    FakeFs never;
    never.need = 100;
    auto r = free_space_cleanup(s, config, now0, never.fn());
    EXPECT_EQ(numbers(r), (std::vector<uint32_t>{5, 6})); // 7, 8 are the lower limit
    EXPECT_EQ(never.steps, (std::vector<std::vector<uint32_t>>{{}, {5}, {6}}));
    for (const auto& d : r) {
        EXPECT_EQ(d.algorithm, CleanupAlgorithm::number);
        EXPECT_TRUE(d.for_free_space);
    }
}

TEST(CleanupFreeSpace, APairIsOneStep)
{
    std::vector<CleanupCandidate> s = {pre(1, old_t), post(2, 1, old_t + 1), single(3, old_t + 2)};
    CleanupConfig config{number_config(LimitRange(0, 5)), std::nullopt, std::nullopt};
    FakeFs fs;
    fs.need = 100;
    free_space_cleanup(s, config, now0, fs.fn());
    EXPECT_EQ(fs.steps, (std::vector<std::vector<uint32_t>>{{}, {1, 2}, {3}}));
}

TEST(CleanupFreeSpace, HeldBackAndYoungSnapshotsAreSkippedNotStoppedAt)
{
    std::vector<CleanupCandidate> s = {pre(1, old_t), post(2, 1, old_t + 1, ""), // held by 2
                                       single(3, now0 - 60),                      // too young
                                       single(4, old_t + 2), single(5, now0 - 30)};
    CleanupConfig config{number_config(0), std::nullopt, std::nullopt};
    FakeFs fs;
    fs.need = 100;
    free_space_cleanup(s, config, now0, fs.fn());
    EXPECT_EQ(fs.steps, (std::vector<std::vector<uint32_t>>{{}, {4}}));
}

TEST(CleanupFreeSpace, ImportantLowerLimitIsRespected)
{
    std::vector<CleanupCandidate> s;
    for (uint32_t i = 1; i <= 6; ++i)
        s.push_back(single(i, old_t + i, "number", i <= 3));
    CleanupConfig config{number_config(LimitRange(1, 6), LimitRange(2, 3)), std::nullopt, std::nullopt};
    FakeFs fs;
    fs.need = 100;
    // Kept: 6 (limit), 3 and 2 (important). Deleted oldest first.
    EXPECT_EQ(numbers(free_space_cleanup(s, config, now0, fs.fn())), (std::vector<uint32_t>{1, 4, 5}));
}

TEST(CleanupFreeSpace, AlgorithmsRunNumberTimelineThenEmptyPrePost)
{
    const std::string e = "empty-pre-post";
    std::vector<CleanupCandidate> s = {
        single(1, utc(2024, 5, 1, 10, 5), "timeline"),
        single(2, utc(2024, 5, 1, 10, 6), "number"),
        pre(3, utc(2024, 5, 1, 10, 7), e), post(4, 3, utc(2024, 5, 1, 10, 8), e),
        single(5, utc(2024, 5, 1, 10, 9), "timeline"),
        single(6, utc(2024, 5, 1, 10, 10), "number"),
    };
    CleanupConfig config{number_config(0), timeline_none(), EmptyPrePostCleanup{}};
    FakeFs fs;
    fs.need = 100;
    auto r = free_space_cleanup(s, config, now0, fs.fn(), [](uint32_t, uint32_t) { return true; });
    EXPECT_EQ(numbers(r), (std::vector<uint32_t>{2, 6, 1, 5, 3, 4}));
    EXPECT_EQ(r[0].algorithm, CleanupAlgorithm::number);
    EXPECT_EQ(r[2].algorithm, CleanupAlgorithm::timeline);
    EXPECT_EQ(r[4].algorithm, CleanupAlgorithm::empty_pre_post);
    EXPECT_EQ(fs.steps.size(), 6u); // measure, 2, 6, 1, 5, {3, 4}

    // Stops in the middle of the second algorithm once there is enough.
    FakeFs some;
    some.need = 3;
    EXPECT_EQ(numbers(free_space_cleanup(s, config, now0, some.fn(),
                                         [](uint32_t, uint32_t) { return true; })),
              (std::vector<uint32_t>{2, 6, 1}));

    // Switched-off algorithms are skipped.
    CleanupConfig only_timeline{std::nullopt, timeline_none(), std::nullopt};
    FakeFs fs2;
    fs2.need = 100;
    EXPECT_EQ(numbers(free_space_cleanup(s, only_timeline, now0, fs2.fn())),
              (std::vector<uint32_t>{1, 5}));
}

TEST(CleanupFreeSpace, TimelineLowerLimits)
{
    std::vector<CleanupCandidate> s;
    for (uint32_t i = 1; i <= 12; ++i)
        s.push_back(single(i, utc(2024, 5, 1, static_cast<int>(i), 5), "timeline"));
    TimelineCleanup t = timeline_none();
    t.hourly = LimitRange(4, 12);
    CleanupConfig config{std::nullopt, t, std::nullopt};
    FakeFs fs;
    fs.need = 100;
    EXPECT_EQ(numbers(free_space_cleanup(s, config, now0, fs.fn())), range(1, 8));
    EXPECT_EQ(fs.steps.size(), 9u);
}

TEST(CleanupFreeSpace, EachPairIsComparedOnce)
{
    const std::string e = "empty-pre-post";
    std::vector<CleanupCandidate> s;
    for (uint32_t i = 1; i <= 20; i += 2) {
        s.push_back(pre(i, old_t + i, e));
        s.push_back(post(i + 1, i, old_t + i + 1, e));
    }
    std::map<std::pair<uint32_t, uint32_t>, int> asked;
    CleanupConfig config{std::nullopt, std::nullopt, EmptyPrePostCleanup{}};
    FakeFs fs;
    fs.need = 100;
    auto r = free_space_cleanup(s, config, now0, fs.fn(), [&](uint32_t a, uint32_t b) {
        ++asked[{a, b}];
        return a % 4 == 1; // pairs 1/2, 5/6, 9/10, ... are empty
    });
    EXPECT_EQ(numbers(r), (std::vector<uint32_t>{1, 2, 5, 6, 9, 10, 13, 14, 17, 18}));
    EXPECT_EQ(asked.size(), 10u);
    for (const auto& [pair, n] : asked)
        EXPECT_EQ(n, 1) << pair.first << "/" << pair.second;
}

TEST(CleanupFreeSpace, ExceptionFromTheCallerStopsAndPropagates)
{
    std::vector<CleanupCandidate> s = {single(1, old_t), single(2, old_t + 1)};
    CleanupConfig config{number_config(0), std::nullopt, std::nullopt};
    int calls = 0;
    EXPECT_THROW(free_space_cleanup(s, config, now0,
                                    [&](std::span<const Deletion> step) -> bool {
                                        if (!step.empty())
                                            throw std::runtime_error("delete failed");
                                        ++calls;
                                        return false;
                                    }),
                 std::runtime_error);
    EXPECT_EQ(calls, 1);
}

TEST(CleanupFreeSpace, NextStepDirectly)
{
    std::vector<CleanupCandidate> s = {pre(1, old_t), single(2, old_t), post(3, 1, old_t)};
    CleanupConfig config{number_config(0), std::nullopt, std::nullopt};
    // The pre waits for its post further on; 2 can go alone and comes first.
    auto step = next_free_space_step(s, CleanupAlgorithm::number, config, now0);
    EXPECT_EQ(numbers(step), (std::vector<uint32_t>{2}));
    EXPECT_TRUE(step[0].for_free_space);
    std::vector<CleanupCandidate> rest = {pre(1, old_t), post(3, 1, old_t)};
    EXPECT_EQ(numbers(next_free_space_step(rest, CleanupAlgorithm::number, config, now0)),
              (std::vector<uint32_t>{1, 3}));
    EXPECT_TRUE(next_free_space_step(s, CleanupAlgorithm::timeline, config, now0).empty());
}

// ---------------------------------------------------------------- properties

struct Scenario {
    std::vector<CleanupCandidate> snaps;
    int64_t now = 0;
};

const char* const marks[] = {"", "number", "timeline", "empty-pre-post"};

Scenario random_scenario(std::mt19937_64& rng)
{
    auto pick = [&](uint64_t n) { return rng() % n; };
    Scenario sc;
    const size_t n = pick(90);
    uint32_t number = 0;
    int64_t t = utc(2023, 1, 1) + static_cast<int64_t>(pick(400 * day_s));
    std::vector<uint32_t> open_pres;
    const int64_t gaps[] = {1, 59, 600, 3600, 4000, day_s, 3 * day_s, 9 * day_s, 40 * day_s};
    for (size_t i = 0; i < n; ++i) {
        number += 1 + (pick(4) == 0 ? static_cast<uint32_t>(pick(3)) : 0);
        // Strictly increasing times: clocks that step back have their own test.
        t += 1 + static_cast<int64_t>(pick(static_cast<uint64_t>(gaps[pick(std::size(gaps))])));
        CleanupCandidate c;
        c.number = number;
        c.time = t;
        c.cleanup = marks[pick(4)];
        c.important = pick(5) == 0;
        const uint64_t kind = pick(10);
        if (kind < 2) {
            c.type = SnapshotKind::pre;
            open_pres.push_back(number);
        } else if (kind < 4 && !open_pres.empty()) {
            c.type = SnapshotKind::post;
            size_t k = pick(open_pres.size());
            c.pre_number = open_pres[k];
            open_pres.erase(open_pres.begin() + static_cast<long>(k));
            if (pick(3) == 0) // often marked like its pre
                c.cleanup = std::string(marks[pick(4)]);
        } else if (kind == 4) {
            c.type = SnapshotKind::post; // its pre was deleted long ago
            c.pre_number = 1000000 + number;
        }
        sc.snaps.push_back(c);
    }
    sc.now = t + static_cast<int64_t>(pick(4 * 3600));
    std::shuffle(sc.snaps.begin(), sc.snaps.end(), rng); // input order must not matter
    return sc;
}

LimitRange random_limit(std::mt19937_64& rng)
{
    uint32_t a = static_cast<uint32_t>(rng() % 8), b = static_cast<uint32_t>(rng() % 8);
    return rng() % 2 ? LimitRange(a) : LimitRange(std::min(a, b), std::max(a, b));
}

int64_t random_min_age(std::mt19937_64& rng)
{
    const int64_t ages[] = {0, 1800, 3600, 7200, day_s, static_cast<int64_t>(rng() % (3 * day_s))};
    return ages[rng() % std::size(ages)];
}

// Reference model, written from snapper's rules rather than from cleanup.cpp.
struct Model {
    std::map<uint32_t, const CleanupCandidate*> by_number;
    explicit Model(const std::vector<CleanupCandidate>& s)
    {
        for (const auto& c : s)
            by_number[c.number] = &c;
    }
    const CleanupCandidate* partner(const CleanupCandidate& c) const
    {
        if (c.type == SnapshotKind::pre) {
            for (const auto& [n, p] : by_number)
                if (p->type == SnapshotKind::post && p->pre_number == c.number)
                    return p;
            return nullptr;
        }
        if (c.type == SnapshotKind::post) {
            auto it = by_number.find(*c.pre_number);
            return it != by_number.end() && it->second->type == SnapshotKind::pre ? it->second : nullptr;
        }
        return nullptr;
    }
    // Candidates (mark matches, not protected, old enough), then the pair rule.
    std::set<uint32_t> deletable(const std::set<uint32_t>& candidates, int64_t cutoff) const
    {
        std::set<uint32_t> old;
        for (auto n : candidates)
            if (by_number.at(n)->time <= cutoff)
                old.insert(n);
        std::set<uint32_t> out;
        for (auto n : old) {
            const CleanupCandidate* p = partner(*by_number.at(n));
            if (!p || old.contains(p->number))
                out.insert(n);
        }
        return out;
    }
    std::vector<const CleanupCandidate*> newest_first(const std::string& mark) const
    {
        std::vector<const CleanupCandidate*> out;
        for (auto it = by_number.rbegin(); it != by_number.rend(); ++it)
            if (it->second->cleanup == mark)
                out.push_back(it->second);
        return out;
    }
};

std::set<uint32_t> as_set(const std::vector<Deletion>& ds)
{
    std::set<uint32_t> out;
    for (const auto& d : ds)
        out.insert(d.number);
    return out;
}

// Independent period keys: libc's gmtime_r and strftime's ISO week.
std::array<std::string, 6> period_names(int64_t t)
{
    time_t tt = static_cast<time_t>(t);
    struct tm tm;
    gmtime_r(&tt, &tm);
    char buf[6][32];
    strftime(buf[0], sizeof buf[0], "%Y-%m-%d %H", &tm);
    strftime(buf[1], sizeof buf[1], "%Y-%m-%d", &tm);
    strftime(buf[2], sizeof buf[2], "%G-W%V", &tm);
    strftime(buf[3], sizeof buf[3], "%Y-%m", &tm);
    snprintf(buf[4], sizeof buf[4], "%d-Q%d", tm.tm_year + 1900, tm.tm_mon / 3 + 1);
    strftime(buf[5], sizeof buf[5], "%Y", &tm);
    return {buf[0], buf[1], buf[2], buf[3], buf[4], buf[5]};
}

void check_common(const Scenario& sc, const Model& m, const std::vector<Deletion>& r,
                  const std::string& mark, bool check_mark, int64_t min_age)
{
    std::set<uint32_t> seen;
    for (const auto& d : r) {
        ASSERT_TRUE(m.by_number.contains(d.number)) << d.number;
        const CleanupCandidate& c = *m.by_number.at(d.number);
        EXPECT_TRUE(seen.insert(d.number).second) << "twice: " << d.number;
        if (check_mark) {
            EXPECT_EQ(c.cleanup, mark) << d.number;
        }
        EXPECT_LE(c.time, sc.now - min_age) << "too young: " << d.number;
    }
    for (const auto& d : r) {
        if (const CleanupCandidate* p = m.partner(*m.by_number.at(d.number))) {
            EXPECT_TRUE(seen.contains(p->number)) << d.number << " went without " << p->number;
        }
    }
}

TEST(CleanupProperty, NumberMatchesTheModel)
{
    std::mt19937_64 rng(0x6c61796572640001);
    for (int iter = 0; iter < 1500; ++iter) {
        SCOPED_TRACE(iter);
        Scenario sc = random_scenario(rng);
        Model m(sc.snaps);
        NumberCleanup c = number_config(random_limit(rng), random_limit(rng), random_min_age(rng));
        for (auto bound : {LimitBound::max, LimitBound::min}) {
            auto r = number_cleanup(sc.snaps, c, sc.now, bound);
            check_common(sc, m, r, "number", true, c.min_age);
            EXPECT_TRUE(std::is_sorted(r.begin(), r.end(),
                                       [](auto& a, auto& b) { return a.number < b.number; }));

            const uint32_t limit = bound == LimitBound::max ? c.limit.max : c.limit.min;
            const uint32_t limit_imp =
                bound == LimitBound::max ? c.limit_important.max : c.limit_important.min;
            std::set<uint32_t> protect, candidates;
            size_t i = 0, imp = 0;
            for (auto* s : m.newest_first("number")) {
                if (i++ < limit)
                    protect.insert(s->number);
                if (s->important && imp++ < limit_imp)
                    protect.insert(s->number);
                if (!protect.contains(s->number))
                    candidates.insert(s->number);
            }
            for (auto n : protect)
                EXPECT_FALSE(as_set(r).contains(n)) << "deleted a kept one: " << n;
            EXPECT_EQ(as_set(r), m.deletable(candidates, sc.now - c.min_age));
        }
    }
}

TEST(CleanupProperty, TimelineMatchesTheModel)
{
    std::mt19937_64 rng(0x6c61796572640002);
    for (int iter = 0; iter < 1500; ++iter) {
        SCOPED_TRACE(iter);
        Scenario sc = random_scenario(rng);
        Model m(sc.snaps);
        TimelineCleanup c;
        c.hourly = random_limit(rng);
        c.daily = random_limit(rng);
        c.weekly = random_limit(rng);
        c.monthly = random_limit(rng);
        c.quarterly = random_limit(rng);
        c.yearly = random_limit(rng);
        c.min_age = random_min_age(rng);
        for (auto bound : {LimitBound::max, LimitBound::min}) {
            auto r = timeline_cleanup(sc.snaps, c, sc.now, bound);
            check_common(sc, m, r, "timeline", true, c.min_age);

            auto lim = [&](const LimitRange& l) { return bound == LimitBound::max ? l.max : l.min; };
            const uint32_t limits[6] = {lim(c.hourly), lim(c.daily), lim(c.weekly),
                                        lim(c.monthly), lim(c.quarterly), lim(c.yearly)};
            auto tl = m.newest_first("timeline");
            std::set<uint32_t> protect, candidates;
            uint32_t kept[6] = {};
            for (size_t i = 0; i < tl.size(); ++i) {
                // Times increase with numbers here, so a snapshot is its
                // period's first when the next older one is in another period.
                auto mine = period_names(tl[i]->time);
                std::array<std::string, 6> older{};
                if (i + 1 < tl.size())
                    older = period_names(tl[i + 1]->time);
                bool keep = false;
                for (int k = 0; k < 6; ++k)
                    if (kept[k] < limits[k] && (i + 1 == tl.size() || mine[k] != older[k])) {
                        ++kept[k];
                        keep = true;
                    }
                (keep ? protect : candidates).insert(tl[i]->number);
            }
            for (auto n : protect)
                EXPECT_FALSE(as_set(r).contains(n)) << "deleted a kept one: " << n;
            EXPECT_EQ(as_set(r), m.deletable(candidates, sc.now - c.min_age));
        }
    }
}

TEST(CleanupProperty, EmptyPrePostMatchesTheModel)
{
    std::mt19937_64 rng(0x6c61796572640003);
    for (int iter = 0; iter < 1500; ++iter) {
        SCOPED_TRACE(iter);
        Scenario sc = random_scenario(rng);
        Model m(sc.snaps);
        EmptyPrePostCleanup c;
        c.min_age = random_min_age(rng);
        c.require_mark = rng() % 4 != 0;
        const uint64_t salt = rng();
        auto is_empty = [salt](uint32_t a, uint32_t b) { return ((a * 31u + b) ^ salt) % 3 != 0; };
        auto r = empty_pre_post_cleanup(sc.snaps, c, sc.now, is_empty);
        check_common(sc, m, r, "empty-pre-post", c.require_mark, c.min_age);

        std::vector<uint32_t> expect;
        for (const auto& [n, s] : m.by_number) {
            if (s->type != SnapshotKind::pre)
                continue;
            const CleanupCandidate* p = m.partner(*s);
            if (!p)
                continue;
            if (c.require_mark && (s->cleanup != "empty-pre-post" || p->cleanup != "empty-pre-post"))
                continue;
            if (s->time > sc.now - c.min_age || p->time > sc.now - c.min_age)
                continue;
            if (is_empty(s->number, p->number)) {
                expect.push_back(s->number);
                expect.push_back(p->number);
            }
        }
        EXPECT_EQ(numbers(r), expect);
    }
}

TEST(CleanupProperty, FreeSpaceRespectsLowerLimitsAgesMarksAndPairs)
{
    std::mt19937_64 rng(0x6c61796572640004);
    for (int iter = 0; iter < 600; ++iter) {
        SCOPED_TRACE(iter);
        Scenario sc = random_scenario(rng);
        Model m(sc.snaps);
        CleanupConfig config;
        if (rng() % 4)
            config.number = number_config(random_limit(rng), random_limit(rng), random_min_age(rng));
        if (rng() % 4) {
            TimelineCleanup t;
            t.hourly = random_limit(rng);
            t.daily = random_limit(rng);
            t.weekly = random_limit(rng);
            t.monthly = random_limit(rng);
            t.quarterly = random_limit(rng);
            t.yearly = random_limit(rng);
            t.min_age = random_min_age(rng);
            config.timeline = t;
        }
        if (rng() % 4) {
            EmptyPrePostCleanup e;
            e.min_age = random_min_age(rng);
            config.empty_pre_post = e;
        }
        auto is_empty = [](uint32_t a, uint32_t b) { return (a + b) % 2 == 1; };

        FakeFs fs;
        fs.need = rng() % 3 == 0 ? 1000 : rng() % 20;
        auto r = free_space_cleanup(sc.snaps, config, sc.now, fs.fn(), is_empty);

        // Stopped exactly when told there was enough, or when out of candidates.
        ASSERT_FALSE(fs.steps.empty());
        size_t total = 0;
        for (const auto& st : fs.steps)
            total += st.size();
        EXPECT_EQ(total, r.size());
        for (size_t i = 1; i < fs.steps.size(); ++i)
            EXPECT_FALSE(fs.steps[i].empty());
        if (fs.freed >= fs.need) { // enough: the last step made it so, no extra step after
            EXPECT_TRUE(fs.steps.size() == 1 ? fs.need == 0
                                             : fs.freed - fs.steps.back().size() < fs.need);
        }

        std::map<CleanupAlgorithm, std::vector<Deletion>> per;
        for (const auto& d : r) {
            EXPECT_TRUE(d.for_free_space);
            per[d.algorithm].push_back(d);
        }
        if (per.contains(CleanupAlgorithm::number)) {
            ASSERT_TRUE(config.number);
            check_common(sc, m, per[CleanupAlgorithm::number], "number", true, config.number->min_age);
            // Run to the end, the steps delete what the one-shot lower-limit
            // pass would; stopped early, a part of it.
            auto full = number_cleanup(sc.snaps, *config.number, sc.now, LimitBound::min);
            // (The order can differ: a pre waiting for its post lets a later
            // single go first.)
            auto got = as_set(per[CleanupAlgorithm::number]);
            auto want = as_set(full);
            if (fs.freed < fs.need)
                EXPECT_EQ(got, want);
            else
                EXPECT_TRUE(std::includes(want.begin(), want.end(), got.begin(), got.end()));
        }
        if (per.contains(CleanupAlgorithm::timeline)) {
            ASSERT_TRUE(config.timeline);
            check_common(sc, m, per[CleanupAlgorithm::timeline], "timeline", true,
                         config.timeline->min_age);
            // Never more than the lower limits allow: the one-shot pass
            // with the lower limits is the most that may go.
            auto most = as_set(timeline_cleanup(sc.snaps, *config.timeline, sc.now, LimitBound::min));
            for (const auto& d : per[CleanupAlgorithm::timeline])
                EXPECT_TRUE(most.contains(d.number)) << d.number;
        }
        if (per.contains(CleanupAlgorithm::empty_pre_post)) {
            ASSERT_TRUE(config.empty_pre_post);
            check_common(sc, m, per[CleanupAlgorithm::empty_pre_post], "empty-pre-post", true,
                         config.empty_pre_post->min_age);
        }
        // Algorithms in snapper's order.
        std::vector<int> order;
        order.reserve(r.size());
        for (const auto& d : r)
            order.push_back(static_cast<int>(d.algorithm));
        EXPECT_TRUE(std::is_sorted(order.begin(), order.end()));
    }
}

} // namespace
