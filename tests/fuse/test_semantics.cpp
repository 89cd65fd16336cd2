// SPDX-License-Identifier: LGPL-2.1-or-later
// Kernel-overlayfs semantics of layerd-fs on real FUSE mounts: lookup across
// layers, merged readdir, whiteouts, opaque dirs, every namespace operation,
// copy-up, xattrs, advertised limits, locks, sparse files, read-only stacks
// and ownership. The reference for every expectation is kernel overlayfs
// (checked on the same layouts with `mount -t overlay`), except where
// DESIGN.md §3 says layerd differs (directory rename with redirect by
// default, nlink 0 for open unlinked files).
#include "mount_fixture.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/fsuid.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif
#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif

using namespace layerd::test;

namespace {

std::string errname(int e)
{
    const char* n = strerrorname_np(e);
    return n ? n : std::to_string(e);
}

// EXPECT that EXPR fails with errno ERR.
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

// EXPECT / ASSERT that EXPR returns >= 0, reporting errno otherwise.
#define EXPECT_OK(expr)                                                                    \
    do {                                                                                   \
        errno = 0;                                                                         \
        long r_ = static_cast<long>(expr);                                                 \
        int e_ = errno;                                                                    \
        EXPECT_GE(r_, 0L) << #expr << ": " << errname(e_);                                 \
    } while (0)
#define ASSERT_OK(expr)                                                                    \
    do {                                                                                   \
        errno = 0;                                                                         \
        long r_ = static_cast<long>(expr);                                                 \
        int e_ = errno;                                                                    \
        ASSERT_GE(r_, 0L) << #expr << ": " << errname(e_);                                 \
    } while (0)

// In a forked child: return a complaint instead of asserting.
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
    Fd() = default;
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

std::optional<std::string> xattr_of(const std::string& path, const std::string& name)
{
    ssize_t n = ::lgetxattr(path.c_str(), name.c_str(), nullptr, 0);
    if (n < 0)
        return std::nullopt;
    std::string v(static_cast<size_t>(n), '\0');
    n = ::lgetxattr(path.c_str(), name.c_str(), v.data(), v.size());
    if (n < 0)
        return std::nullopt;
    v.resize(static_cast<size_t>(n));
    return v;
}

std::set<std::string> xattr_names(const std::string& path, const std::string& prefix = "")
{
    std::set<std::string> out;
    ssize_t n = ::llistxattr(path.c_str(), nullptr, 0);
    if (n <= 0)
        return out;
    std::string buf(static_cast<size_t>(n), '\0');
    n = ::llistxattr(path.c_str(), buf.data(), buf.size());
    if (n <= 0)
        return out;
    for (size_t i = 0; i < static_cast<size_t>(n);) {
        std::string name(buf.c_str() + i);
        i += name.size() + 1;
        if (name.rfind(prefix, 0) == 0)
            out.insert(name);
    }
    return out;
}

void set_xattr(const std::string& path, const std::string& name, const std::string& value)
{
    ASSERT_EQ(::lsetxattr(path.c_str(), name.c_str(), value.data(), value.size(), 0), 0)
        << path << " " << name << ": " << errname(errno);
}

// All names readdir returns, in order, including "." and "..".
std::vector<std::string> readdir_all(const std::string& path)
{
    std::vector<std::string> out;
    DIR* d = ::opendir(path.c_str());
    if (!d) {
        ADD_FAILURE() << "opendir " << path << ": " << errname(errno);
        return out;
    }
    while (struct dirent* e = ::readdir(d))
        out.emplace_back(e->d_name);
    ::closedir(d);
    return out;
}

// The entries of a dir (no "." / ".."), each reported once at most.
std::set<std::string> entries(const std::string& path)
{
    std::set<std::string> out;
    for (auto& n : readdir_all(path)) {
        if (n == "." || n == "..")
            continue;
        EXPECT_TRUE(out.insert(n).second) << "readdir of " << path << " returned " << n << " twice";
    }
    return out;
}

bool is_whiteout(const std::string& path)
{
    struct stat st;
    return ::lstat(path.c_str(), &st) == 0 && S_ISCHR(st.st_mode) && st.st_rdev == makedev(0, 0);
}

void make_whiteout(const std::string& path)
{
    ASSERT_EQ(::mknod(path.c_str(), S_IFCHR | 0, makedev(0, 0)), 0) << path << ": " << errname(errno);
}

void mkdir_p(const std::string& path, mode_t mode = 0755)
{
    ASSERT_EQ(sh("mkdir -p '" + path + "'"), 0) << path;
    ASSERT_EQ(::chmod(path.c_str(), mode), 0);
}

void set_mtime(const std::string& path, time_t sec)
{
    struct timespec ts[2] = {{sec, 0}, {sec, 0}};
    ASSERT_EQ(::utimensat(AT_FDCWD, path.c_str(), ts, AT_SYMLINK_NOFOLLOW), 0) << path << ": " << errname(errno);
}

// Writes DATA at OFFSET (or appends / truncates per FLAGS) and fsyncs, so the
// upper layer holds the bytes when this returns.
void write_sync(const std::string& path, const std::string& data, int flags = O_WRONLY | O_CREAT | O_TRUNC,
                mode_t mode = 0644)
{
    Fd fd(::open(path.c_str(), flags | O_CLOEXEC, mode));
    ASSERT_GE(fd.get(), 0) << path << ": " << errname(errno);
    ASSERT_EQ(::write(fd.get(), data.data(), data.size()), static_cast<ssize_t>(data.size())) << path;
    ASSERT_EQ(::fsync(fd.get()), 0) << path << ": " << errname(errno);
}

std::string pread_str(int fd, size_t len, off_t off)
{
    std::string s(len, '\0');
    ssize_t n = ::pread(fd, s.data(), len, off);
    s.resize(n < 0 ? 0 : static_cast<size_t>(n));
    return s;
}

// Regular files anywhere under DIR (to prove that nothing was copied up).
std::vector<std::string> regular_files_under(const std::string& dir)
{
    std::vector<std::string> out;
    for (auto& n : readdir_all(dir)) {
        if (n == "." || n == "..")
            continue;
        std::string p = dir + "/" + n;
        struct stat st;
        if (::lstat(p.c_str(), &st) != 0)
            continue;
        if (S_ISDIR(st.st_mode)) {
            auto sub = regular_files_under(p);
            out.insert(out.end(), sub.begin(), sub.end());
        } else if (S_ISREG(st.st_mode)) {
            out.push_back(p);
        }
    }
    return out;
}

int rename2(const std::string& from, const std::string& to, unsigned flags)
{
    return static_cast<int>(::syscall(SYS_renameat2, AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), flags));
}


class Semantics : public OverlayTest {
protected:
    // mkdtemp made TMP 0700: let the unprivileged children reach mnt.
    void let_others_in() { ASSERT_EQ(::chmod(root_.c_str(), 0755), 0); }
};

class Semantics3 : public OverlayTest {
protected:
    Semantics3() { lowers_ = 3; }
};

// ---------------------------------------------------------------- lookup

TEST_F(Semantics3, LookupTopLayerWins)
{
    write_file(lower(2, "f"), "2");
    write_file(lower(1, "f"), "1");
    write_file(lower(0, "f"), "0");
    write_file(lower(2, "g"), "2");
    write_file(lower(1, "g"), "1");
    write_file(lower(2, "h"), "2");
    write_file(lower(0, "u"), "0");
    write_file(upper("u"), "U");
    // A file on top hides a dir below, and a dir on top hides a file below.
    mkdir_p(lower(1, "x"));
    write_file(lower(1, "x/in"), "in");
    write_file(lower(0, "x"), "file-x");
    mkdir_p(lower(0, "y"));
    write_file(lower(0, "y/a"), "a");
    write_file(lower(1, "y"), "file-y");
    mount();

    EXPECT_EQ(read_file(mnt("f")), "0");
    EXPECT_EQ(read_file(mnt("g")), "1");
    EXPECT_EQ(read_file(mnt("h")), "2");
    EXPECT_EQ(read_file(mnt("u")), "U");
    EXPECT_EQ(lstat_of(mnt("f")).st_size, 1);
    EXPECT_TRUE(S_ISREG(lstat_of(mnt("x")).st_mode));
    EXPECT_EQ(read_file(mnt("x")), "file-x");
    EXPECT_ERRNO(::access(mnt("x/in").c_str(), F_OK), ENOTDIR);
    EXPECT_TRUE(S_ISDIR(lstat_of(mnt("y")).st_mode));
    EXPECT_EQ(entries(mnt("y")), (std::set<std::string>{"a"}));
    EXPECT_ERRNO(::access(mnt("nope").c_str(), F_OK), ENOENT);
    EXPECT_EQ(entries(mnt()), (std::set<std::string>{"f", "g", "h", "u", "x", "y"}));
}

// ---------------------------------------------------------------- readdir

TEST_F(Semantics3, MergedReaddirIsUnionWithoutHiddenEntries)
{
    mkdir_p(lower(2, "d"));
    mkdir_p(lower(1, "d/dd"));
    mkdir_p(lower(0, "d"));
    mkdir_p(upper("d"));
    for (const char* n : {"a", "b", "c", "z"})
        write_file(lower(2, "d/") + n, "2");
    write_file(lower(1, "d/b"), "1");
    write_file(lower(0, "d/e"), "0");
    make_whiteout(lower(0, "d/z")); // a whiteout in a lower hides z of lower2
    write_file(upper("d/f"), "U");
    make_whiteout(upper("d/c"));
    mount();

    auto all = readdir_all(mnt("d"));
    std::vector<std::string> sorted = all;
    std::sort(sorted.begin(), sorted.end());
    EXPECT_EQ(sorted, (std::vector<std::string>{".", "..", "a", "b", "dd", "e", "f"}));
    EXPECT_EQ(read_file(mnt("d/b")), "1");
    EXPECT_ERRNO(::access(mnt("d/c").c_str(), F_OK), ENOENT);
    EXPECT_ERRNO(::access(mnt("d/z").c_str(), F_OK), ENOENT);

    // d_type matches what lstat says.
    DIR* d = ::opendir(mnt("d").c_str());
    ASSERT_NE(d, nullptr);
    while (struct dirent* e = ::readdir(d)) {
        std::string n = e->d_name;
        if (n == "." || n == "..") {
            EXPECT_EQ(e->d_type, DT_DIR) << n;
            continue;
        }
        struct stat st = lstat_of(mnt("d/" + n));
        EXPECT_EQ(e->d_type, S_ISDIR(st.st_mode) ? DT_DIR : DT_REG) << n;
    }
    ::closedir(d);

    EXPECT_EQ(sh_out("ls -a1 '" + mnt("d") + "'"), ".\n..\na\nb\ndd\ne\nf\n");
}

