// SPDX-License-Identifier: LGPL-2.1-or-later
// A private system-type dbus-daemon whose policy is the project's own
// dbus/org.layerd1.conf, and the built layerd on it with one stack, all in
// a fresh temp dir. Torn down even after a failed test: layerd killed, the
// mount lazily detached and its FUSE connection aborted if it is stuck,
// the bus killed.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace layerd::test {

// Runs CMD with /bin/sh; its stdout, and its exit status in *STATUS.
std::string run_shell(const std::string& cmd, int* status = nullptr);
std::string read_all(int fd);
void write_text(const std::string& path, const std::string& text);
std::string read_text(const std::string& path);
bool is_mounted(const std::string& path);
// 0 when this machine can run layerd on a private bus: root, /dev/fuse and
// every one of TOOLS on the PATH. Otherwise prints "SKIP: WHAT ..." with the
// reason and returns 77, the exit code meson reads as skipped.
int skip_unless_daemon_runs(const char* what, const std::vector<std::string>& tools);

class BusEnv {
public:
    // START_BUS false: the bus comes later, with start_bus().
    explicit BusEnv(bool start_bus = true);
    BusEnv(const BusEnv&) = delete;
    BusEnv& operator=(const BusEnv&) = delete;
    ~BusEnv();

    // Writes stacks.d/demo.yaml (lower/, mnt/, boot) with these lists and
    // EXTRA yaml lines.
    void write_stack(const std::vector<std::string>& allow_users = {}, const std::string& extra = "");
    // Starts layerd; with WAIT, waits until it owns org.layerd1.
    void start_layerd(bool wait = true);
    // An environment variable for the next start_layerd().
    void set_layerd_env(const std::string& name, const std::string& value) { env_.emplace_back(name, value); }
    // Waits until layerd owns org.layerd1.
    void wait_for_name();
    void start_bus();
    pid_t layerd_pid() const { return layerd_pid_; }
    // What layerd sent to $NOTIFY_SOCKET so far, datagrams joined by '\n'.
    std::string notifications();
    // SIGTERM and the exit status (as from waitpid), or -1 on a timeout.
    int stop_layerd();

    const std::string& address() const { return address_; }
    std::string path(const std::string& rel) const { return root_ + "/" + rel; }
    std::string mnt(const std::string& rel = "") const { return root_ + "/mnt" + (rel.empty() ? "" : "/" + rel); }
    std::string layerd_log() const;
    // busctl --address=ADDRESS ARGS; stdout, exit status in *STATUS.
    std::string busctl(const std::string& args, int* status = nullptr) const;

private:
    void teardown_mount();

    std::string root_;
    std::string address_;
    pid_t bus_pid_ = -1;
    pid_t layerd_pid_ = -1;
    int notify_fd_ = -1;
    std::vector<std::pair<std::string, std::string>> env_;
};

} // namespace layerd::test
