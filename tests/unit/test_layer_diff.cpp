// SPDX-License-Identifier: LGPL-2.1-or-later
// diff_views against a brute-force diff of two full walks, on layer chains
// made by the kernel's overlayfs (each layer the upper of a mount over the
// ones before, as snapshots are), plus hand-written cases for every flag.
// Needs root (kernel mounts, trusted.* xattrs); skips otherwise.
#include "layer_diff.hpp"
#include "layer_view.hpp"
#include "overlay_format.hpp"
#include "resolve.hpp"
#include "unique_fd.hpp"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

using namespace layerd;

// Shared with test_layer_view.cpp, which defines them (same executable).
namespace layerd::layer_test {
std::string make_scratch();
void remove_scratch(const std::string& dir);
std::string overlay_unavailable();
int mount_overlay(const std::vector<std::string>& lowers, const std::string& upper, const std::string& work,
                  const std::string& mnt);
void unmount_overlay(const std::string& mnt);
void populate_tree(const std::string& dir, uint64_t seed);
int build_layer(const std::vector<std::string>& lowers, const std::string& upper, const std::string& work,
                const std::string& mnt, uint64_t seed, int count);
std::vector<uint64_t> test_seeds(size_t fixed);
} // namespace layerd::layer_test

using namespace layerd::layer_test;

namespace {

using Lines = std::vector<std::string>;

bool is_acl(const std::string& name)
{
    return name == "system.posix_acl_access" || name == "system.posix_acl_default";
}

// Everything the brute force compares, taken from one full walk.
struct Seen {
    struct stat st;
    std::string data; // regular files
    std::string target;
    XattrList xattrs, acls;
};
using Tree = std::vector<std::pair<std::string, Seen>>; // walk order

std::string read_all(int path_fd)
{
    std::string out;
    int fd = reopen_fd(path_fd, O_RDONLY);
    if (fd < 0)
        return "<open error>";
    UniqueFd owner(fd);
    char buf[65536];
    ssize_t n;
    while ((n = ::read(fd, buf, sizeof buf)) > 0)
        out.append(buf, static_cast<size_t>(n));
    return out;
}

Tree full_walk(const std::vector<int>& layers, const OverlayXattrs& xattrs)
{
    Tree tree;
    int r = walk_view(layers, xattrs, [&](const std::string& path, const ViewEntry& e) {
        Seen s;
        s.st = e.st;
        if (S_ISREG(e.st.st_mode))
            s.data = read_all(e.fd());
        s.target = e.symlink_target;
        XattrList all;
        EXPECT_EQ(view_xattrs(e, xattrs, &all), 0);
        for (auto& kv : all)
            (is_acl(kv.first) ? s.acls : s.xattrs).push_back(kv);
        tree.emplace_back(path, std::move(s));
        return 0;
    });
    EXPECT_EQ(r, 0);
    return tree;
}

// snapper's columns, computed from scratch: [+-tc.] p u g x a.
std::string flags_of(const Seen* a, const Seen* b)
{
    if (!a)
        return "+.....";
    if (!b)
        return "-.....";
    std::string f = "......";
    if (a->st.st_dev == b->st.st_dev && a->st.st_ino == b->st.st_ino)
        return f;
    mode_t ta = a->st.st_mode & S_IFMT, tb = b->st.st_mode & S_IFMT;
    if (ta != tb)
        f[0] = 't';
    else if ((S_ISREG(ta) && a->data != b->data) || (S_ISLNK(ta) && a->target != b->target) ||
             ((S_ISCHR(ta) || S_ISBLK(ta)) && a->st.st_rdev != b->st.st_rdev))
        f[0] = 'c';
    if ((a->st.st_mode & 07777) != (b->st.st_mode & 07777))
        f[1] = 'p';
    if (a->st.st_uid != b->st.st_uid)
        f[2] = 'u';
    if (a->st.st_gid != b->st.st_gid)
        f[3] = 'g';
    if (a->xattrs != b->xattrs)
        f[4] = 'x';
    if (a->acls != b->acls)
        f[5] = 'a';
    return f;
}

Lines brute_force_diff(const Tree& a, const Tree& b)
{
    Lines out;
    size_t i = 0, j = 0;
    while (i < a.size() || j < b.size()) {
        const Seen* sa = nullptr;
        const Seen* sb = nullptr;
        std::string path;
        if (j >= b.size() || (i < a.size() && path_less(a[i].first, b[j].first))) {
            path = a[i].first;
            sa = &a[i++].second;
        } else if (i >= a.size() || path_less(b[j].first, a[i].first)) {
            path = b[j].first;
            sb = &b[j++].second;
        } else {
            path = a[i].first;
            sa = &a[i++].second;
            sb = &b[j++].second;
        }
        if (std::string f = flags_of(sa, sb); f != "......")
            out.push_back(path.append(" ").append(f));
    }
    return out;
}

// diff_views as lines; also checks the order it promises.
Lines diff_lines(const std::vector<int>& a, const std::vector<int>& b, size_t shared, const OverlayXattrs& xattrs,
                 DiffStats* stats = nullptr)
{
    Lines out;
    std::string last;
    int r = diff_views(
        a, b, shared, xattrs,
        [&](const DiffEntry& e) {
            EXPECT_TRUE(last.empty() || path_less(last, e.path)) << last << " before " << e.path;
            last = e.path;
            out.push_back(e.path + " " + e.flags());
            return 0;
        },
        stats);
    EXPECT_EQ(r, 0) << std::strerror(-r);
    return out;
}

::testing::AssertionResult same_lines(const Lines& got, const Lines& want)
{
    if (got == want)
        return ::testing::AssertionSuccess();
    auto r = ::testing::AssertionFailure();
    r << "diff_views gave " << got.size() << " lines, expected " << want.size() << "\n";
    size_t shown = 0;
    for (const auto& l : got)
        if (std::find(want.begin(), want.end(), l) == want.end() && shown++ < 15)
            r << "  unexpected: " << l << "\n";
    for (const auto& l : want)
        if (std::find(got.begin(), got.end(), l) == got.end() && shown++ < 30)
            r << "  missing:    " << l << "\n";
    if (shown == 0)
        r << "  same lines, other order\n";
    return r;
}

class LayerDiff : public ::testing::Test {
protected:
    void SetUp() override
    {
        if (std::string why = overlay_unavailable(); !why.empty())
            GTEST_SKIP() << why;
        root_ = make_scratch();
        ASSERT_FALSE(root_.empty());
        for (auto d : {"/w", "/m"})
            ASSERT_EQ(::mkdir((root_ + d).c_str(), 0755), 0);
    }
    void TearDown() override
    {
        if (root_.empty())
            return;
        unmount_overlay(mnt());
        remove_scratch(root_);
    }

