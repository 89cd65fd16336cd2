// SPDX-License-Identifier: LGPL-2.1-or-later
// MountedStack::cleanup() on real stacks (DESIGN §2 "cleanup"): snapper's
// number, timeline and empty-pre-post algorithms wired to the store, the
// free-space pass measured on the state dir's filesystem, and the removal of
// what crashes leave behind. The algorithms themselves are unit-tested as
// pure functions (tests/unit, core/cleanup.hpp); here each expectation is
// what snapper would delete per cleanup.hpp's rules, worked out by hand, and
// every snapshot that stays must still read back what it held.
//
// Snapshot times are set in the database where a test needs ages or
// calendar periods; timeline periods are computed in UTC (TZ=UTC here).
#include "cleanup.hpp"
#include "mounted_stack.hpp"
#include "snapshot_store.hpp"
#include "stack_env.hpp"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace layerd::test {
namespace {

std::string show(const CleanupResult& r)
{
    std::string out = "deleted" + show_numbers(r.deleted) + ", " + std::to_string(r.layers_removed) + " layers removed";
    for (const std::string& f : r.failures)
        out += "\n  failure: " + f;
    return out;
}

SnapshotChanges important()
{
    SnapshotChanges c;
    c.important = true;
    return c;
}

SnapshotChanges without_cleanup_mark()
{
    SnapshotChanges c;
    c.cleanup = "";
    return c;
}

class StackCleanupTest : public StackEnvTest {
protected:
    void SetUp() override
    {
        ::setenv("TZ", "UTC", 1);
        ::tzset();
        ::umask(022);
        fresh_env(false);
        ASSERT_FALSE(HasFatalFailure());
        configure(std::nullopt);
    }

    // A stack mounted with only the given algorithms on and no free-space
    // pass unless asked for.
    void configure(std::optional<NumberCleanup> number, std::optional<TimelineCleanup> timeline = std::nullopt,
                   std::optional<EmptyPrePostCleanup> empty_pre_post = std::nullopt, double free_limit = 0.0)
    {
        if (env_->mounted()) {
            ASSERT_EQ(env_->unmount(), "");
        }
        env_->config.cleanup.number = number;
        env_->config.cleanup.timeline = timeline;
        env_->config.cleanup.empty_pre_post = empty_pre_post;
        env_->config.free_limit = free_limit;
        ASSERT_EQ(env_->mount(), "");
    }

    // A snapshot of what is live now, with a file of its own, recorded in
    // the model.
    uint32_t take(const std::string& cleanup, SnapshotType type = SnapshotType::Single,
                  std::optional<uint32_t> pre = std::nullopt, bool change = true)
    {
        static int counter = 0;
        if (change) {
            std::string path = "/file-" + std::to_string(++counter);
            EXPECT_EQ(write_path(mnt(path), "data " + std::to_string(counter)), 0) << "writing " << path;
            live_[path] = {'f', "data " + std::to_string(counter)};
        }
        MountedStack::NewSnapshot s;
        s.type = type;
        s.pre = pre;
        s.cleanup = cleanup;
        s.description = cleanup + " " + std::to_string(counter);
        uint32_t n = stack().create_snapshot(s);
        snaps_[n] = live_;
        return n;
    }

    // Sets snapshot N's creation time (unix seconds) in the database.
    void set_time(uint32_t n, int64_t time)
    {
        store().database_for_testing().exec("UPDATE snapshots SET time = " + std::to_string(time) +
                                            " WHERE stack = 't' AND number = " + std::to_string(n));
        ASSERT_EQ(store().get_snapshot(kStack, n)->time, time);
    }

    CleanupResult run(std::optional<CleanupAlgorithm> algorithm, int64_t now)
    {
        CleanupResult r;
        try {
            r = stack().cleanup(algorithm, now);
        } catch (const std::exception& e) {
            ADD_FAILURE() << "cleanup(" << (algorithm ? std::string(to_string(*algorithm)) : "all") << "): "
                          << describe(e);
            return r;
        }
        for (uint32_t n : r.deleted)
            snaps_.erase(n);
        return r;
    }

