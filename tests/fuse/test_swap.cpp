// SPDX-License-Identifier: LGPL-2.1-or-later
// Swaps on a live mount, the engine side of snapshots (DESIGN §2, "Mapping
// safety"): freezing the upper and replacing the view while files are open.
// The overlay is served from this process, so the test can call the swaps.
#include "mount_fixture.hpp"
#include "overlay.hpp"
#include "session.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <memory>
#include <thread>

namespace layerd::test {
namespace {

class SwapTest : public ::testing::Test {
protected:
    void SetUp() override
    {
        char tmpl[] = "/tmp/layerd-swap.XXXXXX";
        ASSERT_NE(mkdtemp(tmpl), nullptr);
        root_ = tmpl;
        for (const char* d : {"base", "L1", "L2", "L3", "work", "mnt"})
            ASSERT_EQ(::mkdir(path(d).c_str(), 0755), 0);
        write_file(path("base/f"), "base");
    }

    void TearDown() override
    {
        if (loop_.joinable()) {
            if (::umount2(path("mnt").c_str(), 0) != 0) {
                // A stuck mount: abort the connection, then detach.
                std::ofstream("/sys/fs/fuse/connections/" + std::to_string(connection_) + "/abort") << "1";
                ::umount2(path("mnt").c_str(), MNT_DETACH);
            }
            loop_.join();
        }
        fs_.reset();
        if (!HasFailure())
            sh("rm -rf '" + root_ + "'");
    }

    std::string path(const std::string& rel) const { return root_ + "/" + rel; }
    std::string mnt(const std::string& rel) const { return root_ + "/mnt/" + rel; }