TEST_F(Semantics, MergedReaddirLargeDirsAndSeekdir)
{
    // Names long enough that the listing needs many READDIR round trips.
    auto name = [](int i) {
        char b[16];
        std::snprintf(b, sizeof b, "%04d", i);
        return std::string(b) + std::string(120, 'n');
    };
    mkdir_p(lower(1, "big"));
    mkdir_p(lower(0, "big"));
    for (int i = 0; i < 600; ++i)
        write_file(lower(1, "big/" + name(i)), "1");
    for (int i = 300; i < 900; ++i)
        write_file(lower(0, "big/" + name(i)), "0");
    // Whiteouts in the upper for every 7th name: those must vanish from the listing.
    mkdir_p(upper("big"));
    for (int i = 0; i < 900; i += 7)
        make_whiteout(upper("big/" + name(i)));
    mount();

    std::set<std::string> expect;
    for (int i = 0; i < 900; ++i)
        if (i % 7 != 0)
            expect.insert(name(i));
    EXPECT_EQ(entries(mnt("big")), expect);

    // telldir/seekdir land back on the same entry in the merged stream.
    DIR* d = ::opendir(mnt("big").c_str());
    ASSERT_NE(d, nullptr);
    std::vector<long> pos;
    std::vector<std::string> names;
    for (;;) {
        long p = ::telldir(d);
        struct dirent* e = ::readdir(d);
        if (!e)
            break;
        pos.push_back(p);
        names.emplace_back(e->d_name);
    }
    ASSERT_EQ(names.size(), expect.size() + 2);
    size_t k = names.size() / 2;
    ::seekdir(d, pos[k]);
    std::vector<std::string> rest;
    while (struct dirent* e = ::readdir(d))
        rest.emplace_back(e->d_name);
    ::closedir(d);
    EXPECT_EQ(rest, std::vector<std::string>(names.begin() + static_cast<long>(k), names.end()));
}

TEST_F(Semantics3, WhiteoutsInLowerLayersHideEntriesBelow)
{
    make_whiteout(lower(0, "x"));
    write_file(lower(1, "x"), "1");
    write_file(lower(2, "x"), "2");
    make_whiteout(lower(1, "w")); // a whiteout in a middle layer
    write_file(lower(2, "w"), "2");
    mkdir_p(lower(0, "d"));
    mkdir_p(lower(1, "d"));
    make_whiteout(lower(0, "d/y"));
    write_file(lower(1, "d/y"), "1");
    write_file(lower(1, "d/keep"), "1");
    mkdir_p(lower(2, "gone"));
    write_file(lower(2, "gone/inside"), "2");
    make_whiteout(lower(1, "gone")); // a whiteout hides a whole dir below
    mount();

    EXPECT_ERRNO(::access(mnt("x").c_str(), F_OK), ENOENT);
    EXPECT_ERRNO(::access(mnt("w").c_str(), F_OK), ENOENT);
    EXPECT_ERRNO(::access(mnt("gone").c_str(), F_OK), ENOENT);
    EXPECT_ERRNO(::access(mnt("gone/inside").c_str(), F_OK), ENOENT);
    EXPECT_ERRNO(::access(mnt("d/y").c_str(), F_OK), ENOENT);
    EXPECT_EQ(entries(mnt()), (std::set<std::string>{"d"}));
    EXPECT_EQ(entries(mnt("d")), (std::set<std::string>{"keep"}));

    // The names are free: creating them gives fresh objects.
    write_file(mnt("x"), "new");
    EXPECT_EQ(read_file(mnt("x")), "new");
    ASSERT_EQ(::mkdir(mnt("gone").c_str(), 0755), 0) << errname(errno);
    EXPECT_TRUE(entries(mnt("gone")).empty());
    EXPECT_TRUE(S_ISREG(lstat_of(upper("x")).st_mode));
    EXPECT_EQ(entries(mnt()), (std::set<std::string>{"d", "gone", "x"}));
}

TEST_F(Semantics3, OpaqueDirsHideLowerContents)
{
    mkdir_p(lower(0, "o"));
    write_file(lower(0, "o/mine"), "0");
    set_xattr(lower(0, "o"), "trusted.overlay.opaque", "y");
    mkdir_p(lower(1, "o"));
    write_file(lower(1, "o/theirs"), "1");
    mkdir_p(lower(2, "o"));
    write_file(lower(2, "o/deeper"), "2");
    // Opaque in the middle layer: lower0 merges with lower1, lower2 is cut off.
    mkdir_p(lower(0, "p"));
    write_file(lower(0, "p/top"), "0");
    mkdir_p(lower(1, "p"));
    write_file(lower(1, "p/mid"), "1");
    set_xattr(lower(1, "p"), "trusted.overlay.opaque", "y");
    mkdir_p(lower(2, "p"));
    write_file(lower(2, "p/bottom"), "2");
    mount();

    EXPECT_EQ(entries(mnt("o")), (std::set<std::string>{"mine"}));
    EXPECT_ERRNO(::access(mnt("o/theirs").c_str(), F_OK), ENOENT);
    EXPECT_ERRNO(::access(mnt("o/deeper").c_str(), F_OK), ENOENT);
    EXPECT_EQ(entries(mnt("p")), (std::set<std::string>{"top", "mid"}));
    EXPECT_ERRNO(::access(mnt("p/bottom").c_str(), F_OK), ENOENT);
    EXPECT_EQ(xattr_names(mnt("o"), "trusted.overlay."), std::set<std::string>{});
}

TEST_F(Semantics, OpaqueDirsWithUserxattr)
{
    mkdir_p(lower(0, "o"));
    write_file(lower(0, "o/mine"), "0");
    set_xattr(lower(0, "o"), "user.overlay.opaque", "y");
    mkdir_p(lower(1, "o"));
    write_file(lower(1, "o/theirs"), "1");
    // With userxattr the trusted.* namespace means nothing to the overlay.
    mkdir_p(lower(0, "t"));
    write_file(lower(0, "t/mine"), "0");
    set_xattr(lower(0, "t"), "trusted.overlay.opaque", "y");
    mkdir_p(lower(1, "t"));
    write_file(lower(1, "t/theirs"), "1");
    mkdir_p(lower(1, "r"));
    write_file(lower(1, "r/a"), "1");
    mount("userxattr");

    EXPECT_EQ(entries(mnt("o")), (std::set<std::string>{"mine"}));
    EXPECT_EQ(entries(mnt("t")), (std::set<std::string>{"mine", "theirs"}));
    EXPECT_EQ(xattr_names(mnt("o"), "user.overlay."), std::set<std::string>{});

    // rmdir + mkdir over a lower dir writes the user.* opaque marker.
    ASSERT_EQ(::unlink(mnt("r/a").c_str()), 0) << errname(errno);
    ASSERT_EQ(::rmdir(mnt("r").c_str()), 0) << errname(errno);
    ASSERT_EQ(::mkdir(mnt("r").c_str(), 0755), 0) << errname(errno);
    EXPECT_TRUE(entries(mnt("r")).empty());
    EXPECT_EQ(xattr_of(upper("r"), "user.overlay.opaque"), std::optional<std::string>("y"));
    EXPECT_EQ(xattr_of(upper("r"), "trusted.overlay.opaque"), std::nullopt);
    remount();
    EXPECT_TRUE(entries(mnt("r")).empty());
}

// ---------------------------------------------------------------- create

TEST_F(Semantics, CreateEveryTypeInUpperAndUnderLowerDir)
{
    mkdir_p(lower(1, "sub"), 0705);
    ASSERT_EQ(::chown(lower(1, "sub").c_str(), 77, 88), 0);
    write_file(lower(1, "sub/existing"), "e");
    mount();
    mode_t old = ::umask(022);

    for (std::string dir : {std::string(""), std::string("sub/")}) {
        SCOPED_TRACE("dir '" + dir + "'");
        int fd = ::open(mnt(dir + "file").c_str(), O_CREAT | O_EXCL | O_WRONLY, 0640);
        EXPECT_GE(fd, 0) << errname(errno);
        if (fd >= 0) {
            EXPECT_EQ(::write(fd, "data", 4), 4);
            ::close(fd);
        }
        EXPECT_OK(::mkdir(mnt(dir + "dir").c_str(), 0750));
        EXPECT_OK(::mkfifo(mnt(dir + "fifo").c_str(), 0640));
        EXPECT_OK(::mknod(mnt(dir + "cdev").c_str(), S_IFCHR | 0600, makedev(1, 3)));
        EXPECT_OK(::symlink("target/x", mnt(dir + "sym").c_str()));
        EXPECT_OK(::link(mnt(dir + "file").c_str(), mnt(dir + "hard").c_str()));

        for (auto root : {mnt() + "/" + dir, upper() + "/" + dir}) {
            SCOPED_TRACE(root);
            struct stat st = lstat_of(root + "file");
            EXPECT_TRUE(S_ISREG(st.st_mode));
            EXPECT_EQ(st.st_mode & 07777, 0640u);
            EXPECT_EQ(st.st_nlink, 2u);
            EXPECT_EQ(read_file(root + "file"), "data");
            EXPECT_EQ(lstat_of(root + "hard").st_ino, st.st_ino);
            st = lstat_of(root + "dir");
            EXPECT_TRUE(S_ISDIR(st.st_mode));
            EXPECT_EQ(st.st_mode & 07777, 0750u);
            EXPECT_TRUE(S_ISFIFO(lstat_of(root + "fifo").st_mode));
            st = lstat_of(root + "cdev");
            EXPECT_TRUE(S_ISCHR(st.st_mode));
            EXPECT_EQ(st.st_rdev, makedev(1, 3));
            EXPECT_TRUE(S_ISLNK(lstat_of(root + "sym").st_mode));
            char buf[64] = {};
            EXPECT_EQ(::readlink((root + "sym").c_str(), buf, sizeof buf - 1), 8);
            EXPECT_STREQ(buf, "target/x");
        }
        EXPECT_ERRNO(::open(mnt(dir + "file").c_str(), O_CREAT | O_EXCL | O_WRONLY, 0644), EEXIST);
        EXPECT_ERRNO(::mkdir(mnt(dir + "dir").c_str(), 0755), EEXIST);
    }
    ::umask(old);
    EXPECT_ERRNO(::open(mnt("sub/existing").c_str(), O_CREAT | O_EXCL | O_WRONLY, 0644), EEXIST);
    // The parent was copied up with its attributes; its other files were not.
    struct stat st = lstat_of(upper("sub"));
    EXPECT_EQ(st.st_mode & 07777, 0705u);
    EXPECT_EQ(st.st_uid, 77u);
    EXPECT_EQ(st.st_gid, 88u);
    EXPECT_FALSE(exists(upper("sub/existing")));
    EXPECT_EQ(entries(mnt("sub")),
              (std::set<std::string>{"existing", "file", "dir", "fifo", "cdev", "sym", "hard"}));
}

TEST_F(Semantics, CreateHonoursUmask)
{
    mount();
    mode_t old = ::umask(027);
    Fd fd(::open(mnt("f").c_str(), O_CREAT | O_WRONLY, 0666));
    EXPECT_GE(fd.get(), 0);
    EXPECT_EQ(::mkdir(mnt("d").c_str(), 0777), 0);
    ::umask(0);
    Fd fd2(::open(mnt("g").c_str(), O_CREAT | O_WRONLY, 0666));
    EXPECT_EQ(::mkdir(mnt("e").c_str(), 0777), 0);
    ::umask(old);
    EXPECT_EQ(lstat_of(mnt("f")).st_mode & 07777, 0640u);
    EXPECT_EQ(lstat_of(mnt("d")).st_mode & 07777, 0750u);
    EXPECT_EQ(lstat_of(mnt("g")).st_mode & 07777, 0666u);
    EXPECT_EQ(lstat_of(mnt("e")).st_mode & 07777, 0777u);
    EXPECT_EQ(lstat_of(upper("f")).st_mode & 07777, 0640u);
    EXPECT_EQ(lstat_of(upper("e")).st_mode & 07777, 0777u);
}

