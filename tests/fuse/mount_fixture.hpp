// SPDX-License-Identifier: LGPL-2.1-or-later
// A real layerd-fs mount over layers in a fresh temp dir, for one test.
#pragma once

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <chrono>
#include <functional>
#include <set>
#include <string>
#include <vector>

namespace layerd::test {

// Runs a shell command, returns its exit status (or -1); output goes to the test log.
int sh(const std::string& cmd);
// Runs a shell command and returns what it printed on stdout.
std::string sh_out(const std::string& cmd);

void write_file(const std::string& path, const std::string& data, mode_t mode = 0644);
std::string read_file(const std::string& path);
bool exists(const std::string& path); // lstat succeeds
struct stat lstat_of(const std::string& path);

// One line of /proc/self/mountinfo.
struct MountEntry {
    unsigned major = 0, minor = 0; // the device; a FUSE mount's minor is its connection number
    std::string mountpoint, fstype;
};
// The mount table in its order: a mount stacked on another comes later.
std::vector<MountEntry> mount_table();
// The device minor (for FUSE: the connection number) of the topmost mount
// at MOUNTPOINT, whatever its type, or -1 if none.
int mounted_connection(const std::string& mountpoint);

// Runs FN in a forked child, as UID/GID when given (supplementary groups
// dropped). Returns "" or what the child complained about. A child that
// hangs (a deadlocked daemon) is killed after 30 s so the suite ends; one
// that does not die of it either is left unreaped after 5 s more, with its
// kernel stacks in the complaint.
std::string in_child(const std::function<std::string()>& fn, int uid = -1, int gid = -1);

// ------------------------------------ killing a process that serves or uses FUSE
//
// A process that is its own FUSE server (a MountedStack in a forked child) or
// a client of one may not die of SIGKILL: a thread waiting on a request its
// dead server thread had already read sleeps uninterruptibly until someone
// aborts that connection. The parent must therefore know every connection
// the child could wait on, also those it detached or replaced at its
// mountpoint, and must never wait for it unbounded.

// Mounts fusectl on /sys/fs/fuse/connections when nothing is there, so that
// aborting a dead connection works: with it missing, a SIGKILLed FUSE
// server's waiting threads never die. "" or why not.
std::string ensure_fusectl();

// In a child, right after it mounted at MOUNTPOINT: appends "+N" to the file
// LOG, N the FUSE connection (device minor) of the mount there now. Returns N,
// or -1 when nothing is mounted there. One write(2) per line, O_APPEND.
int log_connection(const std::string& log, const std::string& mountpoint);
// In a child, once connection N can no longer hold it (its mount was
// unmounted and the server loop ended): appends "-N". Ignores N < 0.
void log_connection_gone(const std::string& log, int connection);
// In the parent: the connections LOG has as mounted and not gone since.
std::set<unsigned> logged_connections(const std::string& log);

struct ReapOptions {
    // Connections the process may wait on (logged_connections()). A number
    // that is mounted now somewhere other than MOUNTPOINTS has been reused by
    // another mount and is left alone.
    std::set<unsigned> connections;
    // And those the file logs (log_connection()), read after the kill, so
    // a mount made just before it counts too.
    std::string connection_log;
    // Where its mounts are: every FUSE connection mounted there is aborted
    // too, and those mounts are detached (umount -l).
    std::vector<std::string> mountpoints;
    // SIGKILL alone gets this long before anything is aborted.
    std::chrono::milliseconds grace{300};
    // Giving up: the process is left unreaped and Reaped::stacks says why.
    std::chrono::milliseconds limit{20000};
};

struct Reaped {
    bool reaped = false;
    int status = 0;                // the wait status, when reaped
    std::vector<unsigned> aborted; // aborted for it to die; empty: SIGKILL was enough
    std::string waits;             // what its threads waited in when the grace ran out
    std::string stacks;            // not reaped: its threads' kernel stacks and wchan
    std::string problems;          // aborts or detaches that failed
    double seconds = 0;            // from the SIGKILL to the reap (or to giving up)
};

// SIGKILLs PID (a child of this process) and reaps it without ever blocking
// longer than options.limit: after the grace it aborts the connections of
// OPTIONS, detaches the mounts at its mountpoints, and keeps polling
// (aborting again every second) until the child is gone or the limit is hit.
Reaped kill_and_reap(pid_t pid, const ReapOptions& options);
// Every thread of PID: name, state, wchan and kernel stack (/proc/PID/task/*).
std::string kernel_stacks(pid_t pid);

// The layerd-fs binary under test: $LAYERD_FS, set by meson.
std::string layerd_fs_binary();

// A layerd-fs process serving one mountpoint. Unmounts in its destructor, even
// after a failed test: umount, then abort the FUSE connection and umount -l
// if the daemon does not exit, so a stuck mount never hangs the suite.
class FsProcess {
public:
    FsProcess() = default;
    FsProcess(const FsProcess&) = delete;
    FsProcess& operator=(const FsProcess&) = delete;
    ~FsProcess() { stop(); }

    // Starts `layerd-fs -f -o OPTIONS MOUNTPOINT` and waits until the mount is
    // live. Returns false (with the daemon's stderr in *error) if it exited.
    bool start(const std::string& options, const std::string& mountpoint, std::string* error = nullptr);
    // Clean unmount; returns the daemon's exit status.
    int stop();
    // SIGKILL the daemon (kill_and_reap: bounded) and tear the dead mount down.
    void kill_hard();
    pid_t pid() const { return pid_; }
    // The FUSE connection number (the mount's device minor).
    unsigned connection() const { return connection_; }

private:
    void teardown_mount();
    pid_t pid_ = -1;
    std::string mountpoint_;
    std::string stderr_path_;
    unsigned connection_ = 0;
};

// Fixture: TMP/{lower0,lower1,upper,work,mnt}; lower0 is the top lower.
class OverlayTest : public ::testing::Test {
protected:
    void SetUp() override;
    void TearDown() override;

    // Mounts lower0:lower1 (+ upper/work unless read_only) at mnt.
    void mount(const std::string& extra_options = "", bool read_only = false);
    void unmount();
    // Unmount and mount again with the same layers.
    void remount(const std::string& extra_options = "");
    std::string options(bool read_only) const;

    std::string lower(int i, const std::string& rel = "") const;
    std::string upper(const std::string& rel = "") const;
    std::string work(const std::string& rel = "") const;
    std::string mnt(const std::string& rel = "") const;

    std::string root_;
    int lowers_ = 2;
    FsProcess fs_;
    bool read_only_ = false;
    std::string extra_;
};

} // namespace layerd::test