    void mount()
    {
        LayerSetConfig config;
        config.lowers = {path("base")};
        config.upper = path("L1");
        config.work = path("work");
        config.mountpoint = path("mnt");
        fs_ = std::make_unique<fs::Overlay>(LayerSet::open(config), fs::OverlayOptions{});
        fs::MountConfig mc;
        mc.mountpoint = path("mnt");
        mc.foreground = true;
        mc.signal_handlers = false;
        loop_ = std::thread([this, mc] { status_ = fs::mount_and_serve(*fs_, mc); });
        for (int i = 0; i < 500; ++i) {
            std::string info = sh_out("grep ' " + path("mnt") + " ' /proc/self/mountinfo");
            if (info.find("fuse.layerd-fs") != std::string::npos) {
                connection_ = std::stoi(info.substr(info.find(':', info.find(' ', info.find(' ') + 1)) + 1));
                return;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        FAIL() << "the in-process mount did not appear";
    }

    std::shared_ptr<Layer> layer(const std::string& name)
    {
        return LayerSet::open_layer("layer", path(name), false);
    }

    // What a snapshot does first: the kernel's dirty pages into the upper.
    void sync_mount()
    {
        int fd = ::open(path("mnt").c_str(), O_RDONLY | O_DIRECTORY);
        ASSERT_GE(fd, 0);
        EXPECT_EQ(::syncfs(fd), 0);
        ::close(fd);
    }

    std::string pread_all(int fd)
    {
        char buf[256];
        ssize_t n = ::pread(fd, buf, sizeof buf, 0);
        return n < 0 ? "<" + std::string(strerror(errno)) + ">" : std::string(buf, static_cast<size_t>(n));
    }

    std::string root_;
    std::unique_ptr<fs::Overlay> fs_;
    std::thread loop_;
    int status_ = -1;
    int connection_ = 0;
};

TEST_F(SwapTest, FreezeKeepsTheFrozenLayerByteForByte)
{
    mount();
    ASSERT_FALSE(HasFatalFailure());
    write_file(mnt("a"), "one");
    int fa = ::open(mnt("a").c_str(), O_RDWR);
    int ff = ::open(mnt("f").c_str(), O_RDWR); // copies base/f up into L1
    ASSERT_GE(fa, 0);
    ASSERT_GE(ff, 0);
    ino_t ino_before = lstat_of(mnt("a")).st_ino;

    sync_mount();
    ASSERT_EQ(fs_->freeze_upper(layer("L2")), 0);

    // Writes through fds opened before the freeze, and new changes, land in
    // the new upper; the frozen layer keeps its bytes.
    ASSERT_EQ(::pwrite(fa, "TWO", 3, 0), 3) << strerror(errno);
    ASSERT_EQ(::pwrite(ff, "XXXX", 4, 0), 4);
    write_file(mnt("c"), "new");
    ASSERT_EQ(::unlink(mnt("f").c_str()), 0);
    ASSERT_EQ(::fsync(fa), 0);
    ASSERT_EQ(::fsync(ff), 0);
    sync_mount();

    EXPECT_EQ(read_file(path("L1/a")), "one");
    EXPECT_EQ(read_file(path("L1/f")), "base");
    EXPECT_FALSE(exists(path("L1/c")));
    EXPECT_EQ(read_file(path("L2/a")), "TWO");
    EXPECT_EQ(read_file(path("L2/c")), "new");
    struct stat wh = lstat_of(path("L2/f"));
    EXPECT_TRUE(S_ISCHR(wh.st_mode) && wh.st_rdev == 0) << "f is not whited out in the new upper";
    // What users see is continuous: same file, same inode number.
    EXPECT_EQ(read_file(mnt("a")), "TWO");
    EXPECT_EQ(lstat_of(mnt("a")).st_ino, ino_before);
    EXPECT_FALSE(exists(mnt("f")));
    EXPECT_EQ(pread_all(ff), "XXXX"); // the unlinked file is still open
    ::close(fa);
    ::close(ff);
}

TEST_F(SwapTest, RollbackShowsTheSnapshotWhileOldFilesKeepTheirData)
{
    mount();
    ASSERT_FALSE(HasFatalFailure());
    write_file(mnt("a"), "v1");
    ASSERT_EQ(::mkdir(mnt("d").c_str(), 0755), 0);
    write_file(mnt("d/x"), "x1");
    sync_mount();
    ASSERT_EQ(fs_->freeze_upper(layer("L2")), 0); // L1 is the snapshot

    write_file(mnt("a"), "v2");
    write_file(mnt("b"), "later");
    ASSERT_EQ(::unlink(mnt("d/x").c_str()), 0);
    ASSERT_EQ(::rmdir(mnt("d").c_str()), 0);
    EXPECT_FALSE(exists(mnt("d"))); // the kernel now caches d as absent
    int old = ::open(mnt("a").c_str(), O_RDONLY);
    ASSERT_GE(old, 0);
    void* map = ::mmap(nullptr, 2, PROT_READ, MAP_SHARED, old, 0);
    ASSERT_NE(map, MAP_FAILED);
    ASSERT_EQ(std::string(static_cast<char*>(map), 2), "v2");

    sync_mount();
    ASSERT_EQ(fs_->replace_view({layer("L3"), layer("L1"), layer("base")}), 0);

    // New lookups see the snapshot, with no stale entry from before.
    EXPECT_EQ(read_file(mnt("a")), "v1");
    EXPECT_FALSE(exists(mnt("b")));
    EXPECT_EQ(read_file(mnt("d/x")), "x1");
    EXPECT_EQ(read_file(mnt("f")), "base");
    // What was open keeps reading what it opened.
    EXPECT_EQ(pread_all(old), "v2");
    EXPECT_EQ(std::string(static_cast<char*>(map), 2), "v2");
    ::munmap(map, 2);

    // Changes now go to the new upper; the snapshot and the rolled-back
    // layer never change.
    write_file(mnt("a"), "v3");
    sync_mount();
    EXPECT_EQ(read_file(path("L3/a")), "v3");
    EXPECT_EQ(read_file(path("L1/a")), "v1");
    EXPECT_EQ(read_file(path("L2/a")), "v2");
    ::close(old);
}

// After a rollback no dentry the kernel cached from the old view is used,
// however deep, positive or negative, while it holds many nodes.
TEST_F(SwapTest, RollbackLeavesNoStaleDentryBelowTheRoot)
{
    mount();
    ASSERT_FALSE(HasFatalFailure());
    const std::string deep = "t/a/b/c/d/e/f/g";
    ASSERT_EQ(sh("mkdir -p '" + mnt(deep) + "'"), 0);
    write_file(mnt(deep + "/file"), "snap");
    write_file(mnt(deep + "/back"), "deep back");
    write_file(mnt("back"), "back");
    constexpr int files = 3000;
    ASSERT_EQ(::mkdir(mnt("many").c_str(), 0755), 0);
    for (int i = 0; i < files; ++i)
        write_file(mnt("many/f" + std::to_string(i)), std::to_string(i));
    sync_mount();
    ASSERT_EQ(fs_->freeze_upper(layer("L2")), 0); // L1 is the snapshot

    write_file(mnt(deep + "/file"), "later");
    write_file(mnt(deep + "/onlyold"), "old");
    write_file(mnt("onlyold"), "old");
    ASSERT_EQ(::unlink(mnt(deep + "/back").c_str()), 0);
    ASSERT_EQ(::unlink(mnt("back").c_str()), 0);
    // The kernel caches all of it: every node, and the names now absent.
    for (int i = 0; i < files; ++i)
        ASSERT_TRUE(exists(mnt("many/f" + std::to_string(i))));
    EXPECT_EQ(read_file(mnt(deep + "/file")), "later");
    EXPECT_TRUE(exists(mnt(deep + "/onlyold")));
    EXPECT_TRUE(exists(mnt("onlyold")));
    EXPECT_FALSE(exists(mnt(deep + "/back")));
    EXPECT_FALSE(exists(mnt("back")));
    int old = ::open(mnt(deep + "/file").c_str(), O_RDONLY);
    ASSERT_GE(old, 0);
    ASSERT_GT(fs_->node_count(), static_cast<size_t>(files));

    sync_mount();
    ASSERT_EQ(fs_->replace_view({layer("L3"), layer("L1"), layer("base")}), 0);

    EXPECT_EQ(read_file(mnt(deep + "/file")), "snap") << "a deep path still shows the old view";
    EXPECT_EQ(read_file(mnt(deep + "/back")), "deep back") << "a deep negative dentry survived the rollback";
    EXPECT_EQ(read_file(mnt("back")), "back") << "a negative dentry of the root survived the rollback";
    EXPECT_FALSE(exists(mnt(deep + "/onlyold"))) << "a deep name only the old view had is still there";
    EXPECT_FALSE(exists(mnt("onlyold"))) << "a name only the old view had is still there";
    EXPECT_EQ(sh_out("ls '" + mnt(deep) + "' | tr '\\n' ' '"), "back file ");
    for (int i = 0; i < files; i += 97)
        EXPECT_EQ(read_file(mnt("many/f" + std::to_string(i))), std::to_string(i));
    EXPECT_EQ(pread_all(old), "later"); // what was open keeps its data
    ::close(old);

    // The new view takes changes at any depth.
    write_file(mnt(deep + "/file"), "new");
    sync_mount();
    EXPECT_EQ(read_file(path("L3/" + deep + "/file")), "new");
    EXPECT_EQ(read_file(path("L1/" + deep + "/file")), "snap");
}

} // namespace
} // namespace layerd::test
