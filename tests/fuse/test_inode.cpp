// SPDX-License-Identifier: LGPL-2.1-or-later
// Inode numbers of layerd-fs (DESIGN.md §3): the same file shows the same
// st_ino before and after copy-up, after rename and across remounts; no two
// files of one mount share one, even when the layers sit on different
// filesystems whose inode numbers collide; readdir's d_ino agrees with stat.
#include "mount_fixture.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <vector>

using namespace layerd::test;

namespace {

std::string errname(int e)
{
    const char* n = strerrorname_np(e);
    return n ? n : std::to_string(e);
}

void mkdir_p(const std::string& path)
{
    ASSERT_EQ(sh("mkdir -p '" + path + "'"), 0) << path;
}

void make_whiteout(const std::string& path)
{
    ASSERT_EQ(::mknod(path.c_str(), S_IFCHR | 0, makedev(0, 0)), 0) << path << ": " << errname(errno);
}

ino_t ino_of(const std::string& path)
{
    struct stat st {};
    EXPECT_EQ(::lstat(path.c_str(), &st), 0) << path << ": " << errname(errno);
    return st.st_ino;
}

struct Entry {
    ino_t d_ino;
    unsigned char d_type;
};

// name -> (d_ino, d_type) as readdir reports them, "." and ".." included.
std::map<std::string, Entry> readdir_map(const std::string& dir)
{
    std::map<std::string, Entry> out;
    DIR* d = ::opendir(dir.c_str());
    if (!d) {
        ADD_FAILURE() << "opendir " << dir << ": " << errname(errno);
        return out;
    }
    while (struct dirent* e = ::readdir(d)) {
        bool fresh = out.emplace(e->d_name, Entry{e->d_ino, e->d_type}).second;
        EXPECT_TRUE(fresh) << dir << ": readdir returned " << e->d_name << " twice";
    }
    ::closedir(d);
    return out;
}

// Relative path -> st_ino for everything under ROOT (ROOT itself as "").
void walk(const std::string& root, const std::string& rel, std::map<std::string, ino_t>& out)
{
    std::string path = rel.empty() ? root : root + "/" + rel;
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0) {
        ADD_FAILURE() << "lstat " << path << ": " << errname(errno);
        return;
    }
    out[rel] = st.st_ino;
    if (!S_ISDIR(st.st_mode))
        return;
    for (auto& [name, e] : readdir_map(path)) {
        if (name == "." || name == "..")
            continue;
        walk(root, rel.empty() ? name : rel + "/" + name, out);
    }
}

std::map<std::string, ino_t> walk(const std::string& root)
{
    std::map<std::string, ino_t> out;
    walk(root, "", out);
    return out;
}

// Every inode number in M belongs to exactly one path.
void expect_unique(const std::map<std::string, ino_t>& m)
{
    std::map<ino_t, std::string> seen;
    for (auto& [path, ino] : m) {
        auto [it, fresh] = seen.emplace(ino, path);
        EXPECT_TRUE(fresh) << "st_ino " << ino << " shared by '" << it->second << "' and '" << path << "'";
    }
}

// For every dir in the tree: each readdir d_ino (and d_type) matches lstat.
void expect_readdir_matches_stat(const std::string& root, const std::string& rel = "")
{
    std::string dir = rel.empty() ? root : root + "/" + rel;
    for (auto& [name, e] : readdir_map(dir)) {
        if (name == "..")
            continue; // the parent's d_ino of a FUSE root is the kernel's business
        std::string p = name == "." ? dir : dir + "/" + name;
        struct stat st {};
        ASSERT_EQ(::lstat(p.c_str(), &st), 0) << p << ": " << errname(errno);
        EXPECT_EQ(e.d_ino, st.st_ino) << "d_ino vs st_ino of " << p;
        if (e.d_type != DT_UNKNOWN) {
            EXPECT_EQ(DTTOIF(e.d_type), st.st_mode & S_IFMT) << "d_type of " << p;
        }
        if (name != "." && S_ISDIR(st.st_mode))
            expect_readdir_matches_stat(root, rel.empty() ? name : rel + "/" + name);
    }
}

class Inode : public OverlayTest {};

