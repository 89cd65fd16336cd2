// SPDX-License-Identifier: LGPL-2.1-or-later
#include "mount_fixture.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <functional>
#include <poll.h>
#include <grp.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
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
    bool hung = false;
    for (;;) {
        struct pollfd pfd {p[0], POLLIN, 0};
        int r = ::poll(&pfd, 1, 30000);
        if (r == 0) {
            hung = true;
            break;
        }
        ssize_t n = ::read(p[0], buf, sizeof buf);
        if (n <= 0)
            break;
        out.append(buf, static_cast<size_t>(n));
    }
    ::close(p[0]);
    int st = 0;
    if (hung) {
        // Waiting on a deadlocked daemon it may not die of SIGKILL (until
        // the test's teardown kills the daemon): never wait for it unbounded.
        ReapOptions options;
        options.limit = std::chrono::seconds(5);
        Reaped k = kill_and_reap(pid, options);
        out += " [child hung for 30 s and was killed]";
        if (!k.reaped)
            return out + " [it did not die within 5 s of SIGKILL and was left unreaped; its threads:" + k.stacks + "]";
        st = k.status;
    } else {
        ::waitpid(pid, &st, 0);
    }
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        out += " [child ended with wait status " + std::to_string(st) + "]";
    return out;
}

std::vector<MountEntry> mount_table()
{
    std::vector<MountEntry> out;
    std::ifstream in("/proc/self/mountinfo");
    std::string line;
    while (std::getline(in, line)) {
        std::istringstream ls(line);
        std::string id, parent, devno, root;
        MountEntry e;
        ls >> id >> parent >> devno >> root >> e.mountpoint;
        auto colon = devno.find(':');
        auto sep = line.find(" - ");
        if (colon == std::string::npos || sep == std::string::npos)
            continue;
        e.major = static_cast<unsigned>(std::strtoul(devno.c_str(), nullptr, 10));
        e.minor = static_cast<unsigned>(std::strtoul(devno.c_str() + colon + 1, nullptr, 10));
        std::istringstream(line.substr(sep + 3)) >> e.fstype;
        out.push_back(e);
    }
    return out;
}

int mounted_connection(const std::string& mountpoint)
{
    int found = -1;
    for (const MountEntry& e : mount_table())
        if (e.mountpoint == mountpoint)
            found = static_cast<int>(e.minor); // the topmost wins
    return found;
}

// ------------------------------------ killing a process that serves or uses FUSE

namespace {

bool is_fuse(const MountEntry& e)
{
    return e.fstype == "fuse" || e.fstype.starts_with("fuse.");
}

// One whole line with one write(2), so a SIGKILL never leaves half of it.
void append_line(const std::string& path, const std::string& line)
{
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0)
        return;
    std::string l = line + "\n";
    [[maybe_unused]] ssize_t n = ::write(fd, l.data(), l.size());
    ::close(fd);
}

// Aborts what the options name (see ReapOptions) and detaches the FUSE mounts
// at its mountpoints; returns the connections aborted, failures in *PROBLEMS.
std::vector<unsigned> abort_connections(const ReapOptions& o, std::string* problems)
{
    std::vector<MountEntry> table = mount_table();
    auto ours = [&](const std::string& mp) {
        return std::find(o.mountpoints.begin(), o.mountpoints.end(), mp) != o.mountpoints.end();
    };
    std::set<unsigned> targets;
    for (const MountEntry& e : table)
        if (ours(e.mountpoint) && is_fuse(e))
            targets.insert(e.minor);
    std::set<unsigned> candidates = o.connections;
    if (!o.connection_log.empty())
        candidates.merge(logged_connections(o.connection_log));
    for (unsigned n : candidates) {
        bool elsewhere = std::any_of(table.begin(), table.end(), [&](const MountEntry& e) {
            return e.major == 0 && e.minor == n && !ours(e.mountpoint);
        });
        if (!elsewhere)
            targets.insert(n);
    }
    std::vector<unsigned> aborted;
    for (unsigned n : targets) {
        std::string path = "/sys/fs/fuse/connections/" + std::to_string(n) + "/abort";
        int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
        if (fd < 0) {
            // Gone: the connection ended meanwhile (or was never one).
            if (errno != ENOENT)
                *problems += "\n  open " + path + ": " + strerror(errno);
            continue;
        }
        if (::write(fd, "1", 1) != 1)
            *problems += "\n  write " + path + ": " + strerror(errno);
        else
            aborted.push_back(n);
        ::close(fd);
    }
    for (const std::string& mp : o.mountpoints)
        for (int i = 0; i < 10; ++i) {
            std::vector<MountEntry> now = mount_table();
            bool fuse_there = std::any_of(now.begin(), now.end(),
                                          [&](const MountEntry& e) { return e.mountpoint == mp && is_fuse(e); });
            if (!fuse_there)
                break;
            if (::umount2(mp.c_str(), MNT_DETACH) != 0) {
                *problems += "\n  umount -l " + mp + ": " + strerror(errno);
                break;
            }
        }
    return aborted;
}

std::string read_small(const std::string& path)
{
    std::string s = read_file(path);
    while (!s.empty() && (s.back() == '\n' || s.back() == ' '))
        s.pop_back();
    return s;
}

