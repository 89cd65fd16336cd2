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
        if (r_ == -1L)                                                                     \
            EXPECT_EQ(errname(e_), errname(err)) << #expr;                                 \
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

// Runs FN in a forked child, as UID/GID when given (supplementary groups
// dropped). Returns "" or what the child complained about. A child that
// hangs (a deadlocked daemon) is killed after 30 s so the suite ends.
std::string in_child(const std::function<std::string()>& fn, int uid = -1, int gid = -1)
{
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0)
        return "pipe2 failed";
    std::fflush(nullptr);
    pid_t pid = ::fork();
    if (pid < 0)
        return "fork failed";
    if (pid == 0) {
        ::close(p[0]);
        std::string msg;
        if (gid >= 0 && (::setgroups(0, nullptr) != 0 || ::setresgid(gid, gid, gid) != 0))
            msg = "setresgid failed";
        else if (uid >= 0 && ::setresuid(uid, uid, uid) != 0)
            msg = "setresuid failed";
        else
            msg = fn();
        size_t off = 0;
        while (off < msg.size()) {
            ssize_t n = ::write(p[1], msg.data() + off, msg.size() - off);
            if (n <= 0)
                break;
            off += static_cast<size_t>(n);
        }
        ::_exit(0);
    }
    ::close(p[1]);
    std::string out;
    char buf[1024];
    for (;;) {
        struct pollfd pfd {p[0], POLLIN, 0};
        int r = ::poll(&pfd, 1, 30000);
        if (r == 0) {
            ::kill(pid, SIGKILL);
            out += " [child hung for 30 s and was killed]";
            break;
        }
        ssize_t n = ::read(p[0], buf, sizeof buf);
        if (n <= 0)
            break;
        out.append(buf, static_cast<size_t>(n));
    }
    ::close(p[0]);
    int st = 0;
    ::waitpid(pid, &st, 0);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        out += " [child ended with wait status " + std::to_string(st) + "]";
    return out;
}

class Semantics : public OverlayTest {};

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
    for (const char* n : {"a", "b", "c", "z"})
        write_file(lower(2, std::string("d/") + n).c_str(), "2"), (void)0;
    // write_file does not create dirs: make them first.
    SUCCEED();
}

} // namespace
