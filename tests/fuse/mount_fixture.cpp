// SPDX-License-Identifier: LGPL-2.1-or-later
#include "mount_fixture.hpp"

#include <fcntl.h>
#include <functional>
#include <poll.h>
#include <grp.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

extern char** environ;

namespace layerd::test {

int sh(const std::string& cmd)
{
    int status = std::system(cmd.c_str());
    if (status == -1 || !WIFEXITED(status))
        return -1;
    return WEXITSTATUS(status);
}

std::string sh_out(const std::string& cmd)
{
    std::string out;
    FILE* p = popen(cmd.c_str(), "r");
    if (!p)
        return out;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0)
        out.append(buf, n);
    pclose(p);
    return out;
}

void write_file(const std::string& path, const std::string& data, mode_t mode)
{
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    ASSERT_GE(fd, 0) << path << ": " << strerror(errno);
    ASSERT_EQ(::write(fd, data.data(), data.size()), static_cast<ssize_t>(data.size())) << path;
    ::close(fd);
}

std::string read_file(const std::string& path)
{
    std::ifstream in(path, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

bool exists(const std::string& path)
{
    struct stat st;
    return ::lstat(path.c_str(), &st) == 0;
}

struct stat lstat_of(const std::string& path)
{
    struct stat st {};
    EXPECT_EQ(::lstat(path.c_str(), &st), 0) << path << ": " << strerror(errno);
    return st;
}

// Runs FN in a forked child, as UID/GID when given (supplementary groups
// dropped). Returns "" or what the child complained about. A child that
// hangs (a deadlocked daemon) is killed after 30 s so the suite ends.
std::string in_child(const std::function<std::string()>& fn, int uid, int gid)
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

std::string layerd_fs_binary()
{
    const char* env = std::getenv("LAYERD_FS");
    return env ? env : "layerd-fs";
}

// Finds MOUNTPOINT in /proc/self/mountinfo as a layerd-fs mount; returns its
// device minor (the FUSE connection number) or -1.
static int find_mount(const std::string& mountpoint)
{
    std::ifstream in("/proc/self/mountinfo");
    std::string line;
    int found = -1;
    while (std::getline(in, line)) {
        std::istringstream ls(line);
        std::string id, parent, devno, root, mp;
        ls >> id >> parent >> devno >> root >> mp;
        if (mp != mountpoint)
            continue;
        auto sep = line.find(" - ");
        if (sep == std::string::npos)
            continue;
        std::istringstream rest(line.substr(sep + 3));
        std::string fstype;
        rest >> fstype;
        if (fstype != "fuse.layerd-fs")
            continue;
        found = std::stoi(devno.substr(devno.find(':') + 1)); // the topmost wins
    }
    return found;
}

bool FsProcess::start(const std::string& options, const std::string& mountpoint, std::string* error)
{
    mountpoint_ = mountpoint;
    stderr_path_ = mountpoint + ".stderr";
    std::string bin = layerd_fs_binary();
    std::vector<std::string> args{bin, "-f", "-o", options, mountpoint};
    std::vector<char*> argv;
    for (auto& a : args)
        argv.push_back(a.data());
    argv.push_back(nullptr);

    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 2, stderr_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    int r = posix_spawnp(&pid_, bin.c_str(), &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (r != 0) {
        pid_ = -1;
        if (error)
            *error = "spawn " + bin + ": " + strerror(r);
        return false;
    }
    for (int i = 0; i < 1000; ++i) {
        int minor = find_mount(mountpoint_);
        if (minor >= 0) {
            connection_ = static_cast<unsigned>(minor);
            return true;
        }
        int status;
        if (waitpid(pid_, &status, WNOHANG) == pid_) {
            pid_ = -1;
            if (error)
                *error = read_file(stderr_path_);
            return false;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (error)
        *error = "mount did not appear within 10 s: " + read_file(stderr_path_);
    kill_hard();
    return false;
}

void FsProcess::teardown_mount()
{
    if (connection_ != 0 && find_mount(mountpoint_) >= 0) {
        std::ofstream abort("/sys/fs/fuse/connections/" + std::to_string(connection_) + "/abort");
        abort << "1";
    }
    while (find_mount(mountpoint_) >= 0)
        if (::umount2(mountpoint_.c_str(), MNT_DETACH) != 0)
            break;
}

int FsProcess::stop()
{
    if (pid_ < 0)
        return -1;
    // A plain umount makes the daemon's loop end; it must then exit on its own.
    ::umount2(mountpoint_.c_str(), 0);
    int status = 0;
    for (int i = 0; i < 1000; ++i) {
        if (waitpid(pid_, &status, WNOHANG) == pid_) {
            pid_ = -1;
            teardown_mount();
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ADD_FAILURE() << "layerd-fs did not exit after umount of " << mountpoint_;
    kill_hard();
    return -1;
}

void FsProcess::kill_hard()
{
    if (pid_ > 0) {
        ::kill(pid_, SIGKILL);
        waitpid(pid_, nullptr, 0);
        pid_ = -1;
    }
    teardown_mount();
}

void OverlayTest::SetUp()
{
    char tmpl[] = "/tmp/layerd-test.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    for (int i = 0; i < lowers_; ++i)
        ASSERT_EQ(::mkdir(lower(i).c_str(), 0755), 0);
    ASSERT_EQ(::mkdir(upper().c_str(), 0755), 0);
    ASSERT_EQ(::mkdir(work().c_str(), 0755), 0);
    ASSERT_EQ(::mkdir(mnt().c_str(), 0755), 0);
}

void OverlayTest::TearDown()
{
    fs_.kill_hard();
    if (!root_.empty() && !::testing::Test::HasFailure())
        sh("rm -rf '" + root_ + "'");
    else if (!root_.empty())
        std::fprintf(stderr, "layers kept for inspection in %s\n", root_.c_str());
}

std::string OverlayTest::options(bool read_only) const
{
    std::string o = "lowerdir=";
    for (int i = 0; i < lowers_; ++i)
        o += (i ? ":" : "") + lower(i);
    if (!read_only)
        o += ",upperdir=" + upper() + ",workdir=" + work();
    return o;
}

void OverlayTest::mount(const std::string& extra_options, bool read_only)
{
    read_only_ = read_only;
    extra_ = extra_options;
    std::string o = options(read_only);
    if (!extra_options.empty())
        o += "," + extra_options;
    std::string error;
    ASSERT_TRUE(fs_.start(o, mnt(), &error)) << "layerd-fs -o " << o << ": " << error;
}

void OverlayTest::unmount()
{
    EXPECT_EQ(fs_.stop(), 0) << "layerd-fs exit status";
}

void OverlayTest::remount(const std::string& extra_options)
{
    unmount();
    mount(extra_options.empty() ? extra_ : extra_options, read_only_);
}

static std::string join(const std::string& base, const std::string& rel)
{
    return rel.empty() ? base : base + "/" + rel;
}

std::string OverlayTest::lower(int i, const std::string& rel) const { return join(root_ + "/lower" + std::to_string(i), rel); }
std::string OverlayTest::upper(const std::string& rel) const { return join(root_ + "/upper", rel); }
std::string OverlayTest::work(const std::string& rel) const { return join(root_ + "/work", rel); }
std::string OverlayTest::mnt(const std::string& rel) const { return join(root_ + "/mnt", rel); }

} // namespace layerd::test