// The distinct wchans of PID's threads, with counts: "request_wait_answer×2 do_exit".
std::string thread_waits(pid_t pid)
{
    std::map<std::string, int> waits;
    std::string dir = "/proc/" + std::to_string(pid) + "/task";
    if (DIR* d = ::opendir(dir.c_str())) {
        while (dirent* e = ::readdir(d))
            if (e->d_name[0] != '.') {
                std::string w = read_small(dir + "/" + e->d_name + "/wchan");
                ++waits[w.empty() || w == "0" ? "running" : w];
            }
        ::closedir(d);
    }
    std::string out;
    for (const auto& [w, n] : waits)
        out += (out.empty() ? "" : " ") + w + (n > 1 ? "×" + std::to_string(n) : "");
    return out;
}

} // namespace

std::string ensure_fusectl()
{
    const char* dir = "/sys/fs/fuse/connections";
    for (const MountEntry& e : mount_table())
        if (e.mountpoint == dir && e.fstype == "fusectl")
            return "";
    if (::mount("fusectl", dir, "fusectl", 0, nullptr) != 0 && errno != EBUSY)
        return std::string("mounting fusectl on ") + dir + ": " + strerror(errno) +
               " (a dead FUSE connection cannot be aborted; a SIGKILLed server may then never die)";
    return "";
}

int log_connection(const std::string& log, const std::string& mountpoint)
{
    int found = mounted_connection(mountpoint);
    if (found >= 0)
        append_line(log, "+" + std::to_string(found));
    return found;
}

void log_connection_gone(const std::string& log, int connection)
{
    if (connection >= 0)
        append_line(log, "-" + std::to_string(connection));
}

std::set<unsigned> logged_connections(const std::string& log)
{
    std::set<unsigned> live;
    std::istringstream in(read_file(log));
    std::string line;
    while (std::getline(in, line)) {
        if (line.size() < 2 || (line[0] != '+' && line[0] != '-'))
            continue;
        auto n = static_cast<unsigned>(std::strtoul(line.c_str() + 1, nullptr, 10));
        if (line[0] == '+')
            live.insert(n);
        else
            live.erase(n);
    }
    return live;
}

std::string kernel_stacks(pid_t pid)
{
    std::string out;
    std::string dir = "/proc/" + std::to_string(pid) + "/task";
    std::vector<std::string> tids;
    if (DIR* d = ::opendir(dir.c_str())) {
        while (dirent* e = ::readdir(d))
            if (e->d_name[0] != '.')
                tids.emplace_back(e->d_name);
        ::closedir(d);
    }
    if (tids.empty())
        return "\n  (no " + dir + ": " + strerror(errno) + ")";
    std::sort(tids.begin(), tids.end());
    for (const std::string& tid : tids) {
        std::string t = dir;
        t += "/";
        t += tid;
        std::string state;
        std::istringstream status(read_file(t + "/status"));
        for (std::string l; std::getline(status, l);)
            if (l.starts_with("State:"))
                state = l.substr(6);
        out += "\n  thread ";
        out += tid;
        out += " (" + read_small(t + "/comm") + ")";
        out += state;
        out += ", wchan " + read_small(t + "/wchan") + ":";
        std::istringstream stack(read_file(t + "/stack"));
        for (std::string l; std::getline(stack, l);)
            out += "\n    " + l;
    }
    return out;
}

Reaped kill_and_reap(pid_t pid, const ReapOptions& options)
{
    using Clock = std::chrono::steady_clock;
    Reaped r;
    auto start = Clock::now();
    ::kill(pid, SIGKILL);
    auto next_abort = start + options.grace;
    for (;;) {
        pid_t w = ::waitpid(pid, &r.status, WNOHANG);
        auto now = Clock::now();
        r.seconds = std::chrono::duration<double>(now - start).count();
        if (w == pid || (w < 0 && errno != EINTR)) {
            r.reaped = w == pid;
            if (w < 0)
                r.problems += "\n  waitpid " + std::to_string(pid) + ": " + strerror(errno);
            return r;
        }
        if (now >= start + options.limit) {
            r.stacks = kernel_stacks(pid);
            return r;
        }
        if (now >= next_abort) {
            if (r.waits.empty()) {
                r.waits = thread_waits(pid);
                if (std::string err = ensure_fusectl(); !err.empty())
                    r.problems += "\n  " + err;
            }
            for (unsigned n : abort_connections(options, &r.problems))
                if (std::find(r.aborted.begin(), r.aborted.end(), n) == r.aborted.end())
                    r.aborted.push_back(n);
            next_abort = now + std::chrono::seconds(1);
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
}

std::string layerd_fs_binary()
{
    const char* env = std::getenv("LAYERD_FS");
    return env ? env : "layerd-fs";
}

// The device minor (the FUSE connection number) of the layerd-fs mount at
// MOUNTPOINT (the topmost), or -1.
static int find_mount(const std::string& mountpoint)
{
    int found = -1;
    for (const MountEntry& e : mount_table())
        if (e.mountpoint == mountpoint && e.fstype == "fuse.layerd-fs")
            found = static_cast<int>(e.minor);
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
        ReapOptions options;
        if (connection_ != 0)
            options.connections = {connection_};
        options.mountpoints = {mountpoint_};
        Reaped r = kill_and_reap(pid_, options);
        if (!r.reaped)
            ADD_FAILURE() << "layerd-fs (pid " << pid_ << ") did not die within " << r.seconds
                          << " s of SIGKILL and was left unreaped; its threads:" << r.stacks << r.problems;
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