TEST_F(Inode, StableAcrossCopyUpAndRemount)
{
    write_file(lower(0, "a"), "a");
    write_file(lower(1, "b"), "b");
    mkdir_p(lower(1, "d"));
    write_file(lower(1, "d/x"), "x");
    mkdir_p(lower(0, "m"));
    mkdir_p(lower(1, "m"));
    write_file(lower(0, "m/p"), "p");
    write_file(lower(1, "m/q"), "q");
    mkdir_p(lower(1, "dd/sub"));
    write_file(lower(1, "dd/sub/deep"), "deep");
    mount();

    const std::vector<std::string> names{"", "a", "b", "d", "d/x", "m", "m/p", "m/q", "dd", "dd/sub", "dd/sub/deep"};
    std::map<std::string, ino_t> before;
    for (auto& n : names)
        before[n] = ino_of(mnt(n));
    expect_unique(before);
    int open_fd = ::open(mnt("b").c_str(), O_RDONLY);
    ASSERT_GE(open_fd, 0);

    write_file(mnt("a"), "A");                          // data copy-up, lower0
    ASSERT_EQ(::chmod(mnt("b").c_str(), 0600), 0);      // metadata copy-up, lower1
    write_file(mnt("d/new"), "n");                      // copies up dir d
    write_file(mnt("m/new"), "n");                      // copies up merged dir m
    write_file(mnt("m/q"), "Q");                        // file inside a merged dir
    ASSERT_EQ(::utimensat(AT_FDCWD, mnt("dd/sub/deep").c_str(), nullptr, 0), 0); // copies dd, sub, deep
    for (const char* n : {"a", "b", "d", "m", "m/q", "dd", "dd/sub", "dd/sub/deep"})
        ASSERT_TRUE(exists(upper(n))) << n << " was not copied up: the test proves nothing";

    for (auto& n : names)
        EXPECT_EQ(ino_of(mnt(n)), before[n]) << "'" << n << "' after copy-up";
    struct stat st {};
    ASSERT_EQ(::fstat(open_fd, &st), 0);
    EXPECT_EQ(st.st_ino, before["b"]) << "fstat of an fd opened before copy-up";
    ::close(open_fd);
    const ino_t new_d = ino_of(mnt("d/new"));
    const ino_t new_m = ino_of(mnt("m/new"));

    remount();
    for (auto& n : names)
        EXPECT_EQ(ino_of(mnt(n)), before[n]) << "'" << n << "' after remount";
    EXPECT_EQ(ino_of(mnt("d/new")), new_d);
    EXPECT_EQ(ino_of(mnt("m/new")), new_m);
    remount();
    for (auto& n : names)
        EXPECT_EQ(ino_of(mnt(n)), before[n]) << "'" << n << "' after a second remount";
}

TEST_F(Inode, WholeTreeStableAcrossRemount)
{
    for (int i = 0; i < 20; ++i) {
        mkdir_p(lower(i % 2, "t/d" + std::to_string(i % 5)));
        write_file(lower(i % 2, "t/d" + std::to_string(i % 5) + "/f" + std::to_string(i)), "x");
    }
    mkdir_p(lower(1, "r/in"));
    write_file(lower(1, "r/in/f"), "f");
    mkdir_p(upper("up"));
    write_file(upper("up/u"), "u");
    mount();
    write_file(mnt("t/d1/created"), "c");
    write_file(mnt("t/d2/f2"), "copied");
    ASSERT_EQ(::rename(mnt("r").c_str(), mnt("r2").c_str()), 0) << errname(errno);
    ASSERT_EQ(::symlink("target", mnt("t/sl").c_str()), 0);
    ASSERT_EQ(::mkfifo(mnt("t/fifo").c_str(), 0644), 0);

    auto first = walk(mnt());
    ASSERT_GE(first.size(), 30u);
    expect_unique(first);
    remount();
    EXPECT_EQ(walk(mnt()), first);
}

