// SPDX-License-Identifier: LGPL-2.1-or-later
#include "bus_env.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include <gtest/gtest.h>
#include <sdbus-c++/sdbus-c++.h>

namespace layerd::test {

namespace {

std::string quote(const std::string& s)
{
    std::string out = "'";
    for (char c : s)
        out += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return out + "'";
}

std::string env_or_fail(const char* name)
{
    const char* v = std::getenv(name);
    if (!v || !*v)
        throw std::runtime_error(std::string("$") + name + " is not set (run through meson test)");
    return v;
}

// Waits for PID up to SECONDS; its status, or -1.
int wait_for(pid_t pid, int seconds)
{
    for (int i = 0; i < seconds * 100; ++i) {
        int status = 0;
        pid_t r = ::waitpid(pid, &status, WNOHANG);
        if (r == pid)
            return status;
        if (r < 0)
            return -1;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return -1;
}

} // namespace

std::string read_all(int fd)
{
    std::string out;
    char buf[65536];
    for (;;) {
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return out;
        out.append(buf, static_cast<size_t>(n));
    }
}

std::string run_shell(const std::string& cmd, int* status)
{
    std::FILE* p = ::popen(cmd.c_str(), "r");
    if (!p)
        throw std::runtime_error("popen " + cmd);
    std::string out = read_all(::fileno(p));
    int st = ::pclose(p);
    if (status)
        *status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return out;
}

void write_text(const std::string& path, const std::string& text)
{
    std::ofstream out(path, std::ios::trunc);
    out << text;
    if (!out.flush())
        throw std::runtime_error("cannot write " + path);
}

int skip_unless_daemon_runs(const char* what, const std::vector<std::string>& tools)
{
    if (::geteuid() != 0) {
        std::fprintf(stderr, "SKIP: %s run layerd, which mounts FUSE stacks: need root\n", what);
        return 77;
    }
    if (::access("/dev/fuse", R_OK | W_OK) != 0) {
        std::fprintf(stderr, "SKIP: /dev/fuse is not usable here\n");
        return 77;
    }
    for (const std::string& tool : tools) {
        if (run_shell("command -v " + tool + " >/dev/null; echo $?") != "0\n") {
            std::fprintf(stderr, "SKIP: %s is not installed\n", tool.c_str());
            return 77;
        }
    }
    return 0;
}

std::string read_text(const std::string& path)
{
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

// The device of the mount at PATH, as "MAJOR:MINOR", or "".
static std::string mount_device(const std::string& path)
{
    std::ifstream in("/proc/self/mountinfo");
    std::string line, found;
    while (std::getline(in, line)) {
        std::istringstream ls(line);
        std::string id, parent, dev, root, mp;
        ls >> id >> parent >> dev >> root >> mp;
        if (mp == path)
            found = dev;
    }
    return found;
}

bool is_mounted(const std::string& path)
{
    return !mount_device(path).empty();
}

BusEnv::BusEnv(bool start)
{
    char tmpl[] = "/tmp/layerd-dbus-XXXXXX";
    if (!::mkdtemp(tmpl))
        throw std::runtime_error("mkdtemp failed");
    root_ = tmpl;
    // The nobody caller must reach the bus socket and read the mount.
    ::chmod(root_.c_str(), 0755);
    for (const char* d : {"cfg", "cfg/stacks.d", "state", "lower", "lower/dir", "mnt"})
        ::mkdir(path(d).c_str(), 0755);
    write_text(path("lower/a.txt"), "lower a\n");
    write_text(path("lower/dir/b.txt"), "lower b\n");
    // Where layerd's sd_notify goes.
    notify_fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::string np = path("notify.sock");
    std::strncpy(sa.sun_path, np.c_str(), sizeof sa.sun_path - 1);
    if (notify_fd_ < 0 || ::bind(notify_fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0)
        throw std::runtime_error("cannot bind the notify socket");
    // The address is known before the bus runs: layerd may start first.
    address_ = "unix:path=" + path("bus.sock");
    if (start)
        start_bus();
}

std::string BusEnv::notifications()
{
    std::string out;
    char buf[4096];
    for (;;) {
        ssize_t n = ::recv(notify_fd_, buf, sizeof buf, 0);
        if (n <= 0)
            return out;
        out.append(buf, static_cast<size_t>(n));
        out += '\n';
    }
}

void BusEnv::start_bus()
{
    // A system-type bus: default deny, as the real system bus, with the
    // project's policy file included from the source tree.
    std::string conf = R"(<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=)" + path("bus.sock") + R"(</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
  </policy>
  <includedir>)" + std::string(LAYERD_DBUS_DIR) + R"(</includedir>
</busconfig>
)";
    write_text(path("bus.conf"), conf);
    std::string out = run_shell("dbus-daemon --config-file=" + quote(path("bus.conf")) +
                                " --fork --print-address=1 --print-pid=1 </dev/null");
    std::istringstream in(out);
    std::string address, pid;
    std::getline(in, address);
    std::getline(in, pid);
    if (address.empty() || pid.empty())
        throw std::runtime_error("dbus-daemon did not start: " + out);
    bus_pid_ = std::stoi(pid);
}

void BusEnv::write_stack(const std::vector<std::string>& allow_users, const std::string& extra)
{
    std::string yaml = "mountpoint: " + mnt() + "\nlowers: [" + path("lower") + "]\nboot: true\n";
    if (!allow_users.empty()) {
        yaml += "allow_users: [";
        for (size_t i = 0; i < allow_users.size(); ++i)
            yaml += (i ? ", " : "") + allow_users[i];
        yaml += "]\n";
    }
    yaml += extra;
    write_text(path("cfg/stacks.d/demo.yaml"), yaml);
}

void BusEnv::start_layerd(bool wait)
{
    std::string binary = env_or_fail("LAYERD");
    pid_t pid = ::fork();
    if (pid < 0)
        throw std::runtime_error("fork failed");
    if (pid == 0) {
        int log = ::open(path("layerd.log").c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (log >= 0) {
            ::dup2(log, STDERR_FILENO);
            ::dup2(log, STDOUT_FILENO);
        }
        ::unsetenv("JOURNAL_STREAM");
        ::setenv("NOTIFY_SOCKET", path("notify.sock").c_str(), 1);
        for (const auto& [name, value] : env_)
            ::setenv(name.c_str(), value.c_str(), 1);
        std::string cfg = path("cfg"), state = path("state");
        ::execl(binary.c_str(), binary.c_str(), "--bus", address_.c_str(), "--config-dir", cfg.c_str(), "--state-dir",
                state.c_str(), static_cast<char*>(nullptr));
        ::_exit(127);
    }
    layerd_pid_ = pid;
    if (wait)
        wait_for_name();
}

void BusEnv::wait_for_name()
{
    pid_t pid = layerd_pid_;
    auto bus = sdbus::createSessionBusConnectionWithAddress(address_);
    for (int i = 0; i < 300; ++i) {
        bool has = false;
        sdbus::createProxy(*bus, "org.freedesktop.DBus", "/org/freedesktop/DBus")
            ->callMethod("NameHasOwner")
            .onInterface("org.freedesktop.DBus")
            .withArguments(std::string("org.layerd1"))
            .storeResultsTo(has);
        if (has)
            return;
        int status = 0;
        if (::waitpid(pid, &status, WNOHANG) == pid) {
            layerd_pid_ = -1;
            throw std::runtime_error("layerd exited at start:\n" + layerd_log());
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    throw std::runtime_error("layerd did not own org.layerd1 within 15 s:\n" + layerd_log());
}

int BusEnv::stop_layerd()
{
    if (layerd_pid_ < 0)
        return -1;
    ::kill(layerd_pid_, SIGTERM);
    int status = wait_for(layerd_pid_, 30);
    if (status == -1) {
        ::kill(layerd_pid_, SIGKILL);
        wait_for(layerd_pid_, 10);
    }
    layerd_pid_ = -1;
    return status;
}

std::string BusEnv::layerd_log() const
{
    return read_text(path("layerd.log"));
}

std::string BusEnv::busctl(const std::string& args, int* status) const
{
    return run_shell("busctl --address=" + quote(address_) + " " + args + " 2>&1", status);
}

// Mountpoints under PREFIX, with their devices.
static std::vector<std::pair<std::string, std::string>> mounts_under(const std::string& prefix)
{
    std::ifstream in("/proc/self/mountinfo");
    std::string line;
    std::vector<std::pair<std::string, std::string>> found;
    while (std::getline(in, line)) {
        std::istringstream ls(line);
        std::string id, parent, dev, root, mp;
        ls >> id >> parent >> dev >> root >> mp;
        if (mp.rfind(prefix, 0) == 0)
            found.emplace_back(mp, dev);
    }
    return found;
}

void BusEnv::teardown_mount()
{
    for (int i = 0; i < 8; ++i) {
        auto mounts = mounts_under(root_ + "/");
        if (mounts.empty())
            return;
        for (const auto& [mp, dev] : mounts) {
            if (::umount2(mp.c_str(), MNT_DETACH) == 0)
                continue;
            // A stuck FUSE server: abort its connection, then detach.
            auto colon = dev.find(':');
            if (colon != std::string::npos)
                write_text("/sys/fs/fuse/connections/" + dev.substr(colon + 1) + "/abort", "1");
        }
    }
}

BusEnv::~BusEnv()
{
    try {
        if (layerd_pid_ > 0 && stop_layerd() != 0 && ::testing::Test::HasFailure())
            std::fprintf(stderr, "layerd log:\n%s\n", layerd_log().c_str());
        teardown_mount();
        if (bus_pid_ > 0)
            ::kill(bus_pid_, SIGTERM);
        if (notify_fd_ >= 0)
            ::close(notify_fd_);
        if (mounts_under(root_ + "/").empty())
            run_shell("rm -rf " + quote(root_));
    } catch (const std::exception& e) {
        std::fprintf(stderr, "tearing down %s: %s\n", root_.c_str(), e.what());
    }
}

} // namespace layerd::test
