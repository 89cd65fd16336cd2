// SPDX-License-Identifier: LGPL-2.1-or-later
// Snapshot operations on bad input and in bad conditions (DESIGN §2, §5),
// through layerd::MountedStack on a real mount and a real SQLite file: the
// issue's "unknown ids, deleting the live layer's parent chain, rollback to
// a hidden layer, a full disk during freeze or merge → specific errors,
// nothing lost".
//
// - unknown numbers are refused with NoSuchSnapshot and change nothing;
// - every snapshot in the live layer's chain deleted, in several orders: the
//   live view stays, also across a remount, and the depth comes back down;
// - branches (a rollback gives a layer two children; deleting its snapshot
//   hides it): rollbacks next to a hidden layer and deleting the snapshot
//   just rolled back to show exactly what the snapshot held;
// - the state dir on a small loop-mounted ext4, filled to a few blocks:
//   create, rollback and delete (a merge) each succeed or fail with
//   SnapshotError(Io) saying why; every recorded snapshot still reads back
//   whole, the live view is intact, the database is consistent, and after
//   freeing space and remounting everything works.
#include "layer_diff.hpp"
#include "mounted_stack.hpp"
#include "snapshot_store.hpp"
#include "stack_env.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace layerd::test {
namespace {

class SnapshotFaultTest : public StackEnvTest {
protected:
    void expect_state(const Tree& live, const std::map<uint32_t, Tree>& snaps, const std::string& when)
    {
        EXPECT_EQ(env_->check_against(live, snaps), "") << when;
    }
};

// ------------------------------------------------------------ unknown ids

// Unknown numbers (never used, deleted, 0 where 0 is no snapshot) are
// refused with NoSuchSnapshot and change nothing.
TEST_F(SnapshotFaultTest, UnknownSnapshotNumbersAreRefusedAndChangeNothing)
{
    ASSERT_EQ(write_path(mnt("/f"), "one"), 0);
    uint32_t s1 = create("s1");
    ASSERT_EQ(write_path(mnt("/f"), "two"), 0);
    uint32_t gone = create("gone");
    // Away from gone's layer first, so deleting it merges it into a frozen
    // layer outside the live view (not into the live upper).
    uint32_t back = stack().rollback(s1, false, 0);
    stack().delete_snapshots({gone});
    ASSERT_EQ(write_path(mnt("/f"), "three"), 0);

    const auto none = SnapshotError::Kind::NoSuchSnapshot;
    for (uint32_t n : {gone, 999u, 0xffffffffu, s1 + 1000}) {
        SCOPED_TRACE("snapshot " + std::to_string(n));
        expect_refused(none, "rollback", [&] { stack().rollback(n, false, 0); });
        expect_refused(none, "rollback next_mount", [&] { stack().rollback(n, true, 0); });
        expect_refused(none, "delete_snapshots", [&] { stack().delete_snapshots({n}); });
        int called = 0;
        expect_refused(none, "diff(n, s1)", [&] { stack().diff(n, s1, [&](const DiffEntry&) { ++called; }); });
        expect_refused(none, "diff(s1, n)", [&] { stack().diff(s1, n, [&](const DiffEntry&) { ++called; }); });
        expect_refused(none, "diff(n, 0)", [&] { stack().diff(n, 0, [&](const DiffEntry&) { ++called; }); });
        EXPECT_EQ(called, 0) << "a diff with an unknown snapshot reported entries";
        MountedStack::NewSnapshot post;
        post.type = SnapshotType::Post;
        post.pre = n;
        expect_refused(none, "create_snapshot(post of n)", [&] { stack().create_snapshot(post); });
    }
    // 0 is the live view, never a snapshot to roll back to or delete.
    {
        std::string before = env_->fingerprint();
        for (bool next : {false, true}) {
            try {
                stack().rollback(0, next, 0);
                ADD_FAILURE() << "rollback(0) succeeded";
            } catch (const SnapshotError& e) {
                EXPECT_TRUE(e.kind() == SnapshotError::Kind::NoSuchSnapshot ||
                            e.kind() == SnapshotError::Kind::InvalidArgument)
                    << describe(e);
            }
        }
        try {
            stack().delete_snapshots({0});
            ADD_FAILURE() << "delete_snapshots({0}) succeeded";
        } catch (const SnapshotError& e) {
            EXPECT_TRUE(e.kind() == SnapshotError::Kind::NoSuchSnapshot ||
                        e.kind() == SnapshotError::Kind::InvalidArgument)
                << describe(e);
        }
        EXPECT_EQ(env_->fingerprint(), before) << "refusing snapshot 0 changed something";
    }
    // The stack still works, and the good snapshot is intact.
    EXPECT_EQ(snapshot(s1).at("/f").data, "one") << "snapshot s1 after the refused calls";
    uint32_t saved = stack().rollback(s1, false, 0);
    std::string data;
    EXPECT_EQ(read_path(mnt("/f"), &data), 0) << "reading /f after a rollback to s1";
    EXPECT_EQ(data, "one") << "the live /f after a rollback to s1";
    EXPECT_EQ(snapshot(saved).at("/f").data, "three") << "the state kept before the rollback";

    // A list with one unknown number: the others are deleted, the failure is thrown at the end.
    uint32_t s2 = create("s2");
    try {
        stack().delete_snapshots({s2, 999u});
        ADD_FAILURE() << "delete_snapshots({s2, 999}) did not report 999";
    } catch (const SnapshotError& e) {
        EXPECT_EQ(e.kind(), SnapshotError::Kind::NoSuchSnapshot)
            << "the only failure was an unknown number, so the error should stay NoSuchSnapshot: " << describe(e);
    }
    EXPECT_EQ(numbers(), (std::set<uint32_t>{s1, back, saved})) << "the snapshots left after deleting {s2, 999}";
}

// ---------------------------------------------- the live layer's chain

// Three snapshots in a line under the live layer, all deleted (one order per
// pass): the live view never changes, a remount shows the same, the stack
// goes on working, and the next snapshot takes the merged content. The
// depth comes back down, so a stack at its depth limit recovers by deleting
// snapshots as the DepthLimit error says.
TEST_F(SnapshotFaultTest, DeletingEverySnapshotOfTheLiveChainKeepsTheLiveView)
{
    const std::vector<std::vector<int>> orders = {{2, 1, 0}, {0, 1, 2}, {1, 0, 2}, {-1}};
    for (const auto& order : orders) {
        std::string name = order[0] < 0 ? "all at once" : "order";
        for (int i : order)
            if (i >= 0)
                name += " " + std::to_string(i);
        SCOPED_TRACE(name);
        fresh_env(false);
        ASSERT_FALSE(HasFatalFailure());
        env_->config.max_depth = 3;
        ASSERT_EQ(env_->mount(), "");
        Tree live = StackEnv::initial_tree();
        std::vector<uint32_t> s;
        put(&live, "/f", "one");
        ASSERT_EQ(::mkdir(mnt("/n").c_str(), 0755), 0);
        live["/n"] = {'d', ""};
        put(&live, "/n/1", "in n");
        s.push_back(create("s0"));
        put(&live, "/f", "two");
        ASSERT_EQ(::unlink(mnt("/a").c_str()), 0);
        live.erase("/a");
        put(&live, "/d/b", "B");
        s.push_back(create("s1"));
        put(&live, "/n/2", "also in n");
        ASSERT_EQ(::rename(mnt("/x").c_str(), mnt("/n/x").c_str()), 0);
        live["/n/x"] = live["/x"];
        live.erase("/x");
        s.push_back(create("s2"));
        put(&live, "/g", "live only");
        ASSERT_EQ(stack().depth(), 3u);
        try {
            create("one too deep");
            ADD_FAILURE() << "a fourth snapshot with max_depth 3 was not refused";
        } catch (const SnapshotError& e) {
            EXPECT_EQ(e.kind(), SnapshotError::Kind::DepthLimit) << describe(e);
        }
        std::map<uint32_t, Tree> none;
        if (order[0] < 0) {
            stack().delete_snapshots(s);
        } else {
            std::set<uint32_t> left(s.begin(), s.end());
            for (int i : order) {
                stack().delete_snapshots({s[i]});
                left.erase(s[i]);
                EXPECT_EQ(tree_mismatch(live, this->live()), "") << "after deleting snapshot " << s[i];
                std::set<uint32_t> listed = numbers();
                EXPECT_EQ(listed, left) << "after deleting snapshot " << s[i];
            }
        }
        expect_state(live, none, "every snapshot of the chain deleted");
        put(&live, "/after", "written after the deletes");
        ASSERT_EQ(env_->remount(), "");
        expect_state(live, none, "after a remount");
        // The depth limit must not keep the stack stuck: nothing is left to delete.
        uint32_t n = 0;
        try {
            n = create("after the deletes");
        } catch (const std::exception& e) {
            ADD_FAILURE() << "create_snapshot after deleting every snapshot (depth " << stack().depth()
                          << ", max_depth 3): " << describe(e);
        }
        if (n != 0) {
            expect_state(live, {{n, live}}, "a snapshot taken after the deletes");
            EXPECT_EQ(stack().depth(), 1u)
                << "the deleted snapshots' layers still sit under the live one after the next snapshot";
            ASSERT_EQ(env_->remount(), "");
            expect_state(live, {{n, live}}, "after a second remount");
        }
    }
}

// ------------------------------------------------------------ branches

// A rollback gives a layer a second child; deleting that layer's snapshot
// then hides it. Its number is gone (rollback to it: NoSuchSnapshot), and the
// snapshots on both branches above it, and rollbacks to them, show exactly
// what they held. When one branch goes, the hidden layer is merged into the
// other.
TEST_F(SnapshotFaultTest, RollbackNextToAHiddenLayerShowsTheSnapshot)
{
    std::map<uint32_t, Tree> snaps;
    Tree live = StackEnv::initial_tree();
    put(&live, "/f", "base");
    put(&live, "/d/b", "shared");
    uint32_t s1 = create("s1");
    snaps[s1] = live;
    put(&live, "/f", "branch one");
    ASSERT_EQ(::unlink(mnt("/a").c_str()), 0);
    live.erase("/a");
    uint32_t s2 = create("s2");
    snaps[s2] = live;
    put(&live, "/f", "branch one, later");
    uint32_t s3 = stack().rollback(s1, false, 0); // s3: branch one's end; live on s1's layer
    snaps[s3] = live;
    live = snaps[s1];
    put(&live, "/f", "branch two");
    put(&live, "/two", "only on branch two");
    int64_t hidden = store().get_snapshot(kStack, s1)->layer;
    expect_state(live, snaps, "two branches on s1's layer");

    stack().delete_snapshots({s1});
    snaps.erase(s1);
    auto rec = store().get_layer(hidden);
    ASSERT_TRUE(rec.has_value()) << "s1's layer " << hidden << " was removed though two branches stand on it";
    EXPECT_EQ(rec->state, LayerState::Hidden) << "s1's layer with two children after its snapshot went";
    expect_state(live, snaps, "s1 deleted, its layer hidden");
    expect_refused(SnapshotError::Kind::NoSuchSnapshot, "rollback to the deleted s1",
                   [&] { stack().rollback(s1, false, 0); });

    // Over to branch one, whose bottom is the hidden layer.
    uint32_t s4 = stack().rollback(s2, false, 0);
    snaps[s4] = live;
    live = snaps[s2];
    expect_state(live, snaps, "rolled back to s2, over the hidden layer");
    put(&live, "/three", "after the rollback to s2");
    ASSERT_EQ(env_->remount(), "");
    expect_state(live, snaps, "after a remount");

    // Branch two (s4's layer, a leaf now) goes: the hidden layer has one
    // child left and is merged into it.
    stack().delete_snapshots({s4});
    snaps.erase(s4);
    expect_state(live, snaps, "branch two deleted");
    EXPECT_FALSE(store().get_layer(hidden).has_value())
        << "the hidden layer " << hidden << " stays after its second child went";
    ASSERT_EQ(env_->remount(), "");
    expect_state(live, snaps, "after a remount");
    uint32_t s5 = stack().rollback(s3, false, 0);
    snaps[s5] = live;
    live = snaps[s3];
    expect_state(live, snaps, "rolled back to s3 after the merge");
}

// Rolling back to a snapshot and deleting it: the view stays what the
// snapshot held (its layer now under the live one, waiting), across
// remounts, more snapshots and the deletion of the other branch.
TEST_F(SnapshotFaultTest, DeletingTheSnapshotJustRolledBackToKeepsItsView)
{
    std::map<uint32_t, Tree> snaps;
    Tree live = StackEnv::initial_tree();
    put(&live, "/f", "at s1");
    ASSERT_EQ(::mkdir(mnt("/n").c_str(), 0755), 0);
    live["/n"] = {'d', ""};
    put(&live, "/n/k", "kept");
    uint32_t s1 = create("s1");
    snaps[s1] = live;
    put(&live, "/f", "at s2");
    ASSERT_EQ(::unlink(mnt("/n/k").c_str()), 0);
    live.erase("/n/k");
    uint32_t s2 = create("s2");
    snaps[s2] = live;
    uint32_t s3 = stack().rollback(s1, false, 0);
    snaps[s3] = live;
    live = snaps[s1];

    stack().delete_snapshots({s1});
    snaps.erase(s1);
    expect_state(live, snaps, "s1 deleted right after the rollback to it");
    expect_refused(SnapshotError::Kind::NoSuchSnapshot, "a second delete of s1",
                   [&] { stack().delete_snapshots({s1}); });
    put(&live, "/n/new", "after");
    ASSERT_EQ(env_->remount(), "");
    expect_state(live, snaps, "after a remount");
    uint32_t s4 = create("s4");
    snaps[s4] = live;
    expect_state(live, snaps, "a snapshot over s1's former layer");
    // The other branch goes; s1's layer is left with one child and merges.
    stack().delete_snapshots({s2, s3});
    snaps.erase(s2);
    snaps.erase(s3);
    expect_state(live, snaps, "the other branch deleted");
    ASSERT_EQ(env_->remount(), "");
    expect_state(live, snaps, "after a remount");
    EXPECT_EQ(stack().depth(), 1u) << "s1's layer did not merge into s4's once it had one child";
    uint32_t s5 = stack().rollback(s4, false, 0);
    snaps[s5] = live;
    expect_state(live, snaps, "rolled back to s4");
}

// ------------------------------------------------------------ a full disk

// One snapshot operation on a nearly full state filesystem.
struct Attempt {
    std::string op;
    std::string outcome; // "ok" or the error
};

// Whether E is an acceptable failure on a full disk: SnapshotError(Io) that
// says it is out of space. "" if so, else what is wrong with it.
std::string bad_full_disk_error(const std::exception& e)
{
    auto* s = dynamic_cast<const SnapshotError*>(&e);
    if (!s)
        return describe(e) + ": not a SnapshotError (the D-Bus layer maps only SnapshotError to org.layerd1.Error.*)";
    if (s->kind() != SnapshotError::Kind::Io)
        return describe(e) + ": a full disk is an Io error";
    std::string what = s->what();
    if (what.find("No space left") == std::string::npos && what.find("disk is full") == std::string::npos &&
        what.find("ENOSPC") == std::string::npos)
        return describe(e) + ": the message does not say the disk is full";
    return "";
}

// The state dir on a 64 MiB ext4 filled down to a few free blocks (from 128
// to 0). At each level: delete a snapshot whose layer merges into its child
// (entries renamed into a directory that must grow), create a snapshot, roll
// back. Each succeeds or throws SnapshotError(Io) saying the disk is full;
// either way every recorded snapshot reads back as written, the live view
// is what it was (or the rollback's target), the database is consistent;
// and after freeing the space and remounting, the stack works.
TEST_F(SnapshotFaultTest, FullDiskDuringFreezeRollbackAndMergeLosesNothing)
{
    if (std::string why = LoopFs::unavailable(); !why.empty())
        GTEST_SKIP() << why;
    fresh_env(true, StackEnvOptions{.state_fs_mebibytes = 64});
    ASSERT_FALSE(HasFatalFailure());
    LoopFs& disk = *env_->disk();
    std::printf("state dir on %s: %llu KiB free, %llu-byte blocks\n", disk.mountpoint().c_str(),
                static_cast<unsigned long long>(disk.free_bytes() / 1024),
                static_cast<unsigned long long>(disk.block_size()));
    std::map<uint32_t, Tree> snaps;
    Tree live = StackEnv::initial_tree();
    std::vector<std::string> summary;
    int failures_seen = 0, successes_seen = 0, state_problems = 0;
    // While a merge the full disk interrupted waits for the next mount, its
    // layer may be gone from disk already, its entries in its child.
    auto check = [&](const std::string& when) {
        bool merging = !store().merges_in_progress().empty();
        std::string problems = env_->check_against(live, snaps, merging);
        EXPECT_EQ(problems, "") << when;
        state_problems += !problems.empty();
    };

    const std::vector<uint64_t> levels = {128, 64, 32, 16, 12, 8, 6, 4, 3, 2, 1, 0};
    for (size_t round = 0; round < levels.size(); ++round) {
        SCOPED_TRACE("round " + std::to_string(round) + ", " + std::to_string(levels[round]) + " blocks free");
        // With space: A holds a directory of 150 entries; B, its only child,
        // has that directory copied up, so deleting A renames every entry
        // into B's directory (which must grow).
        std::string big = "/big" + std::to_string(round);
        ASSERT_EQ(::mkdir(mnt(big).c_str(), 0755), 0) << big << ": " << errno_text(errno);
        live[big] = {'d', ""};
        for (int i = 0; i < 150; ++i)
            put(&live, big + "/entry-with-a-long-name-so-the-directory-needs-blocks-" + std::to_string(i),
                i % 10 == 0 ? std::string(3000, static_cast<char>('a' + round)) : "");
        put(&live, "/f", "round " + std::to_string(round) + " in A");
        uint32_t a = create("A" + std::to_string(round));
        snaps[a] = live;
        put(&live, big + "/copied-up", "B");
        put(&live, "/f", "round " + std::to_string(round) + " in B");
        uint32_t b = create("B" + std::to_string(round));
        snaps[b] = live;
        put(&live, "/f", "round " + std::to_string(round) + " live");
        check("before filling the disk");

        uint64_t left = 0;
        ASSERT_EQ(disk.fill(levels[round], &left), "");
        std::vector<Attempt> attempts;
        auto attempt = [&](const std::string& op, auto&& f) {
            Tree live_before = live;
            std::map<uint32_t, Tree> snaps_before = snaps;
            std::string outcome = "ok";
            try {
                f();
                ++successes_seen;
            } catch (const std::exception& e) {
                ++failures_seen;
                outcome = describe(e);
                live = live_before;
                snaps = snaps_before;
                EXPECT_EQ(bad_full_disk_error(e), "") << op << " with " << left << " blocks free";
            }
            attempts.push_back({op, outcome});
            return outcome == "ok";
        };

        // A merge into B.
        attempt("delete A (merge into B)", [&] {
            stack().delete_snapshots({a});
            snaps.erase(a);
        });
        // A deletion that failed after its row went is to resume at the next
        // start: A may be gone from the list even though it failed.
        if (attempts.back().outcome != "ok" && !store().get_snapshot(kStack, a))
            snaps.erase(a);
        check("after " + attempts.back().op + ": " + attempts.back().outcome);
        // A freeze.
        attempt("create", [&] {
            uint32_t n = create("C" + std::to_string(round));
            snaps[n] = live;
        });
        check("after " + attempts.back().op + ": " + attempts.back().outcome);
        // A rollback (a freeze and a new live layer over B's).
        attempt("rollback to B", [&] {
            uint32_t saved = stack().rollback(b, false, 0);
            snaps[saved] = live;
            live = snaps[b];
        });
        check("after " + attempts.back().op + ": " + attempts.back().outcome);

        std::string line = std::to_string(left) + " blocks free:";
        for (const Attempt& at : attempts)
            line += " " + at.op + " → " + (at.outcome == "ok" ? "ok" : at.outcome) + ";";
        summary.push_back(line);

        // Space again, and a fresh mount: the same state, and a working stack.
        ASSERT_EQ(disk.unfill(), "");
        check("after freeing the space");
        if (!store().merges_in_progress().empty()) {
            // Not required before the next mount, but what a user meets
            // until then: can the snapshots above the merge be used?
            std::string unusable;
            for (const auto& [n, t] : snaps)
                try {
                    stack().diff(n, 0, [](const DiffEntry&) {});
                } catch (const std::exception& e) {
                    unusable += " " + std::to_string(n) + " (" + describe(e) + ")";
                }
            std::printf("round %zu: a merge waits for the next mount;%s\n", round,
                        unusable.empty() ? " every snapshot can be diffed meanwhile"
                                         : (" until then diff fails for snapshots" + unusable).c_str());
        }
        // The mount takes writes again where the failed operations left it,
        // and they survive the remount.
        put(&live, "/freed" + std::to_string(round), "written once the space was back");
        check("a write once the space was back");
        ASSERT_EQ(env_->remount(), "") << "mounting again after the disk was full";
        // A merge interrupted by the full disk resumes at the mount: A's
        // number is gone for good now.
        if (!store().get_snapshot(kStack, a))
            snaps.erase(a);
        check("after freeing the space and remounting");
        EXPECT_TRUE(store().merges_in_progress().empty()) << "a merge is still unfinished after the remount";
        put(&live, "/after" + std::to_string(round), "written with space again");
        try {
            uint32_t n = create("check " + std::to_string(round));
            snaps[n] = live;
            check("a snapshot with space again");
            // Keep the tree small: the round's snapshots go, all but the newest.
            std::vector<uint32_t> old;
            for (const auto& [num, t] : snaps)
                if (num != n)
                    old.push_back(num);
            stack().delete_snapshots(old);
            for (uint32_t num : old)
                snaps.erase(num);
        } catch (const std::exception& e) {
            ADD_FAILURE() << "with space again after a full disk: " << describe(e);
            break;
        }
        check("after the round's cleanup");
        // A wrong kind of error is reported and the rounds go on; a state
        // that differs from the model would only repeat itself.
        if (HasFatalFailure() || state_problems > 0)
            break;
    }
    std::printf("full disk: %d operations succeeded, %d failed\n", successes_seen, failures_seen);
    for (const std::string& line : summary)
        std::printf("  %s\n", line.c_str());
    EXPECT_GT(failures_seen, 0) << "no operation ever ran out of space: the test did not fill the disk";
}

} // namespace
} // namespace layerd::test