// ---------------------------------------------------------------- unlink / rmdir

TEST_F(Semantics, UnlinkOfLowerFileWritesWhiteoutAndCopiesNothing)
{
    mkdir_p(lower(1, "d"));
    std::string big(4 << 20, 'x');
    write_file(lower(1, "d/big"), big);
    write_file(lower(1, "d/other"), "o");
    write_file(lower(0, "s"), "0");
    write_file(lower(1, "s"), "1"); // must not reappear when lower0's s goes
    mount();

    ASSERT_EQ(::unlink(mnt("d/big").c_str()), 0) << errname(errno);
    ASSERT_EQ(::unlink(mnt("s").c_str()), 0) << errname(errno);
    EXPECT_ERRNO(::access(mnt("d/big").c_str(), F_OK), ENOENT);
    EXPECT_ERRNO(::access(mnt("s").c_str(), F_OK), ENOENT);
    EXPECT_EQ(entries(mnt("d")), (std::set<std::string>{"other"}));
    EXPECT_TRUE(is_whiteout(upper("d/big")));
    EXPECT_TRUE(is_whiteout(upper("s")));
    EXPECT_TRUE(S_ISDIR(lstat_of(upper("d")).st_mode));
    EXPECT_FALSE(exists(upper("d/other")));
    EXPECT_EQ(regular_files_under(upper()), std::vector<std::string>{});
    EXPECT_EQ(regular_files_under(work()), std::vector<std::string>{});
    EXPECT_EQ(lstat_of(lower(1, "d/big")).st_size, static_cast<off_t>(big.size()));
    EXPECT_ERRNO(::unlink(mnt("d/big").c_str()), ENOENT);
    remount();
    EXPECT_ERRNO(::access(mnt("d/big").c_str(), F_OK), ENOENT);
    EXPECT_ERRNO(::access(mnt("s").c_str(), F_OK), ENOENT);
}

TEST_F(Semantics, UnlinkOfCopiedUpFileLeavesWhiteout)
{
    write_file(lower(1, "c"), "lower");
    mount();
    write_sync(mnt("c"), "changed");
    ASSERT_TRUE(S_ISREG(lstat_of(upper("c")).st_mode));
    ASSERT_EQ(::unlink(mnt("c").c_str()), 0) << errname(errno);
    EXPECT_ERRNO(::access(mnt("c").c_str(), F_OK), ENOENT);
    EXPECT_TRUE(is_whiteout(upper("c")));
    remount();
    EXPECT_ERRNO(::access(mnt("c").c_str(), F_OK), ENOENT);
    // An upper-only file goes without a trace in the view.
    write_file(mnt("n"), "n");
    ASSERT_EQ(::unlink(mnt("n").c_str()), 0);
    EXPECT_ERRNO(::access(mnt("n").c_str(), F_OK), ENOENT);
    EXPECT_TRUE(entries(mnt()).empty());
}

TEST_F(Semantics, RmdirOfLowerAndMergedDirs)
{
    mkdir_p(lower(1, "empty"));
    mkdir_p(lower(1, "full"));
    write_file(lower(1, "full/x"), "x");
    mkdir_p(lower(1, "m"));
    mkdir_p(lower(0, "m"));
    write_file(lower(1, "m/a"), "a");
    write_file(lower(0, "m/b"), "b");
    mkdir_p(lower(1, "m2"));
    mkdir_p(lower(0, "m2"));
    write_file(lower(1, "m2/a"), "a");
    write_file(lower(0, "m2/b"), "b");
    mount();

    EXPECT_EQ(::rmdir(mnt("empty").c_str()), 0) << errname(errno);
    EXPECT_ERRNO(::access(mnt("empty").c_str(), F_OK), ENOENT);
    EXPECT_TRUE(is_whiteout(upper("empty")));
    EXPECT_ERRNO(::rmdir(mnt("full").c_str()), ENOTEMPTY);
    EXPECT_EQ(read_file(mnt("full/x")), "x");

    // Merged dir that only looks empty: every lower entry was deleted.
    ASSERT_EQ(::unlink(mnt("m/a").c_str()), 0);
    ASSERT_EQ(::unlink(mnt("m/b").c_str()), 0);
    EXPECT_TRUE(entries(mnt("m")).empty());
    EXPECT_EQ(::rmdir(mnt("m").c_str()), 0) << errname(errno);
    EXPECT_ERRNO(::access(mnt("m").c_str(), F_OK), ENOENT);
    EXPECT_TRUE(is_whiteout(upper("m")));
    // A new dir of the same name is empty: the lower entries stay hidden.
    ASSERT_EQ(::mkdir(mnt("m").c_str(), 0755), 0) << errname(errno);
    EXPECT_TRUE(entries(mnt("m")).empty());
    EXPECT_EQ(xattr_of(upper("m"), "trusted.overlay.opaque"), std::optional<std::string>("y"));

    // Merged dir with one lower entry left.
    ASSERT_EQ(::unlink(mnt("m2/a").c_str()), 0);
    EXPECT_ERRNO(::rmdir(mnt("m2").c_str()), ENOTEMPTY);
    EXPECT_EQ(entries(mnt("m2")), (std::set<std::string>{"b"}));

    remount();
    EXPECT_TRUE(entries(mnt("m")).empty());
    EXPECT_EQ(entries(mnt()), (std::set<std::string>{"full", "m", "m2"}));
}

// ---------------------------------------------------------------- rename

TEST_F(Semantics, RenameLowerFile)
{
    write_file(lower(1, "a"), "A", 0604);
    set_mtime(lower(1, "a"), 1000000);
    write_file(lower(0, "src"), "S");
    write_file(lower(1, "dst"), "D");
    mount();

    ASSERT_EQ(::rename(mnt("a").c_str(), mnt("b").c_str()), 0) << errname(errno);
    EXPECT_ERRNO(::access(mnt("a").c_str(), F_OK), ENOENT);
    EXPECT_EQ(read_file(mnt("b")), "A");
    struct stat st = lstat_of(mnt("b"));
    EXPECT_EQ(st.st_mode & 07777, 0604u);
    EXPECT_EQ(st.st_mtime, 1000000);
    EXPECT_TRUE(is_whiteout(upper("a")));
    EXPECT_EQ(read_file(upper("b")), "A");

    // Over a file of another lower.
    ASSERT_EQ(::rename(mnt("src").c_str(), mnt("dst").c_str()), 0) << errname(errno);
    EXPECT_EQ(read_file(mnt("dst")), "S");
    EXPECT_ERRNO(::access(mnt("src").c_str(), F_OK), ENOENT);
    EXPECT_EQ(read_file(lower(1, "dst")), "D");

    remount();
    EXPECT_EQ(read_file(mnt("b")), "A");
    EXPECT_EQ(read_file(mnt("dst")), "S");
    EXPECT_EQ(entries(mnt()), (std::set<std::string>{"b", "dst"}));
}

TEST_F(Semantics, RenameNoreplace)
{
    write_file(lower(1, "a"), "A");
    write_file(lower(1, "b"), "B");
    mount();

    EXPECT_ERRNO(rename2(mnt("a"), mnt("b"), RENAME_NOREPLACE), EEXIST);
    EXPECT_EQ(read_file(mnt("a")), "A");
    EXPECT_EQ(read_file(mnt("b")), "B");
    EXPECT_EQ(rename2(mnt("a"), mnt("c"), RENAME_NOREPLACE), 0) << errname(errno);
    EXPECT_EQ(read_file(mnt("c")), "A");
    EXPECT_ERRNO(::access(mnt("a").c_str(), F_OK), ENOENT);
    // A name whose lower file was deleted (a whiteout in the upper) is free.
    ASSERT_EQ(::unlink(mnt("b").c_str()), 0);
    EXPECT_EQ(rename2(mnt("c"), mnt("b"), RENAME_NOREPLACE), 0) << errname(errno);
    EXPECT_EQ(read_file(mnt("b")), "A");
    EXPECT_EQ(entries(mnt()), (std::set<std::string>{"b"}));
}

TEST_F(Semantics, RenameExchange)
{
    write_file(lower(0, "a"), "A");
    write_file(lower(1, "b"), "B");
    mkdir_p(lower(1, "dd"));
    write_file(lower(1, "dd/x"), "X");
    write_file(lower(1, "ff"), "F");
    mount();

    ASSERT_EQ(rename2(mnt("a"), mnt("b"), RENAME_EXCHANGE), 0) << errname(errno);
    EXPECT_EQ(read_file(mnt("a")), "B");
    EXPECT_EQ(read_file(mnt("b")), "A");

    ASSERT_EQ(rename2(mnt("dd"), mnt("ff"), RENAME_EXCHANGE), 0) << errname(errno);
    EXPECT_TRUE(S_ISREG(lstat_of(mnt("dd")).st_mode));
    EXPECT_EQ(read_file(mnt("dd")), "F");
    EXPECT_TRUE(S_ISDIR(lstat_of(mnt("ff")).st_mode));
    EXPECT_EQ(read_file(mnt("ff/x")), "X");
    EXPECT_EQ(entries(mnt("ff")), (std::set<std::string>{"x"}));

    EXPECT_ERRNO(rename2(mnt("a"), mnt("missing"), RENAME_EXCHANGE), ENOENT);

    remount();
    EXPECT_EQ(read_file(mnt("a")), "B");
    EXPECT_EQ(read_file(mnt("b")), "A");
    EXPECT_EQ(read_file(mnt("dd")), "F");
    EXPECT_EQ(read_file(mnt("ff/x")), "X");
}

// Kernel-compatible redirect: absolute path of the origin, or (rename within
// one parent) the bare old name, which the kernel also writes.
void expect_redirect(const std::string& upper_dir, const std::string& origin, bool allow_relative)
{
    auto v = xattr_of(upper_dir, "trusted.overlay.redirect");
    ASSERT_TRUE(v.has_value()) << upper_dir << " has no trusted.overlay.redirect";
    std::string base = origin.substr(origin.rfind('/') + 1);
    if (allow_relative)
        EXPECT_TRUE(*v == origin || *v == base) << "redirect is '" << *v << "', origin " << origin;
    else
        EXPECT_EQ(*v, origin);
}

