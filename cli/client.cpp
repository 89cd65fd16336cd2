// SPDX-License-Identifier: LGPL-2.1-or-later
#include "client.hpp"

#include "exit_codes.hpp"

#include <fmt/format.h>

#include <chrono>

namespace layerd::cli {

namespace {

constexpr const char* service = "org.layerd1";
constexpr const char* manager_path = "/org/layerd1";

std::unique_ptr<sdbus::IConnection> connect(const std::string& bus)
{
    if (bus != "system" && bus != "session" && bus.find(':') == std::string::npos)
        throw CliError(EX_USAGE,
                       fmt::format("--bus '{}' is not 'system', 'session' or a D-Bus address (unix:path=...)", bus));
    try {
        if (bus == "system")
            return sdbus::createSystemBusConnection();
        if (bus == "session")
            return sdbus::createSessionBusConnection();
        return sdbus::createSessionBusConnectionWithAddress(bus);
    } catch (const sdbus::Error& e) {
        std::string which = bus == "system" || bus == "session" ? "the " + bus + " bus" : "the bus at " + bus;
        throw CliError(EX_UNAVAILABLE, fmt::format("cannot connect to {}: {}", which, e.getMessage()));
    }
}

} // namespace

// layerctl waits for no signal: the proxy is never registered (which would
// add match rules on the bus for nothing) and the handlers are empty.
class Client::ManagerClient final : public sdbus::ProxyInterfaces<org::layerd1::Manager_proxy> {
public:
    explicit ManagerClient(sdbus::IConnection& bus) : ProxyInterfaces(bus, service, manager_path) {}
    ~ManagerClient() = default;
    ManagerClient(const ManagerClient&) = delete;
    ManagerClient& operator=(const ManagerClient&) = delete;

private:
    void onStackMounted(const std::string&) override {}
    void onStackUnmounted(const std::string&) override {}
    void onSnapshotCreated(const std::string&, const uint32_t&) override {}
    void onSnapshotsDeleted(const std::string&, const std::vector<uint32_t>&) override {}
    void onRolledBack(const std::string&, const uint32_t&, const uint32_t&) override {}
};

StackClient::StackClient(sdbus::IConnection& bus, std::string name, const std::string& path)
    : ProxyInterfaces(bus, service, path), name_(std::move(name))
{
}

StackClient::~StackClient() = default;

SnapshotRecord to_record(
    const sdbus::Struct<uint32_t, std::string, uint32_t, int64_t, uint32_t, std::string, std::string, bool, Userdata>&
        s)
{
    return {s.get<0>(), s.get<1>(), s.get<2>(), s.get<3>(), s.get<4>(), s.get<5>(), s.get<6>(), s.get<7>(), s.get<8>()};
}

std::vector<SnapshotRecord> StackClient::snapshots()
{
    std::vector<SnapshotRecord> out;
    for (const auto& s : ListSnapshots())
        out.push_back(to_record(s));
    return out;
}

Client::Client(const BusOptions& options) : bus_(connect(options.bus))
{
    bus_->setMethodCallTimeout(std::chrono::seconds(options.timeout_seconds));
    manager_ = std::make_unique<ManagerClient>(*bus_);
}

Client::~Client() = default;

std::vector<Client::StackRef> Client::stacks()
{
    std::vector<StackRef> out;
    for (const auto& s : manager_->ListStacks())
        out.push_back({s.get<0>(), s.get<1>()});
    return out;
}

std::unique_ptr<StackClient> Client::stack(const std::string& name)
{
    return std::make_unique<StackClient>(*bus_, name, manager_->GetStack(name));
}

std::unique_ptr<StackClient> Client::stack(const StackRef& ref)
{
    return std::make_unique<StackClient>(*bus_, ref.name, ref.path);
}

} // namespace layerd::cli
