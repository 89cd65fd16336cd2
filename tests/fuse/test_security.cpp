// SPDX-License-Identifier: LGPL-2.1-or-later
// Safety of layerd-fs (DESIGN.md §3): symlinks, hard links, redirects and
// swapped dirs inside a layer never make the engine touch anything outside
// it; the engine never resolves a name through its own mountpoint; callers
// own what they create and cannot forge overlay metadata (whiteouts, opaque
// and redirect xattrs); allow_other lets other users in.
#include "mount_fixture.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

using namespace layerd::test;

namespace {

std::string errname(int e)
{
    const char* n = strerrorname_np(e);
    return n ? n : std::to_string(e);
}

#define EXPECT_ERRNO(expr, err)                                                            \
    do {                                                                                   \
        errno = 0;                                                                         \
        long r_ = static_cast<long>(expr);                                                 \
        int e_ = errno;                                                                    \
        EXPECT_EQ(r_, -1L) << #expr << " succeeded, expected " << errname(err);            \
        if (r_ == -1L) {                                                                   \
            EXPECT_EQ(errname(e_), errname(err)) << #expr;                                 \
        }                                                                                  \
    } while (0)

#define CHILD_CHECK(cond)                                                                  \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            int e_ = errno;                                                                \
            return std::string("line ") + std::to_string(__LINE__) + ": " #cond " (errno " \
                + errname(e_) + ")";                                                       \
        }                                                                                  \
    } while (0)
#define CHILD_ERRNO(expr, err)                                                             \
    do {                                                                                   \
        errno = 0;                                                                         \
        long r_ = static_cast<long>(expr);                                                 \
        int e_ = errno;                                                                    \
        if (r_ != -1L || e_ != (err))                                                      \
            return std::string("line ") + std::to_string(__LINE__) + ": " #expr " gave "    \
                + std::to_string(r_) + " errno " + errname(e_) + ", expected "             \
                + errname(err);                                                            \
    } while (0)

struct Fd {
    int fd = -1;
    explicit Fd(int f) : fd(f) {}
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    ~Fd()
    {
        if (fd >= 0)
            ::close(fd);
    }
    int get() const { return fd; }
};

void mkdir_p(const std::string& path, mode_t mode = 0755)
{
    ASSERT_EQ(sh("mkdir -p '" + path + "'"), 0) << path;
    ASSERT_EQ(::chmod(path.c_str(), mode), 0);
}

std::optional<std::string> xattr_of(const std::string& path, const std::string& name)
{
    char buf[4096];
    ssize_t n = ::lgetxattr(path.c_str(), name.c_str(), buf, sizeof buf);
    if (n < 0)
        return std::nullopt;
    return std::string(buf, static_cast<size_t>(n));
}

std::set<std::string> xattr_names(const std::string& path)
{
    std::set<std::string> out;
    char buf[8192];
    ssize_t n = ::llistxattr(path.c_str(), buf, sizeof buf);
    for (ssize_t i = 0; i < n;) {
        std::string name(buf + i);
        i += static_cast<ssize_t>(name.size()) + 1;
        out.insert(name);
    }
    return out;
}

std::set<std::string> entries(const std::string& path)
{
    std::set<std::string> out;
    DIR* d = ::opendir(path.c_str());
    if (!d)
        return {"<opendir: " + errname(errno) + ">"};
    while (struct dirent* e = ::readdir(d))
        if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0)
            out.insert(e->d_name);
    ::closedir(d);
    return out;
}

std::string readlink_of(const std::string& path)
{
    char buf[4096];
    ssize_t n = ::readlink(path.c_str(), buf, sizeof buf);
    return n < 0 ? "<readlink: " + errname(errno) + ">" : std::string(buf, static_cast<size_t>(n));
}