TEST_F(Semantics, RenameLowerDirUsesRedirectAndCopiesNothing)
{
    mkdir_p(lower(1, "d/sub"), 0750);
    ASSERT_EQ(::chmod(lower(1, "d").c_str(), 0750), 0);
    ASSERT_EQ(::chown(lower(1, "d").c_str(), 7, 8), 0);
    write_file(lower(1, "d/f1"), "1");
    write_file(lower(1, "d/sub/f2"), "2");
    mkdir_p(lower(0, "p"));
    mount();

    ASSERT_EQ(::rename(mnt("d").c_str(), mnt("e").c_str()), 0) << errname(errno);
    EXPECT_ERRNO(::access(mnt("d").c_str(), F_OK), ENOENT);
    EXPECT_EQ(read_file(mnt("e/f1")), "1");
    EXPECT_EQ(read_file(mnt("e/sub/f2")), "2");
    EXPECT_EQ(entries(mnt("e")), (std::set<std::string>{"f1", "sub"}));
    EXPECT_EQ(entries(mnt()), (std::set<std::string>{"e", "p"}));
    struct stat st = lstat_of(mnt("e"));
    EXPECT_EQ(st.st_mode & 07777, 0750u);
    EXPECT_EQ(st.st_uid, 7u);

    EXPECT_TRUE(S_ISDIR(lstat_of(upper("e")).st_mode));
    expect_redirect(upper("e"), "/d", true);
    EXPECT_TRUE(entries(upper("e")).empty()) << "the renamed dir's contents were copied up";
    EXPECT_TRUE(is_whiteout(upper("d")));
    EXPECT_EQ(regular_files_under(upper()), std::vector<std::string>{});

    write_file(mnt("e/new"), "n");
    // Across parents the redirect must be absolute and still name the origin.
    ASSERT_EQ(::rename(mnt("e").c_str(), mnt("p/q").c_str()), 0) << errname(errno);
    expect_redirect(upper("p/q"), "/d", false);
    EXPECT_EQ(read_file(mnt("p/q/f1")), "1");
    EXPECT_EQ(read_file(mnt("p/q/new")), "n");

    remount();
    EXPECT_EQ(entries(mnt()), (std::set<std::string>{"p"}));
    EXPECT_EQ(entries(mnt("p/q")), (std::set<std::string>{"f1", "sub", "new"}));
    EXPECT_EQ(read_file(mnt("p/q/sub/f2")), "2");
    EXPECT_EQ(read_file(lower(1, "d/f1")), "1");
}

TEST_F(Semantics, RenameMergedDir)
{
    mkdir_p(lower(1, "m"));
    mkdir_p(lower(0, "m/sub"));
    write_file(lower(1, "m/a"), "a");
    write_file(lower(0, "m/b"), "b");
    write_file(lower(0, "m/sub/c"), "c");
    mount();

    ASSERT_EQ(::rename(mnt("m").c_str(), mnt("n").c_str()), 0) << errname(errno);
    EXPECT_ERRNO(::access(mnt("m").c_str(), F_OK), ENOENT);
    EXPECT_EQ(entries(mnt("n")), (std::set<std::string>{"a", "b", "sub"}));
    EXPECT_EQ(read_file(mnt("n/a")), "a");
    EXPECT_EQ(read_file(mnt("n/sub/c")), "c");
    expect_redirect(upper("n"), "/m", true);
    EXPECT_TRUE(entries(upper("n")).empty()) << "the merged dir's contents were copied up";
    EXPECT_EQ(regular_files_under(upper()), std::vector<std::string>{});

    // A merged dir that already has an upper part moves that part along.
    write_file(mnt("n/u"), "u");
    ASSERT_EQ(::rename(mnt("n").c_str(), mnt("o").c_str()), 0) << errname(errno);
    EXPECT_EQ(entries(mnt("o")), (std::set<std::string>{"a", "b", "sub", "u"}));
    expect_redirect(upper("o"), "/m", true);
    EXPECT_EQ(read_file(upper("o/u")), "u");

    remount();
    EXPECT_EQ(entries(mnt()), (std::set<std::string>{"o"}));
    EXPECT_EQ(entries(mnt("o")), (std::set<std::string>{"a", "b", "sub", "u"}));
    EXPECT_EQ(read_file(mnt("o/b")), "b");
}

TEST_F(Semantics, RenameDirOverDirs)
{
    mkdir_p(lower(1, "src"));
    write_file(lower(1, "src/x"), "x");
    mkdir_p(lower(1, "src2"));
    write_file(lower(1, "src2/y"), "y");
    mkdir_p(lower(1, "emptydst"));
    mkdir_p(lower(1, "fulldst"));
    write_file(lower(1, "fulldst/z"), "z");
    mkdir_p(lower(1, "looksempty"));
    write_file(lower(1, "looksempty/gone"), "g");
    mount();

    EXPECT_ERRNO(::rename(mnt("src").c_str(), mnt("fulldst").c_str()), ENOTEMPTY);
    ASSERT_EQ(::rename(mnt("src").c_str(), mnt("emptydst").c_str()), 0) << errname(errno);
    EXPECT_EQ(entries(mnt("emptydst")), (std::set<std::string>{"x"}));
    EXPECT_ERRNO(::access(mnt("src").c_str(), F_OK), ENOENT);

    // Over a lower dir whose entries were all deleted: none of them return.
    ASSERT_EQ(::unlink(mnt("looksempty/gone").c_str()), 0);
    ASSERT_EQ(::rename(mnt("src2").c_str(), mnt("looksempty").c_str()), 0) << errname(errno);
    EXPECT_EQ(entries(mnt("looksempty")), (std::set<std::string>{"y"}));
    remount();
    EXPECT_EQ(entries(mnt("looksempty")), (std::set<std::string>{"y"}));
    EXPECT_EQ(entries(mnt("emptydst")), (std::set<std::string>{"x"}));
    EXPECT_EQ(entries(mnt()), (std::set<std::string>{"emptydst", "fulldst", "looksempty"}));
}

// ---------------------------------------------------------------- copy-up

class CopyUp : public OverlayTest, public ::testing::WithParamInterface<const char*> {};

TEST_P(CopyUp, KeepsAttributesContentAndParents)
{
    const std::string op = GetParam();
    // A merged parent: lower0's attributes are the ones that count.
    mkdir_p(lower(1, "dir/sub"), 0700);
    mkdir_p(lower(0, "dir"), 0700);
    write_file(lower(1, "dir/sub/f"), "hello world", 0640);
    write_file(lower(1, "dir/sub/other"), "o");
    set_xattr(lower(1, "dir/sub/f"), "user.a", "1");
    set_xattr(lower(1, "dir/sub/f"), "user.b", "2");
    set_xattr(lower(1, "dir/sub"), "user.s", "sub");
    set_xattr(lower(0, "dir"), "user.d", "dir0");
    set_xattr(lower(1, "dir"), "user.d", "dir1");
    ASSERT_EQ(::chown(lower(1, "dir/sub/f").c_str(), 1234, 5678), 0);
    ASSERT_EQ(::chown(lower(1, "dir/sub").c_str(), 33, 44), 0);
    ASSERT_EQ(::chown(lower(0, "dir").c_str(), 11, 22), 0);
    ASSERT_EQ(::chmod(lower(1, "dir/sub").c_str(), 0715), 0);
    ASSERT_EQ(::chmod(lower(0, "dir").c_str(), 0751), 0);
    set_mtime(lower(1, "dir/sub/f"), 3000000);
    set_mtime(lower(1, "dir/sub"), 2000000);
    set_mtime(lower(0, "dir"), 1000000);
    mount();

    const std::string f = mnt("dir/sub/f");
    std::string content = "hello world";
    mode_t mode = 0640;
    uid_t uid = 1234;
    gid_t gid = 5678;
    std::optional<time_t> mtime = 3000000;
    std::map<std::string, std::string> xattrs{{"user.a", "1"}, {"user.b", "2"}};
    bool sub_mtime_kept = true;

    if (op == "write") {
        Fd fd(::open(f.c_str(), O_WRONLY));
        ASSERT_GE(fd.get(), 0) << errname(errno);
        ASSERT_EQ(::pwrite(fd.get(), "J", 1, 0), 1);
        ASSERT_EQ(::fsync(fd.get()), 0);
        content = "Jello world";
        mtime.reset();
    } else if (op == "truncate") {
        ASSERT_EQ(::truncate(f.c_str(), 5), 0) << errname(errno);
        content = "hello";
        mtime.reset();
    } else if (op == "chmod") {
        ASSERT_EQ(::chmod(f.c_str(), 0604), 0) << errname(errno);
        mode = 0604;
    } else if (op == "chown") {
        ASSERT_EQ(::chown(f.c_str(), 4321, 8765), 0) << errname(errno);
        uid = 4321;
        gid = 8765;
    } else if (op == "utimens") {
        struct timespec ts[2] = {{1500000000, 0}, {1500000000, 0}};
        ASSERT_EQ(::utimensat(AT_FDCWD, f.c_str(), ts, 0), 0) << errname(errno);
        mtime = 1500000000;
    } else if (op == "setxattr") {
        ASSERT_EQ(::setxattr(f.c_str(), "user.c", "3", 1, 0), 0) << errname(errno);
        xattrs["user.c"] = "3";
    } else if (op == "removexattr") {
        ASSERT_EQ(::removexattr(f.c_str(), "user.a"), 0) << errname(errno);
        xattrs.erase("user.a");
    } else if (op == "link") {
        ASSERT_EQ(::link(f.c_str(), mnt("dir/sub/f2").c_str()), 0) << errname(errno);
        sub_mtime_kept = false;
    } else {
        FAIL() << "unknown op " << op;
    }

    auto check_file = [&](const std::string& path) {
        SCOPED_TRACE(path);
        struct stat st = lstat_of(path);
        EXPECT_TRUE(S_ISREG(st.st_mode));
        EXPECT_EQ(st.st_mode & 07777, mode);
        EXPECT_EQ(st.st_uid, uid);
        EXPECT_EQ(st.st_gid, gid);
        if (mtime) {
            EXPECT_EQ(st.st_mtime, *mtime);
        }
        EXPECT_EQ(read_file(path), content);
        std::map<std::string, std::string> got;
        for (auto& n : xattr_names(path, "user."))
            got[n] = xattr_of(path, n).value_or("<unreadable>");
        EXPECT_EQ(got, xattrs);
    };
    auto check_parents = [&](const std::string& root) {
        SCOPED_TRACE(root);
        struct stat st = lstat_of(root + "/dir");
        EXPECT_TRUE(S_ISDIR(st.st_mode));
        EXPECT_EQ(st.st_mode & 07777, 0751u);
        EXPECT_EQ(st.st_uid, 11u);
        EXPECT_EQ(st.st_gid, 22u);
        EXPECT_EQ(st.st_mtime, 1000000);
        EXPECT_EQ(xattr_of(root + "/dir", "user.d"), std::optional<std::string>("dir0"));
        st = lstat_of(root + "/dir/sub");
        EXPECT_EQ(st.st_mode & 07777, 0715u);
        EXPECT_EQ(st.st_uid, 33u);
        EXPECT_EQ(st.st_gid, 44u);
        if (sub_mtime_kept) {
            EXPECT_EQ(st.st_mtime, 2000000);
        }
        EXPECT_EQ(xattr_of(root + "/dir/sub", "user.s"), std::optional<std::string>("sub"));
    };

    ASSERT_TRUE(exists(upper("dir/sub/f"))) << "no copy-up on " << op;
    check_file(upper("dir/sub/f"));
    check_file(f);
    check_parents(upper());
    check_parents(mnt());
    EXPECT_FALSE(exists(upper("dir/sub/other")));
    if (op == "link") {
        EXPECT_EQ(lstat_of(upper("dir/sub/f2")).st_ino, lstat_of(upper("dir/sub/f")).st_ino);
        EXPECT_EQ(lstat_of(f).st_nlink, 2u);
        EXPECT_EQ(read_file(mnt("dir/sub/f2")), content);
    }
    // The lower is untouched.
    EXPECT_EQ(read_file(lower(1, "dir/sub/f")), "hello world");
    EXPECT_EQ(lstat_of(lower(1, "dir/sub/f")).st_mode & 07777, 0640u);
    EXPECT_EQ(xattr_names(lower(1, "dir/sub/f"), "user."), (std::set<std::string>{"user.a", "user.b"}));
    // The copy went through W/work and left nothing there.
    EXPECT_TRUE(exists(work("work")));
    if (exists(work("work"))) {
        EXPECT_EQ(entries(work("work")), std::set<std::string>{});
    }

    remount();
    check_file(f);
    check_parents(mnt());
}

