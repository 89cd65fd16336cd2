// SPDX-License-Identifier: LGPL-2.1-or-later
// MountedStack::undo_change() on a real mount (DESIGN §2 "undo-change"):
// paths of the live view made what they are in a snapshot. A modified file
// gets back its data, mode, owner, times and xattrs; a deleted one is
// re-created, one created since is removed; a directory comes back with its
// whole subtree (also after it was renamed away); symlinks; lower files
// that were never copied up. Unknown snapshots and bad paths are refused
// and change nothing; fds open on the mount keep working. Every test also
// checks that nothing but the named paths changed, and that the snapshot
// itself (its layer on disk) did not.
#include "mounted_stack.hpp"
#include "snapshot_store.hpp"
#include "stack_env.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstdio>
#include <ctime>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace layerd::test {
namespace {

class UndoChangeTest : public StackEnvTest {
protected:
    void make_dir(const std::string& path)
    {
        ASSERT_EQ(::mkdir(mnt(path).c_str(), 0755), 0) << "mkdir " << path << ": " << errno_text(errno);
        live_[path] = {'d', ""};
    }
    // Everything at or below PATH in the model.
    void forget(const std::string& path)
    {
        for (auto it = live_.begin(); it != live_.end();)
            it = it->first == path || it->first.starts_with(path + "/") ? live_.erase(it) : std::next(it);
    }
    // The model's PATH (and below) made what snapshot tree SNAP has there.
    void model_undo(const Tree& snap, const std::string& path)
    {
        forget(path);
        for (const auto& [p, e] : snap)
            if (p == path || p.starts_with(path + "/"))
                live_[p] = e;
    }

    uint32_t take(const std::string& description)
    {
        uint32_t n = create(description);
        snaps_[n] = live_;
        layer_bytes_[n] = dump_layer(env_->layer_dir(store().get_snapshot(kStack, n)->layer));
        return n;
    }

    // undo_change, with a failure recorded instead of thrown.
    void undo(uint32_t n, const std::vector<std::string>& paths)
    {
        try {
            stack().undo_change(n, paths);
        } catch (const std::exception& e) {
            std::string list;
            for (const std::string& p : paths)
                list += " '" + p + "'";
            ADD_FAILURE() << "undo_change(" << n << "," << list << "): " << describe(e);
        }
    }

    // The live view is the model, every snapshot still what it held, and no
    // frozen layer changed on disk.
    void expect_intact(const std::string& when)
    {
        EXPECT_EQ(env_->check_against(live_, snaps_), "") << when;
        for (const auto& [n, bytes] : layer_bytes_)
            if (auto rec = store().get_snapshot(kStack, n)) {
                EXPECT_EQ(dump_layer(env_->layer_dir(rec->layer)), bytes)
                    << "snapshot " << n << "'s layer changed on disk (" << when << ")";
            }
    }

    std::string xattr(const std::string& path, const std::string& name)
    {
        char buf[256];
        ssize_t n = ::lgetxattr(mnt(path).c_str(), name.c_str(), buf, sizeof buf);
        return n < 0 ? "<" + errno_text(errno) + ">" : std::string(buf, static_cast<size_t>(n));
    }
    std::string link_target(const std::string& path)
    {
        char buf[256];
        ssize_t n = ::readlink(mnt(path).c_str(), buf, sizeof buf);
        return n < 0 ? "<" + errno_text(errno) + ">" : std::string(buf, static_cast<size_t>(n));
    }
    void set_times(const std::string& path, time_t atime, time_t mtime)
    {
        const struct timespec t[2] = {{atime, 0}, {mtime, 0}};
        ASSERT_EQ(::utimensat(AT_FDCWD, mnt(path).c_str(), t, AT_SYMLINK_NOFOLLOW), 0)
            << "utimensat " << path << ": " << errno_text(errno);
    }
    bool user_xattrs()
    {
        if (::lsetxattr(mnt("/").c_str(), "user.probe", "1", 1, 0) == 0) {
            ::lremovexattr(mnt("/").c_str(), "user.probe");
            return true;
        }
        std::printf("user xattrs cannot be set through the mount here (%s): xattr checks skipped\n",
                    errno_text(errno).c_str());
        return false;
    }