TEST_F(Inode, UniqueAcrossLayersAndChurn)
{
    for (int i = 0; i < 100; ++i) {
        write_file(lower(0, "l0_" + std::to_string(i)), "0");
        write_file(lower(1, "l1_" + std::to_string(i)), "1");
        write_file(lower(1, "both_" + std::to_string(i % 10)), "1"); // shadowed by lower0 below
    }
    for (int i = 0; i < 10; ++i)
        write_file(lower(0, "both_" + std::to_string(i)), "0");
    mkdir_p(lower(0, "m/a"));
    mkdir_p(lower(1, "m/b"));
    mkdir_p(upper("m/c"));
    for (int i = 0; i < 30; ++i)
        write_file(upper("u_" + std::to_string(i)), "u");
    make_whiteout(upper("l1_0"));
    mount();

    // Files that come and go: the backing fs hands their inode numbers to the
    // next files at once.
    for (int round = 0; round < 3; ++round) {
        for (int i = 0; i < 20; ++i)
            write_file(mnt("churn_" + std::to_string(i)), "c");
        for (int i = 0; i < 20; ++i)
            ASSERT_EQ(::unlink(mnt("churn_" + std::to_string(i)).c_str()), 0);
    }
    for (int i = 0; i < 20; ++i)
        ASSERT_EQ(::mkdir(mnt("new_" + std::to_string(i)).c_str(), 0755), 0);
    for (int i = 1; i < 20; ++i)
        write_file(mnt("l1_" + std::to_string(i)), "copied"); // copy-ups

    auto all = walk(mnt());
    EXPECT_EQ(all.size(), 1u + 100 + 99 + 10 + 4 + 30 + 20);
    EXPECT_FALSE(all.count("l1_0"));
    expect_unique(all);
    std::set<ino_t> d_inos;
    size_t n = 0;
    for (auto& [name, e] : readdir_map(mnt())) {
        if (name == "." || name == "..")
            continue;
        d_inos.insert(e.d_ino);
        ++n;
    }
    EXPECT_EQ(d_inos.size(), n) << "readdir d_ino values collide";
}

TEST_F(Inode, StatAndReaddirAgree)
{
    write_file(lower(0, "a"), "a");
    write_file(lower(1, "b"), "b");
    write_file(lower(1, "c"), "c");
    mkdir_p(lower(0, "m/x"));
    mkdir_p(lower(1, "m/y"));
    write_file(lower(1, "m/y/f"), "f");
    write_file(lower(1, "m/z"), "z");
    mkdir_p(lower(0, "o"));
    ASSERT_EQ(::lsetxattr(lower(0, "o").c_str(), "trusted.overlay.opaque", "y", 1, 0), 0);
    mkdir_p(lower(1, "o"));
    write_file(lower(1, "o/hidden"), "h");
    write_file(lower(0, "o/shown"), "s");
    mkdir_p(lower(1, "ren/in"));
    write_file(lower(1, "ren/in/g"), "g");
    ASSERT_EQ(::symlink("a", lower(1, "sl").c_str()), 0);
    mount();
    write_file(mnt("c"), "copied");
    write_file(mnt("m/new"), "n");
    ASSERT_EQ(::mkfifo(mnt("m/x/fifo").c_str(), 0644), 0);
    ASSERT_EQ(::rename(mnt("ren").c_str(), mnt("ren2").c_str()), 0) << errname(errno);

    expect_readdir_matches_stat(mnt());
    remount();
    expect_readdir_matches_stat(mnt());
}

TEST_F(Inode, StableAcrossRename)
{
    write_file(lower(1, "f"), "f");
    write_file(lower(1, "g"), "g");
    mkdir_p(lower(1, "d"));
    write_file(lower(1, "d/x"), "x");
    mkdir_p(lower(0, "m"));
    mkdir_p(lower(1, "m"));
    write_file(lower(1, "m/y"), "y");
    mkdir_p(lower(0, "sub"));
    mount();
    write_file(mnt("u"), "u");

    std::map<std::string, ino_t> before;
    for (const char* n : {"f", "g", "d", "d/x", "m", "m/y", "u"})
        before[n] = ino_of(mnt(n));

    ASSERT_EQ(::rename(mnt("f").c_str(), mnt("f2").c_str()), 0) << errname(errno);
    ASSERT_EQ(::rename(mnt("d").c_str(), mnt("d2").c_str()), 0) << errname(errno);
    ASSERT_EQ(::rename(mnt("m").c_str(), mnt("sub/m2").c_str()), 0) << errname(errno);
    ASSERT_EQ(::rename(mnt("u").c_str(), mnt("sub/u2").c_str()), 0) << errname(errno);
    ASSERT_EQ(::rename(mnt("f2").c_str(), mnt("g").c_str()), 0) << errname(errno); // over another file

    std::map<std::string, std::string> now{{"f", "g"},        {"d", "d2"},     {"d/x", "d2/x"},
                                           {"m", "sub/m2"},   {"m/y", "sub/m2/y"}, {"u", "sub/u2"}};
    for (auto& [old_name, new_name] : now)
        EXPECT_EQ(ino_of(mnt(new_name)), before[old_name]) << old_name << " -> " << new_name;
    remount();
    for (auto& [old_name, new_name] : now)
        EXPECT_EQ(ino_of(mnt(new_name)), before[old_name]) << old_name << " -> " << new_name << " after remount";
}