INSTANTIATE_TEST_SUITE_P(Ops, CopyUp,
                         ::testing::Values("write", "truncate", "chmod", "chown", "utimens", "setxattr",
                                           "removexattr", "link"),
                         [](const ::testing::TestParamInfo<const char*>& info) { return std::string(info.param); });

TEST_F(Semantics, OpenTruncOfLowerFile)
{
    write_file(lower(1, "f"), "content", 0640);
    ASSERT_EQ(::chown(lower(1, "f").c_str(), 1234, 1234), 0);
    write_file(lower(0, "g"), "top");
    write_file(lower(1, "g"), "bottom");
    mount();

    {
        Fd fd(::open(mnt("f").c_str(), O_WRONLY | O_TRUNC));
        ASSERT_GE(fd.get(), 0) << errname(errno);
        struct stat st;
        ASSERT_EQ(::fstat(fd.get(), &st), 0);
        EXPECT_EQ(st.st_size, 0);
        EXPECT_EQ(read_file(mnt("f")), "");
        ASSERT_EQ(::write(fd.get(), "new", 3), 3);
        ASSERT_EQ(::fsync(fd.get()), 0);
    }
    EXPECT_EQ(read_file(mnt("f")), "new");
    struct stat st = lstat_of(upper("f"));
    EXPECT_EQ(st.st_mode & 07777, 0640u);
    EXPECT_EQ(st.st_uid, 1234u);
    EXPECT_EQ(read_file(upper("f")), "new");
    EXPECT_EQ(read_file(lower(1, "f")), "content");

    { Fd fd(::open(mnt("g").c_str(), O_RDWR | O_TRUNC)); ASSERT_GE(fd.get(), 0); }
    EXPECT_EQ(read_file(mnt("g")), "");
    EXPECT_EQ(lstat_of(mnt("g")).st_size, 0);
    remount();
    EXPECT_EQ(read_file(mnt("g")), "");
    EXPECT_EQ(read_file(mnt("f")), "new");
}

TEST_F(Semantics, AppendToLowerFile)
{
    write_file(lower(1, "ap"), "abc");
    mount();
    write_sync(mnt("ap"), "def", O_WRONLY | O_APPEND);
    EXPECT_EQ(read_file(mnt("ap")), "abcdef");
    Fd a(::open(mnt("ap").c_str(), O_WRONLY | O_APPEND));
    Fd b(::open(mnt("ap").c_str(), O_WRONLY | O_APPEND));
    ASSERT_GE(a.get(), 0);
    ASSERT_GE(b.get(), 0);
    EXPECT_EQ(::write(a.get(), "1", 1), 1);
    EXPECT_EQ(::write(b.get(), "2", 1), 1);
    EXPECT_EQ(::write(a.get(), "3", 1), 1);
    EXPECT_EQ(::fsync(a.get()), 0);
    EXPECT_EQ(read_file(mnt("ap")), "abcdef123");
    EXPECT_EQ(read_file(upper("ap")), "abcdef123");
    EXPECT_EQ(read_file(lower(1, "ap")), "abc");
}

TEST_F(Semantics, HardLinkOfLowerFile)
{
    write_file(lower(1, "hl"), "H", 0600);
    mount();
    ASSERT_EQ(::link(mnt("hl").c_str(), mnt("hl2").c_str()), 0) << errname(errno);
    struct stat a = lstat_of(mnt("hl"));
    struct stat b = lstat_of(mnt("hl2"));
    EXPECT_EQ(a.st_ino, b.st_ino);
    EXPECT_EQ(a.st_nlink, 2u);
    EXPECT_EQ(b.st_nlink, 2u);
    write_sync(mnt("hl2"), "X", O_WRONLY | O_TRUNC);
    EXPECT_EQ(read_file(mnt("hl")), "X");
    EXPECT_EQ(lstat_of(upper("hl")).st_ino, lstat_of(upper("hl2")).st_ino);
    ASSERT_EQ(::unlink(mnt("hl").c_str()), 0);
    EXPECT_EQ(lstat_of(mnt("hl2")).st_nlink, 1u);
    EXPECT_EQ(read_file(mnt("hl2")), "X");
    EXPECT_ERRNO(::access(mnt("hl").c_str(), F_OK), ENOENT);
}

// ---------------------------------------------------------------- xattrs

TEST_F(Semantics, UserXattrsVisibleAndSettable)
{
    write_file(lower(1, "f"), "f");
    set_xattr(lower(1, "f"), "user.a", "1");
    mkdir_p(lower(1, "d"));
    set_xattr(lower(1, "d"), "user.x", "dx");
    mount();

    EXPECT_EQ(xattr_of(mnt("f"), "user.a"), std::optional<std::string>("1"));
    EXPECT_EQ(xattr_names(mnt("f"), "user."), (std::set<std::string>{"user.a"}));
    EXPECT_EQ(xattr_of(mnt("d"), "user.x"), std::optional<std::string>("dx"));

    // The size protocol: a 0-size query returns the length, a short buffer ERANGE.
    EXPECT_EQ(::getxattr(mnt("f").c_str(), "user.a", nullptr, 0), 1);
    std::string big(3000, 'v');
    ASSERT_EQ(::setxattr(mnt("f").c_str(), "user.big", big.data(), big.size(), 0), 0) << errname(errno);
    char small[16];
    EXPECT_ERRNO(::getxattr(mnt("f").c_str(), "user.big", small, sizeof small), ERANGE);
    EXPECT_EQ(xattr_of(mnt("f"), "user.big"), std::optional<std::string>(big));
    ssize_t need = ::listxattr(mnt("f").c_str(), nullptr, 0);
    EXPECT_GE(need, static_cast<ssize_t>(sizeof("user.a") + sizeof("user.big")));
    EXPECT_ERRNO(::listxattr(mnt("f").c_str(), small, 2), ERANGE);

    EXPECT_ERRNO(::setxattr(mnt("f").c_str(), "user.a", "z", 1, XATTR_CREATE), EEXIST);
    EXPECT_ERRNO(::setxattr(mnt("f").c_str(), "user.none", "z", 1, XATTR_REPLACE), ENODATA);
    ASSERT_EQ(::removexattr(mnt("f").c_str(), "user.a"), 0) << errname(errno);
    EXPECT_ERRNO(::getxattr(mnt("f").c_str(), "user.a", nullptr, 0), ENODATA);
    EXPECT_ERRNO(::removexattr(mnt("f").c_str(), "user.a"), ENODATA);
    EXPECT_EQ(xattr_names(mnt("f"), "user."), (std::set<std::string>{"user.big"}));

    ASSERT_EQ(::setxattr(mnt("d").c_str(), "user.y", "dy", 2, 0), 0) << errname(errno);
    EXPECT_EQ(xattr_names(mnt("d"), "user."), (std::set<std::string>{"user.x", "user.y"}));
    // trusted.* outside the overlay's namespace is ordinary data for root.
    ASSERT_EQ(::setxattr(mnt("d").c_str(), "trusted.mine", "t", 1, 0), 0) << errname(errno);
    EXPECT_EQ(xattr_of(mnt("d"), "trusted.mine"), std::optional<std::string>("t"));

    EXPECT_EQ(xattr_names(lower(1, "f"), "user."), (std::set<std::string>{"user.a"}));
    remount();
    EXPECT_EQ(xattr_names(mnt("f"), "user."), (std::set<std::string>{"user.big"}));
    EXPECT_EQ(xattr_of(mnt("d"), "user.y"), std::optional<std::string>("dy"));
}

TEST_F(Semantics, OverlayPrivateXattrsHiddenAndNotSettable)
{
    // Contract (task brief): trusted.overlay.* is hidden from listxattr and
    // get/set on it gives EOPNOTSUPP. (Kernels >= 6.7 instead escape such
    // names to trusted.overlay.overlay.*; either way the overlay's own
    // metadata can never be read or forged through the mount.)
    mkdir_p(lower(0, "o"));
    set_xattr(lower(0, "o"), "trusted.overlay.opaque", "y");
    set_xattr(lower(0, "o"), "user.k", "v");
    mkdir_p(lower(1, "o"));
    write_file(lower(1, "o/hidden"), "h");
    mkdir_p(lower(1, "m"));
    write_file(lower(1, "m/a"), "a");
    mkdir_p(lower(1, "r"));
    write_file(lower(1, "f"), "f");
    mount();
    ASSERT_EQ(::rename(mnt("r").c_str(), mnt("r2").c_str()), 0) << errname(errno);

    for (const char* p : {"o", "m", "r2", "f", ""}) {
        SCOPED_TRACE(p);
        EXPECT_EQ(xattr_names(mnt(p), "trusted.overlay."), std::set<std::string>{});
    }
    EXPECT_EQ(xattr_names(mnt("o"), "user."), (std::set<std::string>{"user.k"}));
    EXPECT_ERRNO(::getxattr(mnt("o").c_str(), "trusted.overlay.opaque", nullptr, 0), EOPNOTSUPP);
    EXPECT_ERRNO(::getxattr(mnt("r2").c_str(), "trusted.overlay.redirect", nullptr, 0), EOPNOTSUPP);
    EXPECT_ERRNO(::setxattr(mnt("m").c_str(), "trusted.overlay.opaque", "y", 1, 0), EOPNOTSUPP);
    EXPECT_ERRNO(::setxattr(mnt("f").c_str(), "trusted.overlay.foo", "y", 1, 0), EOPNOTSUPP);
    EXPECT_ERRNO(::removexattr(mnt("o").c_str(), "trusted.overlay.opaque"), EOPNOTSUPP);
    EXPECT_EQ(entries(mnt("m")), (std::set<std::string>{"a"}));
    EXPECT_TRUE(entries(mnt("o")).empty());
    remount();
    EXPECT_EQ(entries(mnt("m")), (std::set<std::string>{"a"}));
    EXPECT_TRUE(entries(mnt("o")).empty());
}

// ---------------------------------------------------------------- limits

TEST_F(Semantics, StatfsReportsUpperFilesystem)
{
    mount();
    struct statvfs m {}, u {};
    ASSERT_EQ(::statvfs(mnt().c_str(), &m), 0) << errname(errno);
    ASSERT_EQ(::statvfs(upper().c_str(), &u), 0);
    EXPECT_EQ(m.f_namemax, 255u);
    EXPECT_EQ(m.f_blocks * m.f_frsize, u.f_blocks * u.f_frsize);
    EXPECT_EQ(m.f_files, u.f_files);
}