    std::string dir(const std::string& name) const { return root_ + "/" + name; }
    std::string mnt(const std::string& rel = "") const { return root_ + "/m" + (rel.empty() ? "" : "/" + rel); }
    std::string work() const { return root_ + "/w"; }

    // Mounts UPPER over LOWERS (names, top first) for hand-made changes.
    void mount_rw(const std::vector<std::string>& lowers, const std::string& upper)
    {
        ::mkdir(dir(upper).c_str(), 0755);
        ASSERT_EQ(mount_overlay(paths(lowers), dir(upper), work(), mnt()), 0);
    }
    void umount_rw() { unmount_overlay(mnt()); }

    std::vector<std::string> paths(const std::vector<std::string>& names) const
    {
        std::vector<std::string> out;
        out.reserve(names.size());
        for (const auto& n : names)
            out.push_back(dir(n));
        return out;
    }

    std::vector<int> view(const std::vector<std::string>& layers)
    {
        std::vector<int> out;
        for (const auto& l : layers) {
            fds_.emplace_back(::open(dir(l).c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
            EXPECT_TRUE(fds_.back()) << l;
            out.push_back(fds_.back().get());
        }
        return out;
    }

    // diff_views of A and B (layer names, top first) against the brute force.
    void check(const std::vector<std::string>& a, const std::vector<std::string>& b, size_t shared,
               size_t* changes = nullptr)
    {
        auto va = view(a), vb = view(b);
        DiffStats stats;
        Lines got = diff_lines(va, vb, shared, xattrs_, &stats);
        Lines want = brute_force_diff(full_walk(va, xattrs_), full_walk(vb, xattrs_));
        EXPECT_TRUE(same_lines(got, want)) << a.front() << " -> " << b.front() << " sharing " << shared;
        if (changes)
            *changes += want.size();
    }

    void write(const std::string& path, const std::string& data, mode_t mode = 0644)
    {
        int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
        ASSERT_GE(fd, 0) << path << ": " << std::strerror(errno);
        UniqueFd owner(fd);
        ASSERT_EQ(::write(fd, data.data(), data.size()), static_cast<ssize_t>(data.size()));
        ASSERT_EQ(::fchmod(fd, mode), 0);
    }
    void make_dir(const std::string& path, mode_t mode = 0755)
    {
        ASSERT_EQ(::mkdir(path.c_str(), mode), 0) << path;
        ASSERT_EQ(::chmod(path.c_str(), mode), 0);
    }

    std::string root_;
    std::vector<UniqueFd> fds_;
    OverlayXattrs xattrs_{XattrFormat::trusted};
};

// A POSIX ACL as the kernel stores it: version 2, then (tag, perm, id).
std::string acl_blob(uint32_t user)
{
    std::string s;
    auto u16 = [&](uint16_t v) { s.append(reinterpret_cast<const char*>(&v), 2); };
    auto u32 = [&](uint32_t v) { s.append(reinterpret_cast<const char*>(&v), 4); };
    u32(2);
    u16(0x01), u16(6), u32(~0u);  // user::rw-
    u16(0x02), u16(4), u32(user); // user:USER:r--
    u16(0x04), u16(4), u32(~0u);  // group::r--
    u16(0x10), u16(4), u32(~0u);  // mask::r--
    u16(0x20), u16(4), u32(~0u);  // other::r--
    return s;
}

} // namespace

TEST(DiffEntryFlags, SnapperColumns)
{
    DiffEntry e;
    e.status = DiffEntry::created;
    EXPECT_EQ(e.flags(), "+.....");
    e.status = DiffEntry::deleted;
    EXPECT_EQ(e.flags(), "-.....");
    e.status = DiffEntry::type | DiffEntry::content | DiffEntry::owner;
    EXPECT_EQ(e.flags(), "t.u...");
    e.status = DiffEntry::content | DiffEntry::permissions | DiffEntry::group | DiffEntry::xattrs | DiffEntry::acl;
    EXPECT_EQ(e.flags(), "cp.gxa");
    e.status = 0;
    EXPECT_EQ(e.flags(), "......");
}

TEST_F(LayerDiff, EveryFlag)
{
    make_dir(dir("base"));
    for (auto name : {"content", "grow", "same", "perm", "owner", "group", "xattr", "acl", "both", "gone", "touched"})
        write(dir("base/") + name, "abc");
    write(dir("base/totype"), "abc", 0755);
    make_dir(dir("base/dir"));
    ASSERT_EQ(::symlink("a", dir("base/link").c_str()), 0);
    ASSERT_EQ(::mknod(dir("base/dev").c_str(), S_IFCHR | 0600, makedev(1, 3)), 0);

    mount_rw({"base"}, "b1");
    write(mnt("content"), "abd");
    {
        UniqueFd f(::open(mnt("grow").c_str(), O_WRONLY | O_APPEND | O_CLOEXEC));
        ASSERT_EQ(::write(f.get(), "d", 1), 1);
    }
    write(mnt("same"), "abc"); // copied up, another inode, the same bytes
    ASSERT_EQ(::chmod(mnt("perm").c_str(), 0600), 0);
    ASSERT_EQ(::chown(mnt("owner").c_str(), 1000, -1), 0);
    ASSERT_EQ(::chown(mnt("group").c_str(), -1, 100), 0);
    ASSERT_EQ(::setxattr(mnt("xattr").c_str(), "trusted.k", "v", 1, 0), 0);
    std::string acl = acl_blob(1000);
    bool acls = ::setxattr(mnt("acl").c_str(), "system.posix_acl_access", acl.data(), acl.size(), 0) == 0;
    write(mnt("both"), "xyz", 0600);
    ASSERT_EQ(::chown(mnt("both").c_str(), 1000, -1), 0);
    ASSERT_EQ(::unlink(mnt("gone").c_str()), 0);
    write(mnt("new"), "new");
    struct timespec ts[2] = {{1, 0}, {2, 0}};
    ASSERT_EQ(::utimensat(AT_FDCWD, mnt("touched").c_str(), ts, 0), 0); // times are no flag
    ASSERT_EQ(::unlink(mnt("totype").c_str()), 0);
    make_dir(mnt("totype"));
    ASSERT_EQ(::chmod(mnt("dir").c_str(), 0700), 0);
    ASSERT_EQ(::unlink(mnt("link").c_str()), 0);
    ASSERT_EQ(::symlink("b", mnt("link").c_str()), 0);
    ASSERT_EQ(::unlink(mnt("dev").c_str()), 0);
    ASSERT_EQ(::mknod(mnt("dev").c_str(), S_IFCHR | 0600, makedev(1, 5)), 0);
    umount_rw();

    Lines want = {"/both cpu...", "/content c.....", "/dev c.....",  "/dir .p....",    "/gone -.....",
                  "/group ...g..", "/grow c.....",   "/link c.....", "/new +.....",    "/owner ..u...",
                  "/perm .p....",  "/totype t.....", "/xattr ....x."};
    if (acls)
        want.insert(want.begin(), "/acl .....a");
    else
        std::cout << "[ note     ] no POSIX ACLs on this filesystem: 'a' not checked" << std::endl;
    // A is the parent snapshot itself (no own layers) or has an empty own one.
    make_dir(dir("a1"));
    EXPECT_TRUE(same_lines(diff_lines(view({"base"}), view({"b1", "base"}), 1, xattrs_), want));
    EXPECT_TRUE(same_lines(diff_lines(view({"a1", "base"}), view({"b1", "base"}), 1, xattrs_), want));
    check({"base"}, {"b1", "base"}, 1);
    check({"b1", "base"}, {"base"}, 1);
}

TEST_F(LayerDiff, RenamedDirectory)
{
    make_dir(dir("base"));
    make_dir(dir("base/D"));
    make_dir(dir("base/D/sub"));
    write(dir("base/D/x"), "x");
    write(dir("base/D/sub/y"), "y");
    write(dir("base/keep"), "k");
    mount_rw({"base"}, "b1");
    ASSERT_EQ(::rename(mnt("D").c_str(), mnt("E").c_str()), 0);
    umount_rw();
    Lines want = {"/D -.....", "/D/sub -.....", "/D/sub/y -.....", "/D/x -.....",
                  "/E +.....", "/E/sub +.....", "/E/sub/y +.....", "/E/x +....."};
    auto a = view({"base"});
    auto b = view({"b1", "base"});
    EXPECT_TRUE(same_lines(diff_lines(a, b, 1, xattrs_), want));
    Lines back = {"/D +.....", "/D/sub +.....", "/D/sub/y +.....", "/D/x +.....",
                  "/E -.....", "/E/sub -.....", "/E/sub/y -.....", "/E/x -....."};
    EXPECT_TRUE(same_lines(diff_lines(b, a, 1, xattrs_), back));
}

// The same name, its shared part now found through a redirect: the
// directory is compared as a whole.
TEST_F(LayerDiff, DirectoryRenamedOverAnother)
{
    make_dir(dir("base"));
    make_dir(dir("base/D"));
    make_dir(dir("base/E"));
    write(dir("base/D/x"), "x");
    write(dir("base/E/y"), "y");
    mount_rw({"base"}, "b1");
    ASSERT_EQ(std::system(("rm -rf '" + mnt("E") + "'").c_str()), 0);
    ASSERT_EQ(::rename(mnt("D").c_str(), mnt("E").c_str()), 0);
    umount_rw();
    char buf[16];
    ASSERT_EQ(::getxattr(dir("b1/E").c_str(), "trusted.overlay.redirect", buf, sizeof buf), 1);
    Lines want = {"/D -.....", "/D/x -.....", "/E/x +.....", "/E/y -....."};
    EXPECT_TRUE(same_lines(diff_lines(view({"base"}), view({"b1", "base"}), 1, xattrs_), want));
    check({"b1", "base"}, {"base"}, 1);
}

TEST_F(LayerDiff, DeletedSubtree)
{
    make_dir(dir("base"));
    make_dir(dir("base/D"));
    make_dir(dir("base/D/sub"));
    write(dir("base/D/x"), "x");
    write(dir("base/D/sub/y"), "y");
    mount_rw({"base"}, "b1");
    ASSERT_EQ(std::system(("rm -rf '" + mnt("D") + "'").c_str()), 0);
    umount_rw();
    Lines want = {"/D -.....", "/D/sub -.....", "/D/sub/y -.....", "/D/x -....."};
    EXPECT_TRUE(same_lines(diff_lines(view({"base"}), view({"b1", "base"}), 1, xattrs_), want));
}

TEST_F(LayerDiff, OpaqueReplacement)
{
    make_dir(dir("base"));
    make_dir(dir("base/D"));
    make_dir(dir("base/D/sub"));
    write(dir("base/D/x"), "x");
    write(dir("base/D/sub/y"), "y");
    mount_rw({"base"}, "b1");
    ASSERT_EQ(std::system(("rm -rf '" + mnt("D") + "'").c_str()), 0);
    make_dir(mnt("D"));
    write(mnt("D/x"), "x"); // the same content at the same place: no change
    write(mnt("D/new"), "n");
    umount_rw();
    char v = 0;
    ASSERT_EQ(::getxattr(dir("b1/D").c_str(), "trusted.overlay.opaque", &v, 1), 1);
    Lines want = {"/D/new +.....", "/D/sub -.....", "/D/sub/y -....."};
    DiffStats stats;
    EXPECT_TRUE(same_lines(diff_lines(view({"base"}), view({"b1", "base"}), 1, xattrs_, &stats), want));
    EXPECT_GE(stats.expanded, 1u) << "the opaque dir is compared as a whole";
}

TEST_F(LayerDiff, CallbackStopsAndBadSharedLayersAreRefused)
{
    make_dir(dir("base"));
    make_dir(dir("other"));
    mount_rw({"base"}, "b1");
    write(mnt("a"), "a");
    write(mnt("b"), "b");
    umount_rw();
    auto base = view({"base"});
    auto b = view({"b1", "base"});
    int calls = 0;
    EXPECT_EQ(diff_views(base, b, 1, xattrs_, [&](const DiffEntry&) { return ++calls == 1 ? 7 : 0; }), 7);
    EXPECT_EQ(calls, 1);
    auto wrong = view({"b1", "other"});
    EXPECT_EQ(diff_views(base, wrong, 1, xattrs_, [](const DiffEntry&) { return 0; }), -EINVAL);
    EXPECT_EQ(diff_views(base, b, 2, xattrs_, [](const DiffEntry&) { return 0; }), -EINVAL);
}

// Snapshot-like trees of layers, each made through a kernel mount over its
// parent chain: a trunk and two branches (as after a rollback).
TEST_F(LayerDiff, RandomLayerTreesMatchBruteForce)
{
    for (uint64_t seed : test_seeds(4)) {
        SCOPED_TRACE("seed " + std::to_string(seed) + " (replay: LAYERD_TEST_SEED=" + std::to_string(seed) + ")");
        std::cout << "[ seed     ] " << seed << std::endl;
        std::string s = "s" + std::to_string(seed);
        make_dir(dir(s));
        populate_tree(dir(s), seed);
        auto layer = [&](const std::string& name, const std::vector<std::string>& chain, int n) {
            ASSERT_EQ(build_layer(paths(chain), dir(name), work(), mnt(), std::hash<std::string>{}(name), n), 0);
        };
        std::string t1 = s + "t1", t2 = s + "t2", t3 = s + "t3", x1 = s + "x1", x2 = s + "x2", y1 = s + "y1",
                    y2 = s + "y2";
        layer(t1, {s}, 60);
        layer(t2, {t1, s}, 60);
        layer(t3, {t2, t1, s}, 60);
        layer(x1, {t3, t2, t1, s}, 60);
        layer(x2, {x1, t3, t2, t1, s}, 60);
        layer(y1, {t1, s}, 60);
        layer(y2, {y1, t1, s}, 60);
        std::vector<std::string> T1{t1, s}, T3{t3, t2, t1, s}, X2{x2, x1, t3, t2, t1, s}, Y2{y2, y1, t1, s};
        size_t changes = 0;
        check(T1, T3, 2, &changes);
        check(T3, T1, 2, &changes);
        check(X2, Y2, 2, &changes);
        check(Y2, X2, 2, &changes);
        check(T3, X2, 4, &changes);
        check(X2, {t2, t1, s}, 3, &changes);
        check({s}, X2, 1, &changes);
        check(X2, Y2, 0, &changes); // nothing declared shared: still right
        check(X2, X2, 6, &changes);
        std::cout << "[ changes  ] " << changes << " lines over 9 diffs" << std::endl;
    }
}

// 100k files below, 10 changed: the diff looks only at what the changed
// layer holds. Asserted on the lookup counter, not on time.
TEST_F(LayerDiff, BigLayerSmallChange)
{
    constexpr int dirs = 100, files = 1000;
    make_dir(dir("base"));
    for (int d = 0; d < dirs; ++d) {
        std::string dd = dir("base/d" + std::to_string(d));
        make_dir(dd);
        for (int f = 0; f < files; ++f) {
            UniqueFd fd(::open((dd + "/f" + std::to_string(f)).c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
            ASSERT_TRUE(fd);
        }
    }
    mount_rw({"base"}, "b1");
    write(mnt("d1/f1"), "changed");
    write(mnt("d2/f2"), "changed");
    ASSERT_EQ(::chmod(mnt("d3/f3").c_str(), 0600), 0);
    ASSERT_EQ(::chown(mnt("d4/f4").c_str(), 1000, -1), 0);
    ASSERT_EQ(::chown(mnt("d5/f5").c_str(), -1, 100), 0);
    ASSERT_EQ(::setxattr(mnt("d6/f6").c_str(), "trusted.k", "v", 1, 0), 0);
    ASSERT_EQ(::unlink(mnt("d7/f7").c_str()), 0);
    write(mnt("d8/new"), "");
    ASSERT_EQ(::rename(mnt("d9/f9").c_str(), mnt("d9/renamed").c_str()), 0);
    write(mnt("d10/f10"), ""); // rewritten identically: no change
    umount_rw();

    auto a = view({"base"});
    auto b = view({"b1", "base"});
    Lines want = {"/d1/f1 c.....",  "/d2/f2 c.....",  "/d3/f3 .p....",      "/d4/f4 ..u...",
                  "/d5/f5 ...g..",  "/d6/f6 ....x.",  "/d7/f7 -.....",      "/d8/new +.....",
                  "/d9/f9 -.....", "/d9/renamed +....."};
    std::sort(want.begin(), want.end(), [](const std::string& x, const std::string& y) { return path_less(x, y); });
    DiffStats stats;
    auto t0 = std::chrono::steady_clock::now();
    Lines got = diff_lines(a, b, 1, xattrs_, &stats);
    auto t1 = std::chrono::steady_clock::now();
    EXPECT_TRUE(same_lines(got, want));
    // Ten dirs copied up, one or two names in each, in both views.
    EXPECT_LE(stats.lookups, 2u * (10 + 12));
    EXPECT_LE(stats.dirs_listed, 11u + 10u);
    EXPECT_EQ(stats.expanded, 0u);

    // The brute force agrees, and costs a walk of everything.
    uint64_t walked = 0;
    auto t2 = std::chrono::steady_clock::now();
    Lines brute = brute_force_diff(full_walk(a, xattrs_), full_walk(b, xattrs_));
    auto t3 = std::chrono::steady_clock::now();
    walk_view(b, xattrs_, [&](const std::string&, const ViewEntry&) {
        ++walked;
        return 0;
    });
    EXPECT_TRUE(same_lines(got, brute));
    EXPECT_GT(walked, 100000u);
    using ms = std::chrono::duration<double, std::milli>;
    std::cout << "[ timing   ] diff " << ms(t1 - t0).count() << " ms (" << stats.lookups << " lookups, "
              << stats.dirs_listed << " dirs read); brute force " << ms(t3 - t2).count() << " ms (" << walked
              << " entries per view)" << std::endl;
}
