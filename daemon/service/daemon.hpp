// SPDX-License-Identifier: LGPL-2.1-or-later
// The layerd daemon (DESIGN §6, §8): reads the configuration, mounts the
// boot stacks, tells systemd it is ready, then serves the D-Bus API until
// SIGTERM, when it unmounts every stack and exits.
//
// Threads: one main thread runs the bus (all handlers, Reload, SIGHUP and
// SIGTERM, all creation and destruction of bus objects); each stack object
// has a worker thread for its long calls. stacks_ and objects_ belong to the
// main thread.
#pragma once

#include "config.hpp"
#include "managed_stack.hpp"
#include "manager_object.hpp"
#include "snapshot_store.hpp"
#include "stack_object.hpp"
#include "unique_fd.hpp"

#include <sdbus-c++/sdbus-c++.h>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace layerd::service {

struct Options {
    // "system", "session" or a D-Bus address ("unix:path=/run/x").
    std::string bus = "system";
    std::vector<std::string> config_dirs; // empty: the default dirs
    std::optional<std::string> state_dir;
};

class Daemon {
public:
    explicit Daemon(Options options);
    Daemon(const Daemon&) = delete;
    Daemon& operator=(const Daemon&) = delete;
    ~Daemon();

    // Until SIGTERM / SIGINT; the exit status.
    int run();

    // For the Manager object, on the main thread.
    std::vector<std::string> stack_names() const;
    bool has_stack(const std::string& name) const;
    // Reads the configuration again (Reload(), SIGHUP).
    void reload();

private:
    enum class Wait { timeout, bus, stop };
    Config load() const;
    void add_stack(StackDefinition definition);
    void mount_boot_stacks();
    // Connects, owns the name, exports the objects; false with a logged
    // reason when the bus is not there (yet).
    bool connect();
    void disconnect();
    // Waits up to TIMEOUT_MS for the bus (when connected) or a signal,
    // handling SIGHUP itself.
    Wait wait(int timeout_ms);
    void serve();
    void shutdown();

    // Pings systemd's watchdog when it is due (WATCHDOG_USEC set).
    void feed_watchdog();
    void notify_serving();

    Options options_;
    std::string state_dir_;
    uint64_t watchdog_usec_ = 0; // 0: no watchdog
    int64_t last_ping_usec_ = 0;
    UniqueFd signal_fd_;
    std::optional<SnapshotStore> store_;
    std::map<std::string, std::unique_ptr<ManagedStack>> stacks_;
    // Bus side, torn down before the stacks.
    std::unique_ptr<sdbus::IConnection> bus_;
    std::unique_ptr<ManagerObject> manager_;
    std::map<std::string, std::unique_ptr<StackObject>> objects_;
};

} // namespace layerd::service
