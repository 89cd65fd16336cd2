// SPDX-License-Identifier: LGPL-2.1-or-later
// layerctl's side of the bus: one connection and the generated proxies
// (dbus/*.xml), nothing else. What the daemon refuses arrives here as
// sdbus::Error and is turned into a CliError in one place, run().
#pragma once

#include "snapshot_format.hpp"

#include "manager_proxy.h"
#include "stack_proxy.h"

#include <sdbus-c++/sdbus-c++.h>

#include <memory>
#include <string>
#include <vector>

namespace layerd::cli {

struct BusOptions {
    // "system", "session", or a D-Bus address such as "unix:path=/run/x".
    std::string bus = "system";
    // How long one method call may take before layerctl gives up on it.
    unsigned timeout_seconds = 300;
};

class StackClient final : public sdbus::ProxyInterfaces<org::layerd1::Stack_proxy> {
public:
    StackClient(sdbus::IConnection& bus, std::string name, const std::string& path);
    ~StackClient();
    StackClient(const StackClient&) = delete;
    StackClient& operator=(const StackClient&) = delete;

    const std::string& name() const { return name_; }
    std::vector<SnapshotRecord> snapshots();

private:
    std::string name_;
};

class Client {
public:
    // Connects; CliError(EX_USAGE) for a BUS that is no bus,
    // CliError(EX_UNAVAILABLE) when it cannot be reached.
    explicit Client(const BusOptions& options);
    ~Client();
    Client(const Client&) = delete;
    Client& operator=(const Client&) = delete;

    struct StackRef {
        std::string name;
        std::string path;
    };
    // Every configured stack, as the daemon lists them.
    std::vector<StackRef> stacks();
    // The stack NAME (org.layerd1.Error.NoSuchStack if none).
    std::unique_ptr<StackClient> stack(const std::string& name);
    std::unique_ptr<StackClient> stack(const StackRef& ref);

private:
    class ManagerClient;
    std::unique_ptr<sdbus::IConnection> bus_;
    std::unique_ptr<ManagerClient> manager_;
};

SnapshotRecord to_record(
    const sdbus::Struct<uint32_t, std::string, uint32_t, int64_t, uint32_t, std::string, std::string, bool, Userdata>&
        s);

} // namespace layerd::cli
