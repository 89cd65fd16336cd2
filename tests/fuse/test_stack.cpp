// SPDX-License-Identifier: LGPL-2.1-or-later
// A stack with snapshots, end to end on a real mount and a real SQLite file:
// create, diff, live and next-mount rollback, delete (merge), bad numbers,
// the depth limit.
#include "mount_fixture.hpp"
#include "mounted_stack.hpp"

#include <sys/mount.h>
#include <unistd.h>

#include <memory>

namespace layerd::test {
namespace {

class StackTest : public ::testing::Test {
protected:
    void SetUp() override
    {
        char tmpl[] = "/tmp/layerd-stack.XXXXXX";
        ASSERT_NE(mkdtemp(tmpl), nullptr);
        root_ = tmpl;
        for (const char* d : {"lower", "state", "mnt"})
            ASSERT_EQ(::mkdir((root_ + "/" + d).c_str(), 0755), 0);
        write_file(root_ + "/lower/f", "base");
        store_ = std::make_unique<SnapshotStore>(SnapshotStore::open(root_ + "/state/layerd.db"));
        config_.name = "t";
        config_.lowers = {root_ + "/lower"};
        config_.mountpoint = root_ + "/mnt";
        config_.state_dir = root_ + "/state";
    }
    void TearDown() override
    {
        stack_.reset();
        ::umount2(mnt("").c_str(), MNT_DETACH); // only if a failure left it
        if (!HasFailure())
            sh("rm -rf '" + root_ + "'");
    }
    void open_stack() { stack_ = std::make_unique<MountedStack>(*store_, config_); }
    std::string mnt(const std::string& rel) const { return root_ + "/mnt/" + rel; }
    std::vector<std::string> diff(uint32_t a, uint32_t b)
    {
        std::vector<std::string> out;
        stack_->diff(a, b, [&](const DiffEntry& e) { out.push_back(e.flags() + " " + e.path); });
        return out;
    }
    uint32_t snapshot(const std::string& description = "")
    {
        MountedStack::NewSnapshot s;
        s.description = description;
        s.cleanup = "number";
        return stack_->create_snapshot(s);
    }

    std::string root_;
    std::unique_ptr<SnapshotStore> store_;
    StackConfig config_;
    std::unique_ptr<MountedStack> stack_;
};

TEST_F(StackTest, SnapshotDiffRollbackDeleteAndNextMount)
{
    open_stack();
    write_file(mnt("a"), "v1");
    uint32_t s1 = snapshot("one");
    write_file(mnt("a"), "v2");
    write_file(mnt("b"), "b");
    ASSERT_EQ(::unlink(mnt("f").c_str()), 0);
    uint32_t s2 = snapshot("two");
    EXPECT_EQ(stack_->depth(), 2u);
    EXPECT_EQ(read_file(mnt("a")), "v2") << "a snapshot changes nothing users see";
    EXPECT_EQ(diff(s1, s2), (std::vector<std::string>{"c..... /a", "+..... /b", "-..... /f"}));

    uint32_t backup = stack_->rollback(s1, false, 0);
    EXPECT_EQ(read_file(mnt("a")), "v1");
    EXPECT_FALSE(exists(mnt("b")));
    EXPECT_EQ(read_file(mnt("f")), "base");
    EXPECT_TRUE(diff(s1, 0).empty());

    // s2's layer has one child (the backup's): it is merged into it, and
    // the backup still shows the state before the rollback.
    stack_->delete_snapshots({s2});
    std::vector<uint32_t> numbers;
    for (const auto& s : stack_->snapshots())
        numbers.push_back(s.number);
    EXPECT_EQ(numbers, (std::vector<uint32_t>{s1, backup}));
    EXPECT_EQ(diff(s1, backup), (std::vector<std::string>{"c..... /a", "+..... /b", "-..... /f"}));

    uint32_t kept = stack_->rollback(backup, true, 0);
    EXPECT_NE(kept, 0u) << "the state before a next-mount rollback is kept as a snapshot";
    EXPECT_EQ(read_file(mnt("a")), "v1") << "a next-mount rollback waits for the next mount";
    EXPECT_TRUE(diff(kept, 0).empty());
    stack_.reset();
    open_stack();
    EXPECT_EQ(read_file(mnt("a")), "v2");
    EXPECT_TRUE(exists(mnt("b")));
    EXPECT_EQ(stack_->snapshots().size(), 3u) << "nothing changed before the mount: no snapshot more";
}

TEST_F(StackTest, UnknownSnapshotsAreRefusedAndNothingChanges)
{
    open_stack();
    write_file(mnt("a"), "v1");
    uint32_t s1 = snapshot();
    auto kind_of = [](const std::function<void()>& f) {
        try {
            f();
        } catch (const SnapshotError& e) {
            return e.kind();
        }
        return SnapshotError::Kind::Io;
    };
    EXPECT_EQ(kind_of([&] { stack_->rollback(99, false, 0); }), SnapshotError::Kind::NoSuchSnapshot);
    EXPECT_EQ(kind_of([&] { stack_->rollback(99, true, 0); }), SnapshotError::Kind::NoSuchSnapshot);
    EXPECT_EQ(kind_of([&] { diff(99, 0); }), SnapshotError::Kind::NoSuchSnapshot);
    EXPECT_EQ(kind_of([&] { stack_->delete_snapshots({99}); }), SnapshotError::Kind::NoSuchSnapshot);
    ASSERT_EQ(stack_->snapshots().size(), 1u);
    EXPECT_EQ(stack_->snapshots().front().number, s1);
    EXPECT_EQ(read_file(mnt("a")), "v1");
}

TEST_F(StackTest, DepthLimitNamesTheCleanup)
{
    config_.max_depth = 2;
    open_stack();
    snapshot();
    snapshot();
    try {
        snapshot();
        ADD_FAILURE() << "a third snapshot went past the depth limit";
    } catch (const SnapshotError& e) {
        EXPECT_EQ(e.kind(), SnapshotError::Kind::DepthLimit);
        EXPECT_NE(std::string(e.what()).find("cleanup"), std::string::npos) << e.what();
    }
    EXPECT_EQ(stack_->depth(), 2u);
}

} // namespace
} // namespace layerd::test