TEST_F(Semantics, NameMaxIs255AndEnforced)
{
    const std::string n255(255, 'a');
    const std::string l255(255, 'l');
    const std::string n256(256, 'b');
    write_file(lower(1, l255), "lower");
    write_file(lower(1, "short"), "s");
    mount();

    EXPECT_EQ(read_file(mnt(l255)), "lower");
    write_file(mnt(n255), "x");
    EXPECT_EQ(read_file(mnt(n255)), "x");
    EXPECT_EQ(entries(mnt()), (std::set<std::string>{l255, n255, "short"}));
    EXPECT_ERRNO(::mkdir(mnt(n255).c_str(), 0755), EEXIST);
    ASSERT_EQ(::unlink(mnt(l255).c_str()), 0) << errname(errno);
    EXPECT_TRUE(is_whiteout(upper(l255)));
    EXPECT_ERRNO(::access(mnt(l255).c_str(), F_OK), ENOENT);
    ASSERT_EQ(::rename(mnt(n255).c_str(), mnt(l255).c_str()), 0) << errname(errno);
    EXPECT_EQ(read_file(mnt(l255)), "x");
    ASSERT_EQ(::symlink("t", mnt(n255).c_str()), 0) << errname(errno);
    ASSERT_EQ(::unlink(mnt(n255).c_str()), 0);
    ASSERT_EQ(::mkdir(mnt(n255).c_str(), 0755), 0) << errname(errno);
    write_file(mnt(n255 + "/" + n255), "deep");
    EXPECT_EQ(read_file(mnt(n255 + "/" + n255)), "deep");

    EXPECT_ERRNO(::open(mnt(n256).c_str(), O_CREAT | O_WRONLY, 0644), ENAMETOOLONG);
    EXPECT_ERRNO(::access(mnt(n256).c_str(), F_OK), ENAMETOOLONG);
    EXPECT_ERRNO(::mkdir(mnt(n256).c_str(), 0755), ENAMETOOLONG);
    EXPECT_ERRNO(::mkfifo(mnt(n256).c_str(), 0644), ENAMETOOLONG);
    EXPECT_ERRNO(::symlink("t", mnt(n256).c_str()), ENAMETOOLONG);
    EXPECT_ERRNO(::link(mnt("short").c_str(), mnt(n256).c_str()), ENAMETOOLONG);
    EXPECT_ERRNO(::rename(mnt("short").c_str(), mnt(n256).c_str()), ENAMETOOLONG);
    EXPECT_ERRNO(::access(mnt(n255 + "/" + n256).c_str(), F_OK), ENAMETOOLONG);
    EXPECT_EQ(read_file(mnt("short")), "s");
}

// 16 components of up to 255 bytes: ~4 KiB relative paths, just under
// PATH_MAX, and past it once a layer's absolute path is put in front.
// The last one is shorter so that a whole relative path stays under PATH_MAX.
constexpr int kDepth = 16;
std::string component(int i)
{
    return std::string(i == kDepth - 1 ? 230 : 255, static_cast<char>('a' + i % 26));
}

// fd of BASE/first/c0/.../c(depth-1), creating the dirs when CREATE.
int open_chain(int base, const std::string& first, int depth, bool create)
{
    if (create)
        ::mkdirat(base, first.c_str(), 0755);
    int fd = ::openat(base, first.c_str(), O_DIRECTORY | O_RDONLY | O_CLOEXEC);
    for (int i = 0; i < depth && fd >= 0; ++i) {
        if (create && ::mkdirat(fd, component(i).c_str(), 0755) != 0 && errno != EEXIST) {
            ::close(fd);
            return -1;
        }
        int next = ::openat(fd, component(i).c_str(), O_DIRECTORY | O_RDONLY | O_CLOEXEC);
        ::close(fd);
        fd = next;
    }
    return fd;
}

std::string chain_path(const std::string& first, int depth)
{
    std::string p = first;
    for (int i = 0; i < depth; ++i)
        p += "/" + component(i);
    return p;
}

std::string read_at(int dir, const std::string& rel)
{
    Fd fd(::openat(dir, rel.c_str(), O_RDONLY | O_CLOEXEC));
    if (fd.get() < 0)
        return "<open: " + errname(errno) + ">";
    return pread_str(fd.get(), 4096, 0);
}

TEST_F(Semantics, DeepPathsNearPathMax)
{
    {
        Fd base(::open(lower(1).c_str(), O_DIRECTORY | O_RDONLY));
        Fd deep(open_chain(base.get(), "deep", kDepth, true));
        ASSERT_GE(deep.get(), 0);
        Fd f(::openat(deep.get(), "f", O_CREAT | O_WRONLY, 0644));
        ASSERT_EQ(::write(f.get(), "deep", 4), 4);
        Fd f2(::openat(deep.get(), "f2", O_CREAT | O_WRONLY, 0644));
        ASSERT_GE(f2.get(), 0);
    }
    mount();
    const std::string rel = chain_path("deep", kDepth) + "/f";
    ASSERT_GT(rel.size(), 4050u);
    ASSERT_LT(rel.size(), static_cast<size_t>(PATH_MAX));
    ASSERT_GT((mnt() + "/" + rel).size(), static_cast<size_t>(PATH_MAX));

    Fd m(::open(mnt().c_str(), O_DIRECTORY | O_RDONLY));
    ASSERT_GE(m.get(), 0);
    // One openat with a ~4 KiB relative path: the kernel walks it component
    // by component; the engine must resolve each lower from fds.
    EXPECT_EQ(read_at(m.get(), rel), "deep");
    struct stat st;
    EXPECT_EQ(::fstatat(m.get(), rel.c_str(), &st, AT_SYMLINK_NOFOLLOW), 0) << errname(errno);

    // Copy-up of a file 16 levels down.
    {
        Fd f(::openat(m.get(), rel.c_str(), O_WRONLY | O_APPEND));
        ASSERT_GE(f.get(), 0) << errname(errno);
        ASSERT_EQ(::write(f.get(), "+", 1), 1);
        ASSERT_EQ(::fsync(f.get()), 0);
    }
    EXPECT_EQ(read_at(m.get(), rel), "deep+");
    {
        Fd ub(::open(upper().c_str(), O_DIRECTORY | O_RDONLY));
        Fd ud(open_chain(ub.get(), "deep", kDepth, false));
        ASSERT_GE(ud.get(), 0) << "parents were not copied up";
        EXPECT_EQ(read_at(ud.get(), "f"), "deep+");
        EXPECT_FALSE(::faccessat(ud.get(), "f2", F_OK, AT_SYMLINK_NOFOLLOW) == 0);
    }

    // Unlink and rename at depth.
    Fd md(open_chain(m.get(), "deep", kDepth, false));
    ASSERT_GE(md.get(), 0);
    EXPECT_EQ(::unlinkat(md.get(), "f2", 0), 0) << errname(errno);
    EXPECT_EQ(::renameat(md.get(), "f", md.get(), "g"), 0) << errname(errno);
    EXPECT_EQ(read_at(md.get(), "g"), "deep+");

    // A new deep tree made through the mount, then used with chdir + relative names.
    Fd made(open_chain(m.get(), "made", kDepth, true));
    ASSERT_GE(made.get(), 0) << errname(errno);
    {
        Fd g(::openat(made.get(), "g", O_CREAT | O_WRONLY, 0644));
        ASSERT_GE(g.get(), 0) << errname(errno);
        ASSERT_EQ(::write(g.get(), "G", 1), 1);
    }
    Fd cwd(::open(".", O_DIRECTORY | O_RDONLY));
    ASSERT_EQ(::fchdir(made.get()), 0);
    write_file("h", "H");
    std::string h = read_file("h");
    std::string g = read_file("g");
    ASSERT_EQ(::fchdir(cwd.get()), 0);
    EXPECT_EQ(h, "H");
    EXPECT_EQ(g, "G");
    EXPECT_EQ(read_at(m.get(), chain_path("made", kDepth) + "/h"), "H");

    Fd ub(::open(upper().c_str(), O_DIRECTORY | O_RDONLY));
    Fd ud(open_chain(ub.get(), "deep", kDepth, false));
    ASSERT_GE(ud.get(), 0);
    struct stat wst;
    EXPECT_EQ(::fstatat(ud.get(), "f2", &wst, AT_SYMLINK_NOFOLLOW), 0);
    EXPECT_TRUE(S_ISCHR(wst.st_mode) && wst.st_rdev == makedev(0, 0)) << "no whiteout for f2 at depth";
    Fd um(open_chain(ub.get(), "made", kDepth, false));
    ASSERT_GE(um.get(), 0);
    EXPECT_EQ(read_at(um.get(), "g"), "G");
    EXPECT_EQ(read_at(um.get(), "h"), "H");
}

// ---------------------------------------------------------------- sync, locks, space

TEST_F(Semantics, FsyncAndFsyncdirSucceed)
{
    write_file(lower(1, "lf"), "l");
    mkdir_p(lower(1, "ld"));
    mkdir_p(lower(1, "md"));
    mkdir_p(lower(0, "md"));
    mount();
    write_file(mnt("uf"), "u");
    ASSERT_EQ(::mkdir(mnt("ud").c_str(), 0755), 0);

    for (const char* p : {"uf", "lf"}) {
        Fd fd(::open(mnt(p).c_str(), O_RDONLY));
        ASSERT_GE(fd.get(), 0) << p;
        EXPECT_EQ(::fsync(fd.get()), 0) << p << ": " << errname(errno);
        EXPECT_EQ(::fdatasync(fd.get()), 0) << p << ": " << errname(errno);
    }
    {
        Fd fd(::open(mnt("uf").c_str(), O_WRONLY | O_APPEND));
        ASSERT_EQ(::write(fd.get(), "x", 1), 1);
        EXPECT_EQ(::fsync(fd.get()), 0) << errname(errno);
        EXPECT_EQ(::syncfs(fd.get()), 0) << errname(errno);
    }
    for (const char* p : {"", "ud", "ld", "md"}) {
        Fd fd(::open(mnt(p).c_str(), O_RDONLY | O_DIRECTORY));
        ASSERT_GE(fd.get(), 0) << p;
        EXPECT_EQ(::fsync(fd.get()), 0) << "fsyncdir '" << p << "': " << errname(errno);
        EXPECT_EQ(::fdatasync(fd.get()), 0) << "fsyncdir '" << p << "': " << errname(errno);
    }
    EXPECT_EQ(read_file(upper("uf")), "ux");
}