    Tree live_ = StackEnv::initial_tree();
    std::map<uint32_t, Tree> snaps_;
    std::map<uint32_t, std::string> layer_bytes_;
};

// A file changed in every way since the snapshot gets back its data, mode,
// owner, times and xattrs; an fd opened on it before keeps working.
TEST_F(UndoChangeTest, ModifiedFileGetsBackDataModeOwnerTimesAndXattrs)
{
    bool xattrs = user_xattrs();
    put(&live_, "/f", "original data");
    ASSERT_EQ(::chmod(mnt("/f").c_str(), 0640), 0);
    ASSERT_EQ(::chown(mnt("/f").c_str(), 1234, 5678), 0) << errno_text(errno);
    if (xattrs) {
        ASSERT_EQ(::lsetxattr(mnt("/f").c_str(), "user.k", "v1", 2, 0), 0) << errno_text(errno);
    }
    // An atime after the ctime and recent: relatime leaves it alone when
    // the test reads the snapshot's files from their layer.
    const time_t atime = ::time(nullptr) + 3600;
    set_times("/f", atime, 1100000000);
    uint32_t s = take("s");

    put(&live_, "/f", "changed, and longer than before");
    ASSERT_EQ(::chown(mnt("/f").c_str(), 0, 0), 0);
    ASSERT_EQ(::chmod(mnt("/f").c_str(), 0604), 0);
    if (xattrs) {
        ASSERT_EQ(::lsetxattr(mnt("/f").c_str(), "user.k", "v2", 2, 0), 0);
        ASSERT_EQ(::lsetxattr(mnt("/f").c_str(), "user.extra", "x", 1, 0), 0);
    }
    put(&live_, "/a", "another change, not undone");
    Fd old(::open(mnt("/f").c_str(), O_RDWR | O_CLOEXEC));
    ASSERT_GE(old.fd, 0) << errno_text(errno);

    undo(s, {"/f"});
    struct stat st = lstat_of(mnt("/f"));
    EXPECT_EQ(st.st_mode & 07777, 0640u) << "mode not restored";
    EXPECT_EQ(st.st_uid, 1234u) << "owner not restored";
    EXPECT_EQ(st.st_gid, 5678u) << "group not restored";
    EXPECT_EQ(st.st_mtim.tv_sec, 1100000000) << "mtime not restored";
    EXPECT_EQ(st.st_atim.tv_sec, atime) << "atime not restored";
    EXPECT_EQ(st.st_size, 13) << "size not restored";
    if (xattrs) {
        EXPECT_EQ(xattr("/f", "user.k"), "v1") << "xattr user.k not restored";
        EXPECT_EQ(xattr("/f", "user.extra"), "<" + errno_text(ENODATA) + ">")
            << "xattr user.extra, set after the snapshot, is still there";
    }
    model_undo(snaps_[s], "/f");
    expect_intact("after undo_change of /f");

    // The fd from before reads what it had open and still takes writes; a
    // new open sees the restored file.
    EXPECT_EQ(pread_all(old.fd), "changed, and longer than before") << "an fd opened before undo-change";
    EXPECT_EQ(::pwrite(old.fd, "X", 1, 0), 1) << "writing through an fd opened before undo-change: "
                                              << errno_text(errno);
    std::string now;
    EXPECT_EQ(read_path(mnt("/f"), &now), 0) << "reading the restored /f";
    EXPECT_EQ(now, "original data") << "a write through the old fd reached the restored file";
    old.reset();
    ASSERT_EQ(env_->remount(), "");
    expect_intact("after a remount");
}

// Metadata alone changed: restored in place (the file keeps its inode, so
// an fd sees it too).
TEST_F(UndoChangeTest, ModeAndOwnerOnlyChangesAreRestoredInPlace)
{
    put(&live_, "/m", "same data");
    uint32_t s = take("s");
    ASSERT_EQ(::chmod(mnt("/m").c_str(), 0600), 0);
    ASSERT_EQ(::chown(mnt("/m").c_str(), 42, 43), 0);
    ino_t ino = lstat_of(mnt("/m")).st_ino;
    Fd fd(::open(mnt("/m").c_str(), O_RDONLY | O_CLOEXEC));
    ASSERT_GE(fd.fd, 0);
    undo(s, {"/m"});
    struct stat st = lstat_of(mnt("/m"));
    EXPECT_EQ(st.st_mode & 07777, 0644u) << "mode not restored";
    EXPECT_EQ(st.st_uid, 0u) << "owner not restored";
    EXPECT_EQ(st.st_gid, 0u) << "group not restored";
    EXPECT_EQ(st.st_ino, ino) << "a metadata-only undo replaced the file";
    EXPECT_EQ(pread_all(fd.fd), "same data") << "an fd opened before a metadata-only undo";
    expect_intact("after a metadata-only undo");
}

// A file deleted since the snapshot is re-created; one created since is
// removed; several paths in one call.
TEST_F(UndoChangeTest, DeletedFileIsRecreatedAndNewFileRemoved)
{
    put(&live_, "/kept", "was here");
    uint32_t s = take("s");
    ASSERT_EQ(::unlink(mnt("/kept").c_str()), 0);
    ASSERT_EQ(::unlink(mnt("/d/b").c_str()), 0); // a lower file: a whiteout
    put(&live_, "/new", "created after the snapshot");
    put(&live_, "/d/new", "also new");
    live_.erase("/kept");
    live_.erase("/d/b");
    undo(s, {"/kept", "/d/b", "/new", "/d/new"});
    for (const char* p : {"/kept", "/d/b", "/new", "/d/new"})
        model_undo(snaps_[s], p);
    EXPECT_TRUE(exists(mnt("/kept"))) << "/kept, deleted after the snapshot, was not re-created";
    EXPECT_FALSE(exists(mnt("/new"))) << "/new, created after the snapshot, is still there";
    std::string data;
    EXPECT_EQ(read_path(mnt("/d/b"), &data), 0) << "/d/b, a deleted lower file, was not re-created";
    EXPECT_EQ(data, "beta\n") << "the lower file behind the whiteout";
    expect_intact("after undo of created and deleted files");
    ASSERT_EQ(env_->remount(), "");
    expect_intact("after a remount");
}

// A directory comes back with its whole subtree: entries added since go,
// removed ones come back, changed ones are restored; also after it was
// renamed away (the new name is a path created since: undoing it removes it).
TEST_F(UndoChangeTest, DirectorySubtreeIsRestoredAlsoAfterARename)
{
    make_dir("/t");
    make_dir("/t/u");
    put(&live_, "/t/1", "one");
    put(&live_, "/t/u/2", "two");
    uint32_t s = take("s");

    put(&live_, "/t/1", "ONE");
    put(&live_, "/t/3", "three");
    ASSERT_EQ(::unlink(mnt("/t/u/2").c_str()), 0);
    live_.erase("/t/u/2");
    undo(s, {"/t"});
    model_undo(snaps_[s], "/t");
    expect_intact("after undo of /t");

    // Renamed away, with changes under the new name; the lower /d too.
    ASSERT_EQ(::rename(mnt("/t").c_str(), mnt("/t2").c_str()), 0);
    ASSERT_EQ(::rename(mnt("/d").c_str(), mnt("/dd").c_str()), 0);
    for (const char* from : {"/t", "/d"}) {
        std::string to = std::string(from) + (from[1] == 't' ? "2" : "d");
        Tree moved;
        for (const auto& [p, e] : live_)
            if (p == from || p.starts_with(std::string(from) + "/"))
                moved[to + p.substr(std::string(from).size())] = e;
        forget(from);
        live_.insert(moved.begin(), moved.end());
    }
    put(&live_, "/t2/1", "changed under the new name");
    put(&live_, "/dd/sub/c", "changed under the new name");
    Fd dirfd(::open(mnt("/t2").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    ASSERT_GE(dirfd.fd, 0);
    undo(s, {"/t", "/d"});
    model_undo(snaps_[s], "/t");
    model_undo(snaps_[s], "/d");
    expect_intact("after undo of the renamed /t and /d");
    struct stat st;
    EXPECT_EQ(::fstatat(dirfd.fd, "1", &st, AT_SYMLINK_NOFOLLOW), 0)
        << "a directory fd opened before undo-change: " << errno_text(errno);
    // And the new names, created since, go when asked for.
    undo(s, {"/t2", "/dd"});
    model_undo(snaps_[s], "/t2");
    model_undo(snaps_[s], "/dd");
    EXPECT_EQ(tree_mismatch(snaps_[s], live()), "") << "the whole tree should be the snapshot's again";
    expect_intact("after undo of /t2 and /dd");
    dirfd.reset();
    ASSERT_EQ(env_->remount(), "");
    expect_intact("after a remount");
}

// Symlinks: a changed target is restored, a deleted link re-created, a link
// created since removed; the link's own owner comes back.
TEST_F(UndoChangeTest, SymlinksAreRestored)
{
    ASSERT_EQ(::symlink("target-a", mnt("/ln").c_str()), 0) << errno_text(errno);
    ASSERT_EQ(::symlink("/abs/target", mnt("/gone").c_str()), 0);
    ASSERT_EQ(::lchown(mnt("/ln").c_str(), 77, 78), 0) << errno_text(errno);
    live_["/ln"] = {'o', std::to_string(S_IFLNK)};
    live_["/gone"] = {'o', std::to_string(S_IFLNK)};
    uint32_t s = take("s");
    ASSERT_EQ(::unlink(mnt("/ln").c_str()), 0);
    ASSERT_EQ(::symlink("target-b", mnt("/ln").c_str()), 0);
    ASSERT_EQ(::unlink(mnt("/gone").c_str()), 0);
    ASSERT_EQ(::symlink("new", mnt("/newlink").c_str()), 0);
    undo(s, {"/ln", "/gone", "/newlink"});
    EXPECT_EQ(link_target("/ln"), "target-a") << "a symlink's changed target";
    EXPECT_EQ(link_target("/gone"), "/abs/target") << "a deleted symlink";
    EXPECT_FALSE(exists(mnt("/newlink"))) << "a symlink created after the snapshot is still there";
    struct stat st = lstat_of(mnt("/ln"));
    EXPECT_TRUE(S_ISLNK(st.st_mode)) << "/ln is not a symlink after undo-change";
    EXPECT_EQ(st.st_uid, 77u) << "the symlink's owner";
    EXPECT_EQ(st.st_gid, 78u) << "the symlink's group";
    expect_intact("after undo of symlinks");
}

// Paths of lower files never copied up: unchanged ones stay uncopied (undo
// writes only what differs); a changed lower file gets the lower's data back;
// "/" restores the whole tree.
TEST_F(UndoChangeTest, LowerFilesNeverCopiedUp)
{
    uint32_t s = take("s");
    put(&live_, "/p", "changed lower file");
    ASSERT_EQ(::unlink(mnt("/d/sub/c").c_str()), 0);
    live_.erase("/d/sub/c");
    undo(s, {"/x", "/g", "/d/sub/c", "/p"});
    for (const char* p : {"/x", "/g", "/d/sub/c", "/p"})
        model_undo(snaps_[s], p);
    expect_intact("after undo of lower paths");
    std::string upper = env_->layer_dir(*store().live_layer(kStack));
    EXPECT_FALSE(exists(upper + "/x")) << "/x, unchanged, was copied up by undo-change";
    EXPECT_FALSE(exists(upper + "/g")) << "/g, unchanged, was copied up by undo-change";
    std::string data;
    EXPECT_EQ(read_path(mnt("/p"), &data), 0) << "reading /p";
    EXPECT_EQ(data, "perm") << "/p, a changed lower file, did not get the lower's data back";

    // Everything, from the root.
    put(&live_, "/x", "again");
    ASSERT_EQ(::rmdir(mnt("/e").c_str()), 0);
    live_.erase("/e");
    make_dir("/newdir");
    undo(s, {"/"});
    live_ = snaps_[s];
    expect_intact("after undo of /");
}

// An unknown snapshot is NoSuchSnapshot; bad paths and snapshot 0 are
// InvalidArgument; none of them changes anything, also when the bad path
// comes after good ones.
TEST_F(UndoChangeTest, UnknownSnapshotsAndBadPathsAreRefused)
{
    uint32_t s = take("s");
    put(&live_, "/a", "changed");
    uint32_t gone = take("gone");
    stack().delete_snapshots({gone});
    snaps_.erase(gone);
    layer_bytes_.erase(gone);
    put(&live_, "/a", "changed again");
    const auto none = SnapshotError::Kind::NoSuchSnapshot;
    const auto bad = SnapshotError::Kind::InvalidArgument;
    for (uint32_t n : {gone, 999u, 0xffffffffu})
        expect_refused(none, "undo_change(" + std::to_string(n) + ", /a)", [&] { stack().undo_change(n, {"/a"}); });
    expect_refused(bad, "undo_change(0, /a)", [&] { stack().undo_change(0, {"/a"}); });
    for (const std::string& p : {std::string(".."), std::string("/.."), std::string("/d/../a"), std::string("a"),
                                 std::string("d/b"), std::string(""), std::string("/d/./b"), std::string("/./a")})
        expect_refused(bad, "undo_change(s, '" + p + "')", [&] { stack().undo_change(s, {p}); });
    expect_refused(bad, "undo_change(s, {/a, ..})", [&] { stack().undo_change(s, {"/a", ".."}); });
    expect_refused(bad, "undo_change(s, {})", [&] { stack().undo_change(s, {}); });
    expect_intact("after the refused calls");
    std::string data;
    EXPECT_EQ(read_path(mnt("/a"), &data), 0) << "reading /a";
    EXPECT_EQ(data, "changed again") << "a refused undo-change changed /a";
}

// Files open on the mount during undo-change keep working: reads, writes
// and appends through fds of paths not undone, and a mapping-free read of a
// replaced one; the writes land in the live view.
TEST_F(UndoChangeTest, OpenFdsOnTheMountKeepWorking)
{
    put(&live_, "/w", "w0");
    put(&live_, "/r", "r0");
    uint32_t s = take("s");
    put(&live_, "/r", "r1 after");
    Fd w(::open(mnt("/w").c_str(), O_RDWR | O_CLOEXEC));
    Fd r(::open(mnt("/r").c_str(), O_RDONLY | O_CLOEXEC));
    Fd lower(::open(mnt("/d/b").c_str(), O_RDWR | O_APPEND | O_CLOEXEC));
    ASSERT_GE(w.fd, 0);
    ASSERT_GE(r.fd, 0);
    ASSERT_GE(lower.fd, 0);
    undo(s, {"/r"});
    model_undo(snaps_[s], "/r");
    EXPECT_EQ(pread_all(r.fd), "r1 after") << "a read-only fd of the replaced file";
    EXPECT_EQ(::pwrite(w.fd, "W1", 2, 0), 2) << "writing through an fd of a path not undone: " << errno_text(errno);
    EXPECT_EQ(::write(lower.fd, "+", 1), 1) << "appending through an fd of a lower file: " << errno_text(errno);
    EXPECT_EQ(::fsync(w.fd), 0) << "fsync of an fd opened before undo-change: " << errno_text(errno);
    EXPECT_EQ(::fsync(lower.fd), 0) << "fsync of an fd opened before undo-change: " << errno_text(errno);
    live_["/w"] = {'f', "W1"};
    live_["/d/b"] = {'f', "beta\n+"};
    expect_intact("writes through fds opened before undo-change");
    w.reset();
    r.reset();
    lower.reset();
    ASSERT_EQ(env_->remount(), "");
    expect_intact("after a remount");
}

} // namespace
} // namespace layerd::test