// Lowers and upper on three fresh tmpfs mounts: each numbers its inodes from
// the same small counter, so the backing inode numbers of the layers collide.
class InodeSeparateFs : public OverlayTest {
protected:
    void SetUp() override
    {
        OverlayTest::SetUp();
        if (HasFatalFailure())
            return;
        for (const char* n : {"fsA", "fsB", "fsC"}) {
            std::string p = root_ + "/" + n;
            ASSERT_EQ(::mkdir(p.c_str(), 0755), 0);
            ASSERT_EQ(::mount("tmpfs", p.c_str(), "tmpfs", 0, "size=16m,mode=0755"), 0) << p << ": " << errname(errno);
            mounted_.push_back(p);
        }
        ASSERT_EQ(::mkdir((root_ + "/fsC/u").c_str(), 0755), 0);
        ASSERT_EQ(::mkdir((root_ + "/fsC/w").c_str(), 0755), 0);
    }
    void TearDown() override
    {
        proc_.kill_hard();
        fs_.kill_hard();
        for (auto it = mounted_.rbegin(); it != mounted_.rend(); ++it)
            ::umount2(it->c_str(), MNT_DETACH);
        OverlayTest::TearDown();
    }
    void start()
    {
        std::string o = "lowerdir=" + root_ + "/fsA:" + root_ + "/fsB,upperdir=" + root_ + "/fsC/u,workdir=" + root_
            + "/fsC/w";
        std::string error;
        ASSERT_TRUE(proc_.start(o, mnt(), &error)) << error;
    }
    std::string A(const std::string& rel) const { return root_ + "/fsA/" + rel; }
    std::string B(const std::string& rel) const { return root_ + "/fsB/" + rel; }
    std::string C(const std::string& rel) const { return root_ + "/fsC/u/" + rel; }

    FsProcess proc_;
    std::vector<std::string> mounted_;
};

TEST_F(InodeSeparateFs, UniqueWhenBackingInodesCollide)
{
    // The same creation order on each fs gives the same inode numbers.
    for (int i = 0; i < 40; ++i) {
        write_file(A("a" + std::to_string(i)), "A");
        write_file(B("b" + std::to_string(i)), "B");
    }
    mkdir_p(A("dir"));
    mkdir_p(B("dir"));
    write_file(A("dir/x"), "A");
    write_file(B("dir/y"), "B");
    int collisions = 0;
    for (int i = 0; i < 40; ++i)
        collisions += ino_of(A("a" + std::to_string(i))) == ino_of(B("b" + std::to_string(i)));
    ASSERT_GE(collisions, 30) << "the backing inode numbers do not collide: the test proves nothing";
    start();

    // Upper files get the same small numbers again.
    for (int i = 0; i < 40; ++i)
        write_file(mnt("c" + std::to_string(i)), "C");
    std::set<ino_t> a_inos;
    for (int i = 0; i < 40; ++i)
        a_inos.insert(ino_of(A("a" + std::to_string(i))));
    int upper_collisions = 0;
    for (int i = 0; i < 40; ++i)
        upper_collisions += a_inos.count(ino_of(C("c" + std::to_string(i)))) ? 1 : 0;
    ASSERT_GE(upper_collisions, 10) << "upper inode numbers do not collide with fsA's: the test proves less";

    auto all = walk(mnt());
    EXPECT_EQ(all.size(), 1u + 40 + 40 + 40 + 1 + 2);
    expect_unique(all);
    expect_readdir_matches_stat(mnt());

    // Copy-up from another fs keeps the number, and it stays unique.
    const ino_t a5 = ino_of(mnt("a5"));
    const ino_t b7 = ino_of(mnt("b7"));
    write_file(mnt("a5"), "changed");
    ASSERT_EQ(::chmod(mnt("b7").c_str(), 0600), 0);
    ASSERT_TRUE(exists(C("a5")));
    EXPECT_EQ(ino_of(mnt("a5")), a5);
    EXPECT_EQ(ino_of(mnt("b7")), b7);
    all = walk(mnt());
    expect_unique(all);

    ASSERT_EQ(proc_.stop(), 0);
    start();
    EXPECT_EQ(walk(mnt()), all) << "inode numbers changed across remount";
}

} // namespace