TEST_F(Semantics, FlockConflictsBetweenProcesses)
{
    write_file(lower(1, "lk"), "l");
    mount();
    Fd fd(::open(mnt("lk").c_str(), O_RDWR));
    ASSERT_GE(fd.get(), 0) << errname(errno);
    ASSERT_EQ(::flock(fd.get(), LOCK_EX), 0) << errname(errno);
    const std::string path = mnt("lk");
    EXPECT_EQ(in_child([&]() -> std::string {
                  Fd mine(::open(path.c_str(), O_RDWR));
                  CHILD_CHECK(mine.get() >= 0);
                  CHILD_ERRNO(::flock(mine.get(), LOCK_EX | LOCK_NB), EWOULDBLOCK);
                  CHILD_ERRNO(::flock(mine.get(), LOCK_SH | LOCK_NB), EWOULDBLOCK);
                  return "";
              }),
              "");
    ASSERT_EQ(::flock(fd.get(), LOCK_UN), 0);
    ASSERT_EQ(::flock(fd.get(), LOCK_SH), 0);
    EXPECT_EQ(in_child([&]() -> std::string {
                  Fd mine(::open(path.c_str(), O_RDONLY));
                  CHILD_CHECK(mine.get() >= 0);
                  CHILD_CHECK(::flock(mine.get(), LOCK_SH | LOCK_NB) == 0);
                  CHILD_ERRNO(::flock(mine.get(), LOCK_EX | LOCK_NB), EWOULDBLOCK);
                  return "";
              }),
              "");
    ASSERT_EQ(::flock(fd.get(), LOCK_UN), 0);
    EXPECT_EQ(in_child([&]() -> std::string {
                  Fd mine(::open(path.c_str(), O_RDONLY));
                  CHILD_CHECK(::flock(mine.get(), LOCK_EX | LOCK_NB) == 0);
                  return "";
              }),
              "");
}

TEST_F(Semantics, PosixLocksConflictBetweenProcesses)
{
    write_file(lower(1, "lk"), std::string(1000, 'l'));
    mount();
    const std::string path = mnt("lk");
    Fd fd(::open(path.c_str(), O_RDWR));
    ASSERT_GE(fd.get(), 0) << errname(errno);
    struct flock fl {};
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = 0;
    fl.l_len = 100;
    ASSERT_EQ(::fcntl(fd.get(), F_SETLK, &fl), 0) << errname(errno);
    const pid_t parent = ::getpid();

    EXPECT_EQ(in_child([&]() -> std::string {
                  Fd mine(::open(path.c_str(), O_RDWR));
                  CHILD_CHECK(mine.get() >= 0);
                  struct flock c {};
                  c.l_type = F_WRLCK;
                  c.l_whence = SEEK_SET;
                  c.l_start = 50;
                  c.l_len = 10;
                  errno = 0;
                  int r = ::fcntl(mine.get(), F_SETLK, &c);
                  CHILD_CHECK(r == -1 && (errno == EAGAIN || errno == EACCES));
                  c.l_type = F_RDLCK;
                  r = ::fcntl(mine.get(), F_SETLK, &c);
                  CHILD_CHECK(r == -1 && (errno == EAGAIN || errno == EACCES));
                  c.l_type = F_WRLCK;
                  CHILD_CHECK(::fcntl(mine.get(), F_GETLK, &c) == 0);
                  CHILD_CHECK(c.l_type == F_WRLCK);
                  CHILD_CHECK(c.l_pid == parent);
                  CHILD_CHECK(c.l_start == 0);
                  CHILD_CHECK(c.l_len == 100);
                  // A range nobody holds is free.
                  struct flock free {};
                  free.l_type = F_WRLCK;
                  free.l_whence = SEEK_SET;
                  free.l_start = 200;
                  free.l_len = 100;
                  CHILD_CHECK(::fcntl(mine.get(), F_SETLK, &free) == 0);
                  return "";
              }),
              "");

    // The child's locks died with it; now the parent's range is the only one.
    fl.l_start = 200;
    fl.l_len = 100;
    EXPECT_EQ(::fcntl(fd.get(), F_SETLK, &fl), 0) << errname(errno);
    fl.l_type = F_UNLCK;
    fl.l_start = 0;
    fl.l_len = 0;
    ASSERT_EQ(::fcntl(fd.get(), F_SETLK, &fl), 0);
    EXPECT_EQ(in_child([&]() -> std::string {
                  Fd mine(::open(path.c_str(), O_RDWR));
                  struct flock c {};
                  c.l_type = F_WRLCK;
                  c.l_whence = SEEK_SET;
                  c.l_start = 0;
                  c.l_len = 0;
                  CHILD_CHECK(::fcntl(mine.get(), F_SETLK, &c) == 0);
                  return "";
              }),
              "");
}

TEST_F(Semantics, Fallocate)
{
    write_file(lower(1, "fa"), "abc");
    mount();
    Fd fd(::open(mnt("fa").c_str(), O_RDWR));
    ASSERT_GE(fd.get(), 0) << errname(errno);
    ASSERT_EQ(::fallocate(fd.get(), 0, 0, 1 << 20), 0) << errname(errno);
    struct stat st;
    ASSERT_EQ(::fstat(fd.get(), &st), 0);
    EXPECT_EQ(st.st_size, 1 << 20);
    EXPECT_EQ(pread_str(fd.get(), 3, 0), "abc");
    EXPECT_EQ(pread_str(fd.get(), 4, (1 << 20) - 4), std::string(4, '\0'));
    ASSERT_EQ(::fallocate(fd.get(), FALLOC_FL_KEEP_SIZE, 1 << 20, 1 << 20), 0) << errname(errno);
    ASSERT_EQ(::fstat(fd.get(), &st), 0);
    EXPECT_EQ(st.st_size, 1 << 20);
    ASSERT_EQ(::fallocate(fd.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 4096), 0) << errname(errno);
    EXPECT_EQ(pread_str(fd.get(), 3, 0), std::string(3, '\0'));
    ASSERT_EQ(::fsync(fd.get()), 0);
    struct stat ust = lstat_of(upper("fa"));
    EXPECT_EQ(ust.st_size, 1 << 20);
    // ~2 MiB allocated (1 MiB in size + 1 MiB kept past EOF), minus the hole.
    EXPECT_GE(ust.st_blocks * 512, (2 << 20) - 4096);
    EXPECT_EQ(read_file(lower(1, "fa")), "abc");
}

using Probe = std::pair<off_t, int>;
std::vector<std::string> probe_seek(int fd, const std::vector<Probe>& probes)
{
    std::vector<std::string> out;
    for (auto [off, whence] : probes) {
        errno = 0;
        off_t r = ::lseek(fd, off, whence);
        out.push_back(std::string(whence == SEEK_DATA ? "DATA(" : "HOLE(") + std::to_string(off) + ")="
                      + (r < 0 ? errname(errno) : std::to_string(r)));
    }
    return out;
}

TEST_F(Semantics, SeekDataHoleOnSparseLowerAndAfterCopyUp)
{
    constexpr off_t MiB = 1 << 20;
    {
        Fd fd(::open(lower(1, "sparse").c_str(), O_CREAT | O_WRONLY, 0644));
        ASSERT_GE(fd.get(), 0);
        std::string a(4096, 'A'), b(4096, 'B');
        ASSERT_EQ(::pwrite(fd.get(), a.data(), a.size(), 0), 4096);
        ASSERT_EQ(::pwrite(fd.get(), b.data(), b.size(), 32 * MiB), 4096);
        ASSERT_EQ(::ftruncate(fd.get(), 64 * MiB), 0);
        ASSERT_EQ(::fsync(fd.get()), 0);
    }
    ASSERT_LE(lstat_of(lower(1, "sparse")).st_blocks * 512, 64 * 1024) << "the test fs does not do sparse files";
    const std::vector<Probe> probes{
        {0, SEEK_DATA}, {0, SEEK_HOLE}, {4096, SEEK_DATA}, {4096, SEEK_HOLE}, {MiB, SEEK_DATA},
        {32 * MiB - 1, SEEK_HOLE}, {32 * MiB, SEEK_HOLE}, {32 * MiB + 4096, SEEK_DATA}, {40 * MiB, SEEK_DATA},
        {40 * MiB, SEEK_HOLE}, {64 * MiB, SEEK_DATA}};
    std::vector<std::string> want;
    {
        Fd fd(::open(lower(1, "sparse").c_str(), O_RDONLY));
        want = probe_seek(fd.get(), probes);
    }
    mount();
    {
        Fd fd(::open(mnt("sparse").c_str(), O_RDONLY));
        ASSERT_GE(fd.get(), 0);
        EXPECT_EQ(probe_seek(fd.get(), probes), want) << "lseek through the overlay differs from the lower file";
    }

    // A metadata change copies the file up; the holes must survive it.
    ASSERT_EQ(::chmod(mnt("sparse").c_str(), 0600), 0) << errname(errno);
    struct stat ust = lstat_of(upper("sparse"));
    ASSERT_TRUE(S_ISREG(ust.st_mode)) << "no copy-up";
    EXPECT_EQ(ust.st_size, 64 * MiB);
    // Kernel overlayfs allocates 2 MiB here (it skips holes per 1 MiB chunk);
    // a copy that writes the zeros allocates 64 MiB.
    EXPECT_LE(ust.st_blocks * 512, 8 * MiB) << "holes were filled in by copy-up";
    {
        Fd u(::open(upper("sparse").c_str(), O_RDONLY));
        Fd m(::open(mnt("sparse").c_str(), O_RDONLY));
        ASSERT_GE(m.get(), 0);
        EXPECT_EQ(pread_str(m.get(), 4096, 0), std::string(4096, 'A'));
        EXPECT_EQ(pread_str(m.get(), 4096, 32 * MiB), std::string(4096, 'B'));
        EXPECT_EQ(pread_str(m.get(), 16, 16 * MiB), std::string(16, '\0'));
        EXPECT_EQ(probe_seek(m.get(), probes), probe_seek(u.get(), probes));
        off_t hole = ::lseek(m.get(), 0, SEEK_HOLE);
        EXPECT_GT(hole, 0);
        EXPECT_LT(hole, 32 * MiB);
        errno = 0;
        EXPECT_EQ(::lseek(m.get(), 40 * MiB, SEEK_DATA), -1);
        EXPECT_EQ(errname(errno), "ENXIO");
    }
    EXPECT_EQ(lstat_of(mnt("sparse")).st_mode & 07777, 0600u);
}

// ---------------------------------------------------------------- read-only

TEST_F(Semantics, ReadOnlyMountGivesErofs)
{
    write_file(lower(1, "f"), "x");
    mkdir_p(lower(1, "d"));
    write_file(lower(0, "g"), "g");
    mount("", /*read_only=*/true);

    EXPECT_EQ(read_file(mnt("f")), "x");
    EXPECT_EQ(entries(mnt()), (std::set<std::string>{"d", "f", "g"}));
    EXPECT_ERRNO(::open(mnt("f").c_str(), O_WRONLY), EROFS);
    EXPECT_ERRNO(::open(mnt("f").c_str(), O_RDWR), EROFS);
    EXPECT_ERRNO(::open(mnt("f").c_str(), O_WRONLY | O_TRUNC), EROFS);
    EXPECT_ERRNO(::open(mnt("new").c_str(), O_CREAT | O_WRONLY, 0644), EROFS);
    EXPECT_ERRNO(::mkdir(mnt("nd").c_str(), 0755), EROFS);
    EXPECT_ERRNO(::mkfifo(mnt("fifo").c_str(), 0644), EROFS);
    EXPECT_ERRNO(::symlink("x", mnt("sl").c_str()), EROFS);
    EXPECT_ERRNO(::link(mnt("f").c_str(), mnt("hl").c_str()), EROFS);
    EXPECT_ERRNO(::unlink(mnt("f").c_str()), EROFS);
    EXPECT_ERRNO(::rmdir(mnt("d").c_str()), EROFS);
    EXPECT_ERRNO(::rename(mnt("f").c_str(), mnt("f2").c_str()), EROFS);
    EXPECT_ERRNO(::chmod(mnt("f").c_str(), 0600), EROFS);
    EXPECT_ERRNO(::chown(mnt("f").c_str(), 1, 1), EROFS);
    EXPECT_ERRNO(::truncate(mnt("f").c_str(), 0), EROFS);
    EXPECT_ERRNO(::utimensat(AT_FDCWD, mnt("f").c_str(), nullptr, 0), EROFS);
    EXPECT_ERRNO(::setxattr(mnt("f").c_str(), "user.x", "1", 1, 0), EROFS);
    EXPECT_ERRNO(::removexattr(mnt("f").c_str(), "user.x"), EROFS);
    EXPECT_EQ(read_file(mnt("f")), "x");
    EXPECT_EQ(read_file(lower(1, "f")), "x");
    EXPECT_EQ(entries(upper()), std::set<std::string>{});
    EXPECT_EQ(entries(mnt()), (std::set<std::string>{"d", "f", "g"}));
}

