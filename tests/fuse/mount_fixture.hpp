// SPDX-License-Identifier: LGPL-2.1-or-later
// A real layerd-fs mount over layers in a fresh temp dir, for one test.
#pragma once

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <functional>
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

// Runs FN in a forked child, as UID/GID when given (supplementary groups
// dropped). Returns "" or what the child complained about. A child that
// hangs (a deadlocked daemon) is killed after 30 s so the suite ends.
std::string in_child(const std::function<std::string()>& fn, int uid = -1, int gid = -1);

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
    // SIGKILL the daemon and tear the dead mount down.
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