// For forked children: no gtest assertions there.
bool put(const std::string& path, const std::string& data, int flags = O_WRONLY | O_CREAT | O_TRUNC)
{
    int fd = ::open(path.c_str(), flags | O_CLOEXEC, 0644);
    if (fd < 0)
        return false;
    bool ok = ::write(fd, data.data(), data.size()) == static_cast<ssize_t>(data.size());
    ::close(fd);
    return ok;
}

std::string slurp(const std::string& path)
{
    std::ifstream in(path, std::ios::binary);
    if (!in)
        return "<unreadable>";
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

// Everything about a file that a wrongly followed link could change. ctime
// catches any metadata change, even one undone afterwards.
struct Snapshot {
    bool ok = false;
    std::string content;
    struct stat st {};
    std::set<std::string> xattrs;
};

Snapshot snap(const std::string& path)
{
    Snapshot s;
    s.ok = ::lstat(path.c_str(), &s.st) == 0;
    s.content = slurp(path);
    s.xattrs = xattr_names(path);
    return s;
}

void expect_unchanged(const Snapshot& a, const std::string& path)
{
    SCOPED_TRACE("outside file " + path);
    Snapshot b = snap(path);
    ASSERT_TRUE(a.ok);
    ASSERT_TRUE(b.ok);
    EXPECT_EQ(b.content, a.content);
    EXPECT_EQ(b.st.st_ino, a.st.st_ino);
    EXPECT_EQ(b.st.st_mode, a.st.st_mode);
    EXPECT_EQ(b.st.st_uid, a.st.st_uid);
    EXPECT_EQ(b.st.st_gid, a.st.st_gid);
    EXPECT_EQ(b.st.st_size, a.st.st_size);
    EXPECT_EQ(b.st.st_nlink, a.st.st_nlink);
    EXPECT_EQ(b.st.st_mtim.tv_sec, a.st.st_mtim.tv_sec);
    EXPECT_EQ(b.st.st_mtim.tv_nsec, a.st.st_mtim.tv_nsec);
    EXPECT_EQ(b.st.st_ctim.tv_sec, a.st.st_ctim.tv_sec);
    EXPECT_EQ(b.st.st_ctim.tv_nsec, a.st.st_ctim.tv_nsec);
    EXPECT_EQ(b.xattrs, a.xattrs);
}


// TMP/outside holds canaries the overlay must never modify.
class Security : public OverlayTest {
protected:
    void SetUp() override
    {
        OverlayTest::SetUp();
        if (HasFatalFailure())
            return;
        // mkdtemp made TMP 0700: let the unprivileged children reach mnt.
        ASSERT_EQ(::chmod(root_.c_str(), 0755), 0);
        ASSERT_EQ(::mkdir(outside().c_str(), 0755), 0);
        write_file(outside("canary"), "canary-data", 0644);
        write_file(outside("x"), "outside-x", 0644);
        struct timespec ts[2] = {{1111111111, 0}, {1111111111, 0}};
        ASSERT_EQ(::utimensat(AT_FDCWD, outside("canary").c_str(), ts, 0), 0);
    }
    std::string outside(const std::string& rel = "") const
    {
        return rel.empty() ? root_ + "/outside" : root_ + "/outside/" + rel;
    }
};

TEST_F(Security, AbsoluteSymlinkToEtcPasswd)
{
    ASSERT_EQ(::symlink("/etc/passwd", lower(1, "pw").c_str()), 0);
    mkdir_p(lower(1, "d"));
    ASSERT_EQ(::symlink("/etc/passwd", lower(1, "d/pw").c_str()), 0);
    const Snapshot passwd = snap("/etc/passwd");
    ASSERT_FALSE(passwd.xattrs.count("trusted.layerd-test"));
    mount();

    EXPECT_EQ(readlink_of(mnt("pw")), "/etc/passwd");
    // The kernel follows the link in the overlay's namespace: fine.
    EXPECT_EQ(slurp(mnt("pw")), passwd.content);

    // Operations on the link itself copy up the link, never its target.
    EXPECT_EQ(::lsetxattr(mnt("pw").c_str(), "trusted.layerd-test", "x", 1, 0), 0) << errname(errno);
    EXPECT_EQ(xattr_of(mnt("pw"), "trusted.layerd-test"), std::optional<std::string>("x"));
    EXPECT_TRUE(S_ISLNK(lstat_of(upper("pw")).st_mode));
    EXPECT_EQ(readlink_of(upper("pw")), "/etc/passwd");
    EXPECT_EQ(xattr_of(upper("pw"), "trusted.layerd-test"), std::optional<std::string>("x"));
    EXPECT_EQ(::lremovexattr(mnt("pw").c_str(), "trusted.layerd-test"), 0) << errname(errno);

    // (Timestamps and owners are changed only through links to a canary, in
    // the next test: a broken engine must not be able to damage /etc/passwd.)
    EXPECT_EQ(::linkat(AT_FDCWD, mnt("d/pw").c_str(), AT_FDCWD, mnt("d/pw.hl").c_str(), 0), 0) << errname(errno);
    EXPECT_TRUE(S_ISLNK(lstat_of(upper("d/pw")).st_mode));
    EXPECT_EQ(readlink_of(upper("d/pw.hl")), "/etc/passwd");
    EXPECT_EQ(::rename(mnt("d/pw").c_str(), mnt("d/pw2").c_str()), 0) << errname(errno);
    EXPECT_EQ(readlink_of(mnt("d/pw2")), "/etc/passwd");
    EXPECT_TRUE(S_ISLNK(lstat_of(upper("d/pw2")).st_mode));

    expect_unchanged(passwd, "/etc/passwd");
    if (xattr_of("/etc/passwd", "trusted.layerd-test"))
        ::lremovexattr("/etc/passwd", "trusted.layerd-test"); // undo the damage of a broken engine
}

TEST_F(Security, MetadataOpsOnEscapingSymlinksNeverTouchTheTarget)
{
    mkdir_p(lower(1, "d"));
    const std::string abs_target = outside("canary");
    const std::string rel_target = "../../outside/canary"; // from lower1/d and from mnt/d alike
    std::string deep_target;
    for (int i = 0; i < 12; ++i)
        deep_target += "../";
    deep_target += root_.substr(1) + "/outside/canary";
    ASSERT_EQ(::symlink(abs_target.c_str(), lower(1, "abs").c_str()), 0);
    ASSERT_EQ(::symlink(rel_target.c_str(), lower(1, "d/rel").c_str()), 0);
    ASSERT_EQ(::symlink(deep_target.c_str(), lower(1, "d/deep").c_str()), 0);
    const Snapshot canary = snap(outside("canary"));
    const std::set<std::string> outside_entries = entries(outside());
    mount();

    const std::vector<std::pair<std::string, std::string>> links{
        {"abs", abs_target}, {"d/rel", rel_target}, {"d/deep", deep_target}};
    for (auto& [rel, target] : links) {
        SCOPED_TRACE(rel);
        const std::string p = mnt(rel);
        ASSERT_EQ(slurp(p), "canary-data") << "the link does not reach the canary: the test proves nothing";
        EXPECT_EQ(::lchown(p.c_str(), 4321, 4321), 0) << errname(errno);
        EXPECT_EQ(::lsetxattr(p.c_str(), "trusted.sec", "1", 1, 0), 0) << errname(errno);
        struct timespec ts[2] = {{1234567890, 0}, {1234567890, 0}};
        EXPECT_EQ(::utimensat(AT_FDCWD, p.c_str(), ts, AT_SYMLINK_NOFOLLOW), 0) << errname(errno);
        // EOPNOTSUPP for links; whatever it returns, it must not reach the target.
        if (::fchmodat(AT_FDCWD, p.c_str(), 0600, AT_SYMLINK_NOFOLLOW) == 0) {
            EXPECT_TRUE(S_ISLNK(lstat_of(p).st_mode));
        }
        EXPECT_EQ(::linkat(AT_FDCWD, p.c_str(), AT_FDCWD, (p + ".hl").c_str(), 0), 0) << errname(errno);

        struct stat st = lstat_of(p);
        EXPECT_TRUE(S_ISLNK(st.st_mode));
        EXPECT_EQ(st.st_uid, 4321u);
        EXPECT_EQ(st.st_mtime, 1234567890);
        EXPECT_EQ(readlink_of(p), target);
        EXPECT_TRUE(S_ISLNK(lstat_of(mnt(rel + ".hl")).st_mode));
        st = lstat_of(upper(rel));
        EXPECT_TRUE(S_ISLNK(st.st_mode)) << "the copy-up of a symlink is not a symlink";
        EXPECT_EQ(st.st_uid, 4321u);
        EXPECT_EQ(readlink_of(upper(rel)), target);
        EXPECT_EQ(xattr_of(upper(rel), "trusted.sec"), std::optional<std::string>("1"));
    }
    expect_unchanged(canary, outside("canary"));
    EXPECT_EQ(entries(outside()), outside_entries);
}

TEST_F(Security, LowerHardlinksToAnOutsideFileAreNeverModified)
{
    const std::vector<std::string> ops{"write", "trunc", "chmod", "chown", "xattr", "utime", "append"};
    for (auto& op : ops)
        ASSERT_EQ(::link(outside("canary").c_str(), lower(1, op).c_str()), 0) << errname(errno);
    const Snapshot canary = snap(outside("canary"));
    mount();

    write_file(mnt("write"), "W");
    EXPECT_EQ(::truncate(mnt("trunc").c_str(), 2), 0) << errname(errno);
    EXPECT_EQ(::chmod(mnt("chmod").c_str(), 0600), 0) << errname(errno);
    EXPECT_EQ(::chown(mnt("chown").c_str(), 4321, 4321), 0) << errname(errno);
    EXPECT_EQ(::setxattr(mnt("xattr").c_str(), "user.x", "1", 1, 0), 0) << errname(errno);
    EXPECT_EQ(::utimensat(AT_FDCWD, mnt("utime").c_str(), nullptr, 0), 0) << errname(errno);
    {
        Fd fd(::open(mnt("append").c_str(), O_WRONLY | O_APPEND));
        ASSERT_GE(fd.get(), 0) << errname(errno);
        EXPECT_EQ(::write(fd.get(), "+", 1), 1);
        EXPECT_EQ(::fsync(fd.get()), 0);
    }
    EXPECT_EQ(slurp(mnt("write")), "W");
    EXPECT_EQ(slurp(mnt("trunc")), "ca");
    EXPECT_EQ(slurp(mnt("append")), "canary-data+");
    EXPECT_EQ(lstat_of(mnt("chmod")).st_mode & 07777, 0600u);
    EXPECT_EQ(lstat_of(mnt("chown")).st_uid, 4321u);
    for (auto& op : ops)
        EXPECT_TRUE(S_ISREG(lstat_of(upper(op)).st_mode)) << op << " was not copied up";
    expect_unchanged(canary, outside("canary"));
}

TEST_F(Security, LowerDirSwappedForSymlinkWhileMountedIsNotFollowed)
{
    mkdir_p(lower(1, "d1"));
    mkdir_p(lower(1, "d2"));
    write_file(lower(1, "d1/x"), "inside-x");
    write_file(lower(1, "d2/x"), "inside-x");
    const Snapshot canary = snap(outside("canary"));
    mount();

    // Hold the dirs open (by nodeid, with no path lookup the kernel could
    // redo) and let the engine see x once.
    Fd d1(::open(mnt("d1").c_str(), O_DIRECTORY | O_RDONLY));
    Fd d2(::open(mnt("d2").c_str(), O_DIRECTORY | O_RDONLY));
    ASSERT_GE(d1.get(), 0);
    ASSERT_GE(d2.get(), 0);
    ASSERT_EQ(slurp(mnt("d1/x")), "inside-x");
    ASSERT_EQ(slurp(mnt("d2/x")), "inside-x");

    // Someone swaps the lower dirs for symlinks that leave the layer.
    ASSERT_EQ(::rename(lower(1, "d1").c_str(), lower(1, "d1.orig").c_str()), 0);
    ASSERT_EQ(::symlink(outside().c_str(), lower(1, "d1").c_str()), 0);
    ASSERT_EQ(::rename(lower(1, "d2").c_str(), lower(1, "d2.orig").c_str()), 0);
    ASSERT_EQ(::symlink("../outside", lower(1, "d2").c_str()), 0);

    for (auto [name, dfd] : {std::pair<const char*, int>{"d1", d1.get()}, {"d2", d2.get()}}) {
        SCOPED_TRACE(name);
        // Each may succeed (into the upper) or fail; none may land outside.
        int f = ::openat(dfd, "new", O_CREAT | O_WRONLY, 0644);
        if (f >= 0) {
            EXPECT_EQ(::write(f, "N", 1), 1);
            ::close(f);
            EXPECT_TRUE(exists(upper(std::string(name) + "/new"))) << "created, but not in the upper";
        }
        if (::mkdirat(dfd, "newdir", 0755) == 0) {
            EXPECT_TRUE(exists(upper(std::string(name) + "/newdir")));
        }
        if (::symlinkat("t", dfd, "sl") == 0) {
            EXPECT_TRUE(exists(upper(std::string(name) + "/sl")));
        }
        if (::mknodat(dfd, "fifo", S_IFIFO | 0644, 0) == 0) {
            EXPECT_TRUE(exists(upper(std::string(name) + "/fifo")));
        }
        int x = ::openat(dfd, "x", O_WRONLY | O_APPEND);
        if (x >= 0) {
            EXPECT_EQ(::write(x, "+", 1), 1);
            ::fsync(x);
            ::close(x);
            int r = ::openat(dfd, "x", O_RDONLY);
            char buf[64] = {};
            ssize_t n = r >= 0 ? ::read(r, buf, sizeof buf - 1) : -1;
            if (r >= 0)
                ::close(r);
            if (n >= 0) {
                EXPECT_EQ(std::string(buf), "inside-x+") << "copy-up read through the swapped-in symlink";
            }
        }
    }
    EXPECT_EQ(entries(outside()), (std::set<std::string>{"canary", "x"}));
    EXPECT_EQ(slurp(outside("x")), "outside-x");
    expect_unchanged(canary, outside("canary"));
    EXPECT_EQ(slurp(lower(1, "d1.orig/x")), "inside-x");
    EXPECT_EQ(entries(lower(1, "d1.orig")), std::set<std::string>{"x"});
}

TEST_F(Security, RedirectXattrsCannotLeaveTheLayers)
{
    // Hostile redirects in a lower layer: through "..", and through a symlink.
    ASSERT_EQ(::symlink(outside().c_str(), lower(1, "esc").c_str()), 0);
    for (const char* n : {"r1", "r2", "r3"})
        mkdir_p(lower(0, n));
    ASSERT_EQ(::lsetxattr(lower(0, "r1").c_str(), "trusted.overlay.redirect", "/../outside", 11, 0), 0);
    ASSERT_EQ(::lsetxattr(lower(0, "r2").c_str(), "trusted.overlay.redirect", "/esc", 4, 0), 0);
    ASSERT_EQ(::lsetxattr(lower(0, "r3").c_str(), "trusted.overlay.redirect", "/esc/", 5, 0), 0);
    const Snapshot canary = snap(outside("canary"));
    mount();

    for (const char* n : {"r1", "r2", "r3"}) {
        SCOPED_TRACE(n);
        struct stat st;
        if (::lstat(mnt(n).c_str(), &st) != 0)
            continue; // refusing the dir is fine
        if (S_ISDIR(st.st_mode)) {
            auto e = entries(mnt(n));
            EXPECT_FALSE(e.count("canary")) << "a redirect merged a dir outside the layers";
            EXPECT_FALSE(e.count("x"));
        }
        EXPECT_NE(slurp(mnt(std::string(n) + "/canary")), "canary-data");
        // Writing into it must not land outside either.
        int f = ::open(mnt(std::string(n) + "/new").c_str(), O_CREAT | O_WRONLY, 0644);
        if (f >= 0)
            ::close(f);
    }
    EXPECT_EQ(entries(outside()), (std::set<std::string>{"canary", "x"}));
    expect_unchanged(canary, outside("canary"));
}

TEST_F(Security, MountOverItsOwnLowerDir)
{
    write_file(lower(0, "a"), "A0");
    write_file(lower(1, "b"), "B1");
    mkdir_p(lower(0, "sub"));
    write_file(lower(0, "sub/s"), "S");
    FsProcess self;
    std::string error;
    ASSERT_TRUE(self.start(options(false), lower(0), &error)) << error;

    const std::string m = lower(0); // now the overlay
    std::string r = in_child([&]() -> std::string {
        CHILD_CHECK(slurp(m + "/a") == "A0");
        CHILD_CHECK(slurp(m + "/b") == "B1");
        CHILD_CHECK(slurp(m + "/sub/s") == "S");
        CHILD_CHECK(put(m + "/new", "N"));
        CHILD_CHECK(put(m + "/a", "+", O_WRONLY | O_APPEND));
        CHILD_CHECK(::mkdir((m + "/nd").c_str(), 0755) == 0);
        CHILD_CHECK(::rename((m + "/b").c_str(), (m + "/b2").c_str()) == 0);
        CHILD_CHECK(::unlink((m + "/sub/s").c_str()) == 0);
        CHILD_CHECK(put(m + "/sub/t", "T"));
        CHILD_CHECK(slurp(m + "/a") == "A0+");
        CHILD_CHECK(entries(m) == (std::set<std::string>{"a", "b2", "new", "nd", "sub"}));
        CHILD_CHECK(entries(m + "/sub") == (std::set<std::string>{"t"}));
        return "";
    });
    EXPECT_EQ(r, "");
    if (!r.empty())
        self.kill_hard();

    EXPECT_EQ(slurp(upper("new")), "N");
    EXPECT_EQ(slurp(upper("a")), "A0+");
    EXPECT_EQ(slurp(upper("b2")), "B1");
    EXPECT_EQ(slurp(upper("sub/t")), "T");
    EXPECT_TRUE(S_ISDIR(lstat_of(upper("nd")).st_mode));
    struct stat st = lstat_of(upper("b"));
    EXPECT_TRUE(S_ISCHR(st.st_mode) && st.st_rdev == makedev(0, 0)) << "no whiteout for b";

    EXPECT_EQ(self.stop(), 0);
    // The real lower dir is untouched.
    EXPECT_EQ(entries(lower(0)), (std::set<std::string>{"a", "sub"}));
    EXPECT_EQ(slurp(lower(0, "a")), "A0");
    EXPECT_EQ(entries(lower(0, "sub")), std::set<std::string>{"s"});
    EXPECT_EQ(slurp(lower(1, "b")), "B1");
}

TEST_F(Security, NonRootCallerOwnsWhatItCreates)
{
    mkdir_p(lower(1, "pub"), 0777);
    mkdir_p(lower(1, "sg"), 0777);
    ASSERT_EQ(::chown(lower(1, "sg").c_str(), 0, 4242), 0);
    ASSERT_EQ(::chmod(lower(1, "sg").c_str(), 02777), 0);
    mkdir_p(lower(1, "closed"), 0755);
    mount();
    const std::string m = mnt();
    EXPECT_EQ(in_child(
                  [&]() -> std::string {
                      ::umask(022);
                      CHILD_CHECK(put(m + "/pub/f", "f"));
                      CHILD_CHECK(::mkdir((m + "/pub/d").c_str(), 0755) == 0);
                      CHILD_CHECK(::symlink("t", (m + "/pub/l").c_str()) == 0);
                      CHILD_CHECK(put(m + "/sg/f", "f"));
                      CHILD_CHECK(::mkdir((m + "/sg/d").c_str(), 0755) == 0);
                      CHILD_ERRNO(::chown((m + "/pub/f").c_str(), 0, 0), EPERM);
                      CHILD_ERRNO(::setxattr((m + "/pub/f").c_str(), "trusted.x", "1", 1, 0), EPERM);
                      CHILD_ERRNO(::open((m + "/closed/new").c_str(), O_CREAT | O_WRONLY, 0644), EACCES);
                      return "";
                  },
                  65534, 65534),
              "");
    for (auto root : {mnt(), upper()}) {
        SCOPED_TRACE(root);
        for (const char* n : {"pub/f", "pub/d", "pub/l"}) {
            struct stat st = lstat_of(root + "/" + n);
            EXPECT_EQ(st.st_uid, 65534u) << n;
            EXPECT_EQ(st.st_gid, 65534u) << n;
        }
        // A setgid dir hands its group down, and its setgid bit to subdirs.
        struct stat st = lstat_of(root + "/sg/f");
        EXPECT_EQ(st.st_uid, 65534u);
        EXPECT_EQ(st.st_gid, 4242u);
        st = lstat_of(root + "/sg/d");
        EXPECT_EQ(st.st_uid, 65534u);
        EXPECT_EQ(st.st_gid, 4242u);
        EXPECT_TRUE(st.st_mode & S_ISGID) << "subdir of a setgid dir lost S_ISGID";
        st = lstat_of(root + "/sg");
        EXPECT_EQ(st.st_mode & 07777, 02777u);
        EXPECT_EQ(st.st_gid, 4242u);
        EXPECT_EQ(lstat_of(root + "/pub").st_uid, 0u);
    }
    EXPECT_FALSE(exists(upper("closed")));
}

TEST_F(Security, AllowOtherLetsOtherUsersRead)
{
    write_file(lower(1, "pubfile"), "content", 0644);
    mkdir_p(lower(0, "dir"));
    write_file(lower(0, "dir/inner"), "inner", 0644);
    mount();

    // The mount carries allow_other and default_permissions.
    std::ifstream mi("/proc/self/mountinfo");
    std::string line, super;
    while (std::getline(mi, line)) {
        std::istringstream ls(line);
        std::string id, parent, dev, root, mp;
        ls >> id >> parent >> dev >> root >> mp;
        if (mp == mnt()) {
            auto sep = line.find(" - ");
            std::istringstream rest(line.substr(sep + 3));
            std::string type, source;
            rest >> type >> source >> super;
        }
    }
    EXPECT_NE(("," + super + ",").find(",allow_other,"), std::string::npos) << super;
    EXPECT_NE(("," + super + ",").find(",default_permissions,"), std::string::npos) << super;

    const std::string m = mnt();
    EXPECT_EQ(in_child(
                  [&]() -> std::string {
                      CHILD_CHECK(slurp(m + "/pubfile") == "content");
                      CHILD_CHECK(slurp(m + "/dir/inner") == "inner");
                      CHILD_CHECK(entries(m) == (std::set<std::string>{"dir", "pubfile"}));
                      struct stat st;
                      CHILD_CHECK(::stat((m + "/dir").c_str(), &st) == 0);
                      struct statvfs sv;
                      CHILD_CHECK(::statvfs(m.c_str(), &sv) == 0);
                      CHILD_ERRNO(::open((m + "/pubfile").c_str(), O_WRONLY), EACCES);
                      return "";
                  },
                  65534, 65534),
              "");
}

TEST_F(Security, WhiteoutsCannotBeForgedThroughTheMount)
{
    write_file(lower(1, "f"), "f");
    mkdir_p(lower(1, "pub"), 0777);
    write_file(lower(1, "pub/g"), "g");
    mount();

    // Kernel overlayfs refuses mknod of a 0/0 char device (ovl_mknod: EPERM).
    EXPECT_ERRNO(::mknod(mnt("w").c_str(), S_IFCHR | 0644, makedev(0, 0)), EPERM);
    EXPECT_FALSE(exists(mnt("w")));
    EXPECT_FALSE(exists(upper("w")));
    EXPECT_ERRNO(::mknod(mnt("f").c_str(), S_IFCHR | 0644, makedev(0, 0)), EEXIST);
    EXPECT_EQ(slurp(mnt("f")), "f");
    // The VFS lets anyone create a 0/0 device (it is how whiteouts are made),
    // so the engine is the only guard for an unprivileged caller.
    const std::string m = mnt();
    EXPECT_EQ(in_child(
                  [&]() -> std::string {
                      CHILD_ERRNO(::mknod((m + "/pub/w").c_str(), S_IFCHR | 0644, makedev(0, 0)), EPERM);
                      CHILD_CHECK(::unlink((m + "/pub/g").c_str()) == 0);
                      CHILD_ERRNO(::mknod((m + "/pub/g").c_str(), S_IFCHR | 0644, makedev(0, 0)), EPERM);
                      return "";
                  },
                  65534, 65534),
              "");
    EXPECT_EQ(entries(mnt("pub")), std::set<std::string>{});
    EXPECT_FALSE(exists(mnt("pub/w")));
    remount();
    EXPECT_EQ(entries(mnt()), (std::set<std::string>{"f", "pub"}));
    EXPECT_EQ(entries(mnt("pub")), std::set<std::string>{});
}

TEST_F(Security, UserCannotForgeOverlayXattrsWithUserxattr)
{
    // With userxattr the overlay's metadata lives in user.overlay.*, which any
    // owner may set on its own files: a forged redirect would merge a dir the
    // user cannot read under a dir it owns.
    mkdir_p(lower(1, "secret"), 0700);
    write_file(lower(1, "secret/s"), "s", 0600);
    mkdir_p(lower(1, "pub"), 0777);
    mkdir_p(lower(1, "m"));
    write_file(lower(1, "m/a"), "a");
    mount("userxattr");

    const std::string m = mnt();
    EXPECT_EQ(in_child(
                  [&]() -> std::string {
                      CHILD_CHECK(::mkdir((m + "/pub/mine").c_str(), 0755) == 0);
                      CHILD_ERRNO(::setxattr((m + "/pub/mine").c_str(), "user.overlay.redirect", "/secret", 7, 0),
                                  EOPNOTSUPP);
                      CHILD_ERRNO(::setxattr((m + "/pub/mine").c_str(), "user.overlay.opaque", "y", 1, 0),
                                  EOPNOTSUPP);
                      CHILD_CHECK(::setxattr((m + "/pub/mine").c_str(), "user.plain", "1", 1, 0) == 0);
                      return "";
                  },
                  65534, 65534),
              "");
    EXPECT_ERRNO(::setxattr(mnt("m").c_str(), "user.overlay.opaque", "y", 1, 0), EOPNOTSUPP);
    for (auto& n : xattr_names(upper("pub/mine")))
        EXPECT_NE(n.rfind("user.overlay.", 0), 0u) << "forged " << n << " reached the upper";
    remount();
    EXPECT_EQ(entries(mnt("pub/mine")), std::set<std::string>{});
    EXPECT_EQ(entries(mnt("m")), std::set<std::string>{"a"});
    EXPECT_EQ(in_child([&]() -> std::string {
                  CHILD_CHECK(entries(m + "/pub/mine").empty());
                  CHILD_ERRNO(::open((m + "/pub/mine/s").c_str(), O_RDONLY), ENOENT);
                  return "";
              },
                       65534, 65534),
              "");
}

} // namespace