// ---------------------------------------------------------------- ownership

TEST_F(Semantics, CallerOwnsWhatItCreates)
{
    mkdir_p(lower(1, "pub"), 0777);
    let_others_in();
    mount();
    const std::string pub = mnt("pub");
    EXPECT_EQ(in_child(
                  [&]() -> std::string {
                      Fd f(::open((pub + "/f").c_str(), O_CREAT | O_WRONLY, 0644));
                      CHILD_CHECK(f.get() >= 0);
                      CHILD_CHECK(::mkdir((pub + "/d").c_str(), 0755) == 0);
                      CHILD_CHECK(::symlink("t", (pub + "/l").c_str()) == 0);
                      CHILD_CHECK(::mkfifo((pub + "/p").c_str(), 0644) == 0);
                      return "";
                  },
                  65534, 65534),
              "");
    // fsuid/fsgid alone (what FUSE reports as the caller) decide too.
    EXPECT_EQ(in_child([&]() -> std::string {
                  ::setfsgid(65533);
                  ::setfsuid(65533);
                  Fd f(::open((pub + "/g").c_str(), O_CREAT | O_WRONLY, 0644));
                  CHILD_CHECK(f.get() >= 0);
                  return "";
              }),
              "");
    for (const char* n : {"f", "d", "l", "p"}) {
        for (auto root : {mnt("pub/"), upper("pub/")}) {
            struct stat st = lstat_of(root + n);
            EXPECT_EQ(st.st_uid, 65534u) << root << n;
            EXPECT_EQ(st.st_gid, 65534u) << root << n;
        }
    }
    EXPECT_EQ(lstat_of(mnt("pub/g")).st_uid, 65533u);
    EXPECT_EQ(lstat_of(mnt("pub/g")).st_gid, 65533u);
    EXPECT_EQ(lstat_of(upper("pub/g")).st_uid, 65533u);
    // The parent copied up on the caller's behalf keeps its own owner and mode.
    struct stat st = lstat_of(upper("pub"));
    EXPECT_EQ(st.st_uid, 0u);
    EXPECT_EQ(st.st_mode & 07777, 0777u);
}

TEST_F(Semantics, DefaultPermissionsDeniesNonOwners)
{
    mkdir_p(lower(1, "pub"), 0777);
    mkdir_p(lower(1, "sticky"), 01777);
    mkdir_p(lower(1, "closed"), 0755);
    write_file(lower(1, "pub/rootfile"), "r", 0644);
    write_file(lower(1, "pub/secret"), "s", 0600);
    write_file(lower(1, "sticky/rootfile"), "r", 0644);
    let_others_in();
    mount();
    const std::string m = mnt();
    EXPECT_EQ(in_child(
                  [&]() -> std::string {
                      CHILD_CHECK(::access((m + "/pub").c_str(), W_OK | X_OK) == 0);
                      CHILD_ERRNO(::open((m + "/pub/rootfile").c_str(), O_WRONLY), EACCES);
                      CHILD_ERRNO(::open((m + "/pub/secret").c_str(), O_RDONLY), EACCES);
                      CHILD_ERRNO(::truncate((m + "/pub/rootfile").c_str(), 0), EACCES);
                      CHILD_ERRNO(::chmod((m + "/pub/rootfile").c_str(), 0666), EPERM);
                      CHILD_ERRNO(::chown((m + "/pub/rootfile").c_str(), 65534, 65534), EPERM);
                      CHILD_ERRNO(::setxattr((m + "/pub/rootfile").c_str(), "user.x", "1", 1, 0), EACCES);
                      CHILD_ERRNO(::open((m + "/closed/new").c_str(), O_CREAT | O_WRONLY, 0644), EACCES);
                      CHILD_ERRNO(::mkdir((m + "/closed/nd").c_str(), 0755), EACCES);
                      CHILD_ERRNO(::unlink((m + "/sticky/rootfile").c_str()), EPERM);
                      Fd r(::open((m + "/pub/rootfile").c_str(), O_RDONLY));
                      CHILD_CHECK(r.get() >= 0);
                      CHILD_CHECK(pread_str(r.get(), 10, 0) == "r");
                      return "";
                  },
                  65534, 65534),
              "");
    // Nothing denied was copied up.
    EXPECT_FALSE(exists(upper("pub")));
    EXPECT_FALSE(exists(upper("closed")));
    EXPECT_FALSE(exists(upper("sticky")));
    EXPECT_EQ(read_file(mnt("pub/rootfile")), "r");
    EXPECT_EQ(lstat_of(mnt("pub/rootfile")).st_mode & 07777, 0644u);
}

// ---------------------------------------------------------------- open unlinked, reuse

TEST_F(Semantics, NlinkOfOpenUnlinkedFileIsZero)
{
    write_file(lower(1, "low"), "low");
    write_file(lower(1, "low2"), "low2");
    mount();
    write_file(mnt("n"), "data");

    Fd a(::open(mnt("n").c_str(), O_RDWR));
    Fd b(::open(mnt("low").c_str(), O_RDONLY));
    Fd c(::open(mnt("low2").c_str(), O_RDWR));
    ASSERT_GE(a.get(), 0);
    ASSERT_GE(b.get(), 0);
    ASSERT_GE(c.get(), 0);
    ASSERT_EQ(::unlink(mnt("n").c_str()), 0);
    ASSERT_EQ(::unlink(mnt("low").c_str()), 0);
    ASSERT_EQ(::unlink(mnt("low2").c_str()), 0);
    struct stat st;
    ASSERT_EQ(::fstat(a.get(), &st), 0);
    EXPECT_EQ(st.st_nlink, 0u) << "upper file";
    EXPECT_EQ(st.st_size, 4);
    ASSERT_EQ(::fstat(b.get(), &st), 0);
    EXPECT_EQ(st.st_nlink, 0u) << "lower file opened read-only";
    ASSERT_EQ(::fstat(c.get(), &st), 0);
    EXPECT_EQ(st.st_nlink, 0u) << "copied-up lower file";
    EXPECT_EQ(pread_str(a.get(), 10, 0), "data");
    EXPECT_EQ(pread_str(b.get(), 10, 0), "low");
    EXPECT_EQ(::pwrite(c.get(), "L", 1, 0), 1);
    EXPECT_EQ(pread_str(c.get(), 10, 0), "Low2");
    EXPECT_EQ(entries(mnt()), std::set<std::string>{});

    write_file(mnt("h1"), "h");
    ASSERT_EQ(::link(mnt("h1").c_str(), mnt("h2").c_str()), 0);
    Fd h(::open(mnt("h1").c_str(), O_RDONLY));
    ASSERT_EQ(::unlink(mnt("h1").c_str()), 0);
    ASSERT_EQ(::fstat(h.get(), &st), 0);
    EXPECT_EQ(st.st_nlink, 1u);
    EXPECT_EQ(lstat_of(mnt("h2")).st_nlink, 1u);
}

TEST_F(Semantics, NameReusedAsDifferentTypes)
{
    write_file(lower(1, "y"), "lower-y");
    mount();
    Fd root(::open(mnt().c_str(), O_DIRECTORY | O_RDONLY));
    ASSERT_GE(root.get(), 0);
    ASSERT_EQ(::unlink(mnt("y").c_str()), 0);

    for (int i = 0; i < 48; ++i) {
        const std::string name = (i % 2) ? "x" : "y";
        const std::string p = mnt(name);
        const int type = (i / 2) % 4;
        SCOPED_TRACE("iteration " + std::to_string(i) + " type " + std::to_string(type));
        const std::string tag = "v" + std::to_string(i);
        mode_t want = 0;
        switch (type) {
        case 0:
            write_file(p, tag);
            want = S_IFREG;
            break;
        case 1:
            ASSERT_EQ(::mkdir(p.c_str(), 0755), 0) << errname(errno);
            write_file(p + "/in" + tag, tag);
            want = S_IFDIR;
            break;
        case 2:
            ASSERT_EQ(::symlink(tag.c_str(), p.c_str()), 0) << errname(errno);
            want = S_IFLNK;
            break;
        case 3:
            ASSERT_EQ(::mkfifo(p.c_str(), 0644), 0) << errname(errno);
            want = S_IFIFO;
            break;
        }
        ASSERT_EQ(::lchown(p.c_str(), 1000 + i, 2000 + i), 0) << errname(errno);

        struct stat st;
        ASSERT_EQ(::fstatat(root.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW), 0) << errname(errno);
        EXPECT_EQ(st.st_mode & S_IFMT, want);
        EXPECT_EQ(st.st_uid, static_cast<uid_t>(1000 + i));
        EXPECT_EQ(st.st_gid, static_cast<gid_t>(2000 + i));
        st = lstat_of(p);
        EXPECT_EQ(st.st_mode & S_IFMT, want);
        unsigned char dtype = DT_UNKNOWN;
        DIR* d = ::opendir(mnt().c_str());
        while (struct dirent* e = ::readdir(d))
            if (name == e->d_name)
                dtype = e->d_type;
        ::closedir(d);
        EXPECT_EQ(DTTOIF(dtype), want) << "readdir d_type";

        switch (type) {
        case 0:
            EXPECT_EQ(read_file(p), tag);
            ASSERT_EQ(::unlink(p.c_str()), 0);
            break;
        case 1:
            EXPECT_EQ(entries(p), std::set<std::string>{"in" + tag});
            ASSERT_EQ(::unlink((p + "/in" + tag).c_str()), 0);
            ASSERT_EQ(::rmdir(p.c_str()), 0) << errname(errno);
            break;
        case 2: {
            char buf[32] = {};
            EXPECT_EQ(::readlink(p.c_str(), buf, sizeof buf - 1), static_cast<ssize_t>(tag.size()));
            EXPECT_EQ(std::string(buf), tag);
            ASSERT_EQ(::unlink(p.c_str()), 0);
            break;
        }
        case 3:
            ASSERT_EQ(::unlink(p.c_str()), 0);
            break;
        }
        EXPECT_ERRNO(::fstatat(root.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW), ENOENT);
    }
    EXPECT_EQ(entries(mnt()), std::set<std::string>{});
    ::close(root.fd);
    root.fd = -1;
    remount();
    EXPECT_EQ(entries(mnt()), std::set<std::string>{});
}

} // namespace