    // What stays reads back what it held, and the live view is untouched.
    void expect_intact(const std::string& when)
    {
        EXPECT_EQ(env_->check_against(live_, snaps_), "") << when;
    }

    static int64_t now() { return static_cast<int64_t>(std::time(nullptr)); }

    Tree live_ = StackEnv::initial_tree();
    std::map<uint32_t, Tree> snaps_;
};

// ------------------------------------------------------------------ number

// number keeps the newest `limit` number-marked snapshots; young ones count
// toward the limit but are not deleted; important ones are counted apart as
// well (and take normal slots too); other marks are not looked at.
TEST_F(StackCleanupTest, NumberKeepsTheNewestWithinLimitAndMinAge)
{
    configure(NumberCleanup{.limit = 3, .limit_important = 1, .min_age = 1000});
    int64_t t0 = now() - 100000;
    std::vector<uint32_t> n;
    for (int i = 0; i < 8; ++i)
        n.push_back(take(i == 2 ? "" : i == 5 ? "timeline" : "number"));
    // n[0..7]: number, number, "", number, number, timeline, number, number.
    // Old: all but n[7], which is 10 s old (young).
    for (int i = 0; i < 7; ++i)
        set_time(n[i], t0 + i * 60);
    set_time(n[7], now() - 10);
    store().update_snapshot(kStack, n[1], important());
    store().update_snapshot(kStack, n[0], important());

    // From the newest number-marked down: n[7] (young, counts), n[6], n[4]
    // fill the limit of 3; n[3] goes; n[1] is the newest important: kept by
    // limit_important 1; n[0], important too, goes.
    CleanupResult r = run(CleanupAlgorithm::number, now());
    EXPECT_EQ(r.deleted, (std::vector<uint32_t>{n[0], n[3]})) << show(r);
    EXPECT_TRUE(r.failures.empty()) << show(r);
    expect_intact("after number cleanup");
    // Run again: nothing more to do.
    r = run(CleanupAlgorithm::number, now());
    EXPECT_TRUE(r.deleted.empty()) << "a second number cleanup deleted more: " << show(r);

    // Time passes: n[7] is old now, but still within the limit.
    r = run(CleanupAlgorithm::number, now() + 2000);
    EXPECT_TRUE(r.deleted.empty()) << show(r);
    // A new number snapshot pushes n[4] out of the newest three.
    uint32_t m = take("number");
    r = run(CleanupAlgorithm::number, now() + 2000);
    EXPECT_EQ(r.deleted, (std::vector<uint32_t>{n[4]})) << show(r);
    EXPECT_EQ(numbers(), (std::set<uint32_t>{n[1], n[2], n[5], n[6], n[7], m})) << "the snapshots left";
    expect_intact("after a second number cleanup");
    ASSERT_EQ(env_->remount(), "");
    expect_intact("after a remount");
}

// Young snapshots are never deleted, even past the limit.
TEST_F(StackCleanupTest, NumberNeverDeletesYoungSnapshots)
{
    configure(NumberCleanup{.limit = 1, .limit_important = 0, .min_age = 3600});
    std::vector<uint32_t> n;
    for (int i = 0; i < 4; ++i)
        n.push_back(take("number"));
    CleanupResult r = run(CleanupAlgorithm::number, now());
    EXPECT_TRUE(r.deleted.empty()) << "snapshots younger than min_age were deleted: " << show(r);
    // Exactly min_age old is old enough.
    int64_t t = now() - 3600;
    for (uint32_t x : n)
        set_time(x, t);
    r = run(CleanupAlgorithm::number, t + 3600);
    EXPECT_EQ(r.deleted, (std::vector<uint32_t>{n[0], n[1], n[2]})) << show(r);
    expect_intact("after number cleanup");
}

// ---------------------------------------------------------------- timeline

// timeline keeps the first snapshot of each of the newest `hourly` hours and
// `daily` days; the rest of the timeline-marked ones go, oldest first.
TEST_F(StackCleanupTest, TimelineKeepsTheFirstOfEachPeriodWithinItsLimits)
{
    configure(std::nullopt, TimelineCleanup{.hourly = 2, .daily = 2, .weekly = 0, .monthly = 0, .quarterly = 0,
                                            .yearly = 0, .min_age = 0});
    // 2026-01-05 (a Monday) and 2026-01-06, UTC.
    const int64_t day1 = 1767571200, day2 = day1 + 86400;
    struct At {
        int64_t time;
        const char* name;
    };
    const std::vector<At> times = {
        {day1 + 10 * 3600 + 5 * 60, "day1 10:05"},  // first of day1 and of its hour
        {day1 + 10 * 3600 + 40 * 60, "day1 10:40"}, // same hour, later: not a first
        {day1 + 11 * 3600 + 5 * 60, "day1 11:05"},  // first of its hour only
        {day2 + 9 * 3600 + 5 * 60, "day2 09:05"},   // first of day2 and of its hour
        {day2 + 9 * 3600 + 30 * 60, "day2 09:30"},  // not a first
        {day2 + 10 * 3600 + 5 * 60, "day2 10:05"},  // first of its hour
    };
    std::vector<uint32_t> t;
    for (const At& at : times) {
        t.push_back(take("timeline"));
        set_time(t.back(), at.time);
    }
    uint32_t unmarked = take("");
    uint32_t numbered = take("number");
    set_time(unmarked, day1);
    set_time(numbered, day1);
    // Newest first: day2 10:05 (hourly 1), day2 09:05 (hourly 2, daily 1),
    // day1 11:05 (hourly full, not first of day1), day1 10:05 (daily 2).
    CleanupResult r = run(CleanupAlgorithm::timeline, day2 + 86400);
    EXPECT_EQ(r.deleted, (std::vector<uint32_t>{t[1], t[2], t[4]}))
        << show(r) << " (expected day1 10:40, day1 11:05, day2 09:30)";
    EXPECT_TRUE(r.failures.empty()) << show(r);
    EXPECT_EQ(numbers(), (std::set<uint32_t>{t[0], t[3], t[5], unmarked, numbered})) << "the snapshots left";
    expect_intact("after timeline cleanup");
}

// ---------------------------------------------------------- empty-pre-post

// A pre/post pair with nothing changed between goes (pre, then post); a pair
// with a change stays, and so does an empty pair not marked for it.
TEST_F(StackCleanupTest, EmptyPrePostDeletesOnlyPairsWithAnEmptyDiff)
{
    configure(std::nullopt, std::nullopt, EmptyPrePostCleanup{.min_age = 0, .require_mark = true});
    uint32_t pre1 = take("empty-pre-post", SnapshotType::Pre);
    uint32_t post1 = take("empty-pre-post", SnapshotType::Post, pre1, false); // nothing changed
    uint32_t pre2 = take("empty-pre-post", SnapshotType::Pre);
    uint32_t post2 = take("empty-pre-post", SnapshotType::Post, pre2, true); // a file written
    uint32_t pre3 = take("empty-pre-post", SnapshotType::Pre);
    ASSERT_EQ(::chmod(mnt("/a").c_str(), 0600), 0); // only a mode changed
    uint32_t post3 = take("empty-pre-post", SnapshotType::Post, pre3, false);
    uint32_t pre4 = take("number", SnapshotType::Pre);
    uint32_t post4 = take("number", SnapshotType::Post, pre4, false); // empty, but marked number
    uint32_t pre5 = take("empty-pre-post", SnapshotType::Pre);
    uint32_t post5 = take("empty-pre-post", SnapshotType::Post, pre5, false); // empty
    CleanupResult r = run(CleanupAlgorithm::empty_pre_post, now());
    EXPECT_EQ(r.deleted, (std::vector<uint32_t>{pre1, post1, pre5, post5})) << show(r);
    EXPECT_TRUE(r.failures.empty()) << show(r);
    EXPECT_EQ(numbers(), (std::set<uint32_t>{pre2, post2, pre3, post3, pre4, post4})) << "the snapshots left";
    // A snapshot's view is what was live when it was taken; post3 has the mode.
    EXPECT_EQ(lstat_of(mnt("/a")).st_mode & 07777, 0600u) << "the live /a lost the mode changed before post3";
    expect_intact("after empty-pre-post cleanup");
    ASSERT_EQ(env_->remount(), "");
    expect_intact("after a remount");
}

// ------------------------------------------------ marks, order, algorithms

// A snapshot whose cleanup is "" is never removed: not by any algorithm,
// not by all of them at once, not for free space. A disabled algorithm
// deletes nothing.
TEST_F(StackCleanupTest, UnmarkedSnapshotsAreNeverRemoved)
{
    std::vector<uint32_t> keep;
    for (int i = 0; i < 3; ++i)
        keep.push_back(take(""));
    uint32_t pre = take("", SnapshotType::Pre);
    uint32_t post = take("", SnapshotType::Post, pre, false);
    keep.push_back(pre);
    keep.push_back(post);
    for (uint32_t n : keep)
        set_time(n, 1000000000);
    // Everything switched off: asking for one algorithm deletes nothing.
    configure(std::nullopt);
    uint32_t numbered = take("number");
    set_time(numbered, 1000000000);
    CleanupResult r = run(CleanupAlgorithm::number, now());
    EXPECT_TRUE(r.deleted.empty()) << "number cleanup ran though it is switched off: " << show(r);

    configure(NumberCleanup{.limit = 0, .limit_important = 0, .min_age = 0},
              TimelineCleanup{.hourly = 0, .daily = 0, .weekly = 0, .monthly = 0, .quarterly = 0, .yearly = 0,
                              .min_age = 0},
              EmptyPrePostCleanup{.min_age = 0, .require_mark = true}, 0.999);
    r = run(std::nullopt, now());
    EXPECT_EQ(r.deleted, (std::vector<uint32_t>{numbered})) << show(r);
    for (uint32_t n : keep)
        EXPECT_TRUE(store().get_snapshot(kStack, n).has_value()) << "snapshot " << n << " (cleanup \"\") was removed";
    expect_intact("after cleanup of everything marked");
}

// One run of every algorithm: number's deletions first (oldest first), then
// timeline's, then empty-pre-post's, in CleanupResult::deleted order.
TEST_F(StackCleanupTest, DeletionOrderIsPerAlgorithmOldestFirst)
{
    configure(NumberCleanup{.limit = 1, .limit_important = 0, .min_age = 0},
              TimelineCleanup{.hourly = 1, .daily = 0, .weekly = 0, .monthly = 0, .quarterly = 0, .yearly = 0,
                              .min_age = 0},
              EmptyPrePostCleanup{.min_age = 0, .require_mark = true});
    const int64_t hour = 1767571200 + 8 * 3600;
    uint32_t pre = take("empty-pre-post", SnapshotType::Pre);
    uint32_t post = take("empty-pre-post", SnapshotType::Post, pre, false);
    uint32_t t1 = take("timeline");
    uint32_t n1 = take("number");
    uint32_t t2 = take("timeline");
    uint32_t n2 = take("number");
    uint32_t n3 = take("number");
    uint32_t t3 = take("timeline");
    set_time(t1, hour);          // first of its hour, but older than t3's hour
    set_time(t2, hour + 600);    // not a first
    set_time(t3, hour + 3600);   // the newest hour: kept
    CleanupResult r = run(std::nullopt, now() + 10);
    EXPECT_EQ(r.deleted, (std::vector<uint32_t>{n1, n2, t1, t2, pre, post})) << show(r);
    EXPECT_EQ(numbers(), (std::set<uint32_t>{n3, t3})) << "the snapshots left";
    expect_intact("after cleanup with every algorithm");
}

// ------------------------------------------------------------ free space

// Limits as ranges "2-5": the ordinary pass keeps 5. With free_limit
// high (the filesystem is always short), the free-space pass goes on one
// snapshot at a time down to the lower limit, 2, and no further.
TEST_F(StackCleanupTest, FreeSpacePassDeletesDownToTheLowerLimitOnly)
{
    if (std::string why = LoopFs::unavailable(); !why.empty())
        GTEST_SKIP() << why;
    fresh_env(false, StackEnvOptions{.state_fs_mebibytes = 64});
    ASSERT_FALSE(HasFatalFailure());
    NumberCleanup number{.limit = LimitRange(2, 5), .limit_important = LimitRange(0, 0), .min_age = 0};
    configure(number, std::nullopt, std::nullopt, 0.0);
    std::vector<uint32_t> n;
    for (int i = 0; i < 8; ++i)
        n.push_back(take("number"));
    uint32_t unmarked = take("");
    // Enough space (no free limit): the upper limit.
    CleanupResult r = run(CleanupAlgorithm::number, now());
    EXPECT_EQ(r.deleted, (std::vector<uint32_t>{n[0], n[1], n[2]})) << show(r);
    // Never enough space: down to the lower limit, oldest first.
    configure(number, std::nullopt, std::nullopt, 1.0);
    r = run(CleanupAlgorithm::number, now());
    EXPECT_EQ(r.deleted, (std::vector<uint32_t>{n[3], n[4], n[5]})) << show(r);
    EXPECT_EQ(numbers(), (std::set<uint32_t>{n[6], n[7], unmarked})) << "the snapshots left";
    EXPECT_TRUE(r.failures.empty()) << show(r);
    expect_intact("after the free-space pass");
    r = run(CleanupAlgorithm::number, now());
    EXPECT_TRUE(r.deleted.empty()) << "below the lower limit: " << show(r);
}

// The free-space pass stops once enough is free: each snapshot holds 4 MiB
// of its own (overwritten by the next), the state fs is 64 MiB, and
// free_limit asks for half of it free. Deleting old snapshots frees their
// data; the pass deletes oldest first and stops at the first point where
// the filesystem has enough, before the lower limit.
TEST_F(StackCleanupTest, FreeSpacePassStopsWhenEnoughIsFree)
{
    if (std::string why = LoopFs::unavailable(); !why.empty())
        GTEST_SKIP() << why;
    fresh_env(false, StackEnvOptions{.state_fs_mebibytes = 64});
    ASSERT_FALSE(HasFatalFailure());
    NumberCleanup number{.limit = LimitRange(1, 9), .limit_important = LimitRange(0, 0), .min_age = 0};
    configure(number, std::nullopt, std::nullopt, 0.5);
    LoopFs& disk = *env_->disk();
    std::vector<uint32_t> n;
    for (int i = 0; i < 9; ++i) {
        std::string data(4 << 20, static_cast<char>('a' + i));
        ASSERT_EQ(write_path(mnt("/big"), data), 0) << "writing 4 MiB, snapshot " << i;
        live_["/big"] = {'f', data};
        n.push_back(take("number"));
    }
    ::sync();
    auto free_fraction = [&] {
        struct statvfs st {};
        ::statvfs(disk.mountpoint().c_str(), &st);
        return static_cast<double>(st.f_bavail) / static_cast<double>(st.f_blocks);
    };
    double before = free_fraction();
    std::printf("before cleanup: %.0f%% of the state fs free\n", before * 100);
    ASSERT_LT(before, 0.5) << "the test did not fill the state fs enough";
    CleanupResult r = run(CleanupAlgorithm::number, now());
    ::sync();
    double after = free_fraction();
    std::printf("after cleanup: %.0f%% free, %s\n", after * 100, show(r).c_str());
    EXPECT_TRUE(r.failures.empty()) << show(r);
    ASSERT_FALSE(r.deleted.empty()) << "nothing deleted with " << before * 100 << "% free and free_limit 50%";
    // Oldest first, a prefix of n.
    for (size_t i = 0; i < r.deleted.size(); ++i)
        EXPECT_EQ(r.deleted[i], n[i]) << "deletion " << i << ": " << show(r);
    EXPECT_GE(after, 0.5) << "the pass stopped with too little free (" << show(r) << ")";
    EXPECT_LT(r.deleted.size(), 8u) << "the pass went down to the lower limit though less would do";
    expect_intact("after the free-space pass");
}

// ------------------------------------------------------ what crashes leave

// Cleanup also removes what a crash leaves: a layer no snapshot and no view
// uses (its snapshot's row went, its layer stayed), an empty layer dir the
// database does not know, leftovers in merge/. A layer with one frozen child
// is merged into it; a non-empty unknown dir is not guessed about.
TEST_F(StackCleanupTest, AbandonedLayersAndLeftoversAreRemoved)
{
    configure(NumberCleanup{.limit = 50, .limit_important = 10, .min_age = 0});
    uint32_t s1 = take("number");
    put(&live_, "/on-branch", "only on the abandoned branch");
    uint32_t s2 = take("number");
    uint32_t back = stack().rollback(s1, false, 0); // back's layer: a leaf on s2's
    snaps_[back] = live_;
    live_ = snaps_[s1];
    uint32_t s3 = take("number");
    int64_t leaf = store().get_snapshot(kStack, back)->layer;
    int64_t middle = store().get_snapshot(kStack, s2)->layer;
    // A crash after the rows went, before the layers did.
    ASSERT_TRUE(store().delete_snapshot_row(kStack, back));
    ASSERT_TRUE(store().delete_snapshot_row(kStack, s2));
    snaps_.erase(back);
    snaps_.erase(s2);
    // And leftovers: an empty unknown layer dir, a non-empty one, merge trash.
    ASSERT_EQ(::mkdir((env_->layers_root() + "/900001").c_str(), 0755), 0);
    ASSERT_EQ(::mkdir((env_->layers_root() + "/900002").c_str(), 0755), 0);
    ASSERT_EQ(write_path(env_->layers_root() + "/900002/keep", "not ours to guess"), 0);
    std::string merge_dir = env_->config.state_dir + "/stacks/t/merge";
    ASSERT_EQ(write_path(merge_dir + "/leftover", "trash"), 0);

    CleanupResult r = run(std::nullopt, now());
    EXPECT_TRUE(r.deleted.empty()) << "no snapshot is over any limit: " << show(r);
    EXPECT_TRUE(r.failures.empty()) << show(r);
    EXPECT_GE(r.layers_removed, 3u) << "two abandoned layers, an empty unknown dir, merge trash: " << show(r);
    EXPECT_FALSE(store().get_layer(leaf).has_value()) << "the abandoned leaf layer " << leaf << " stays";
    EXPECT_FALSE(store().get_layer(middle).has_value()) << "the abandoned layer " << middle << " stays";
    EXPECT_FALSE(exists(env_->layer_dir(leaf))) << "the abandoned leaf's dir stays";
    EXPECT_FALSE(exists(env_->layers_root() + "/900001")) << "an empty layer dir unknown to the database stays";
    EXPECT_TRUE(exists(env_->layers_root() + "/900002/keep")) << "cleanup removed a non-empty dir it does not know";
    EXPECT_FALSE(exists(merge_dir + "/leftover")) << "merge/ leftovers stay with no merge in progress";
    EXPECT_EQ(numbers(), (std::set<uint32_t>{s1, s3})) << "the snapshots left";
    expect_intact("after removing the abandoned layers");
    ASSERT_EQ(env_->remount(), "");
    expect_intact("after a remount");
}

// ------------------------------------------------------------ a failure

// FS_IOC_SETFLAGS on PATH: the immutable bit on or off. 0 or -errno.
int set_immutable(const std::string& path, bool on)
{
    Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    if (fd.fd < 0)
        return -errno;
    int flags = 0;
    if (::ioctl(fd.fd, FS_IOC_GETFLAGS, &flags) != 0)
        return -errno;
    flags = on ? (flags | FS_IMMUTABLE_FL) : (flags & ~FS_IMMUTABLE_FL);
    return ::ioctl(fd.fd, FS_IOC_SETFLAGS, &flags) == 0 ? 0 : -errno;
}

// A snapshot whose layer cannot be merged away (an immutable file in it:
// the rename into its child fails with EPERM) is reported in failures; the
// others on the list still go. Recovery finishes it once the flag is gone.
TEST_F(StackCleanupTest, ASnapshotThatFailsToDeleteDoesNotStopTheRest)
{
    configure(NumberCleanup{.limit = 0, .limit_important = 0, .min_age = 0});
    uint32_t s1 = take("");
    put(&live_, "/stuck", "immutable");
    uint32_t stuck = take("number");
    // The state before the rollback, kept as `back` (its layer a child of
    // stuck's), is not for cleanup to take.
    uint32_t back = stack().rollback(s1, false, 0);
    store().update_snapshot(kStack, back, without_cleanup_mark());
    snaps_[back] = live_;
    live_ = snaps_[s1];
    uint32_t a = take("number");
    uint32_t b = take("number");
    std::string file = env_->layer_dir(store().get_snapshot(kStack, stuck)->layer) + "/stuck";
    ASSERT_TRUE(exists(file)) << file;
    int r0 = set_immutable(file, true);
    if (r0 == -ENOTTY || r0 == -EOPNOTSUPP)
        GTEST_SKIP() << "the temp dir's filesystem has no immutable flag: " << errno_text(-r0);
    ASSERT_EQ(r0, 0) << "chattr +i " << file << ": " << errno_text(-r0);
    CleanupResult r = run(CleanupAlgorithm::number, now());
    EXPECT_EQ(set_immutable(file, false), 0) << "chattr -i " << file;
    std::printf("%s\n", show(r).c_str());
    EXPECT_EQ(r.deleted, (std::vector<uint32_t>{a, b})) << "the snapshots after the stuck one: " << show(r);
    ASSERT_EQ(r.failures.size(), 1u) << show(r);
    EXPECT_NE(r.failures[0].find(std::to_string(stuck)), std::string::npos)
        << "the failure does not name snapshot " << stuck << ": " << r.failures[0];
    // The stuck snapshot is either still listed whole or gone; the rest is intact.
    if (store().get_snapshot(kStack, stuck)) {
        EXPECT_EQ(tree_mismatch(snaps_[stuck], snapshot(stuck)), "") << "the snapshot that failed to go";
    }
    snaps_.erase(stuck);
    EXPECT_EQ(tree_mismatch(live_, live()), "") << "the live view after a failed deletion";
    for (uint32_t n : {s1, back})
        EXPECT_EQ(tree_mismatch(snaps_[n], snapshot(n)), "") << "snapshot " << n;
    // With the flag gone, a remount (recovery) and another cleanup finish it.
    ASSERT_EQ(env_->remount(), "");
    r = run(CleanupAlgorithm::number, now());
    EXPECT_TRUE(r.failures.empty()) << show(r);
    EXPECT_EQ(numbers(), (std::set<uint32_t>{s1, back})) << "the snapshots left";
    EXPECT_FALSE(exists(file)) << "the stuck layer's file stays after recovery and cleanup";
    expect_intact("after the stuck snapshot went");
}

} // namespace
} // namespace layerd::test
