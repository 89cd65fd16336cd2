// SPDX-License-Identifier: LGPL-2.1-or-later
// org.layerd1.Manager at /org/layerd1 (DESIGN §6): the stack list, Reload,
// and the daemon-wide signals, which stack objects emit through it from
// their worker threads (sdbus-c++ allows emitting from any thread).
#pragma once

#include "manager_adaptor.h"

#include <sdbus-c++/sdbus-c++.h>

#include <cstdint>
#include <string>
#include <vector>

namespace layerd::service {

class Daemon;

inline constexpr const char* manager_object_path = "/org/layerd1";
inline constexpr const char* bus_name = "org.layerd1";

class ManagerObject final : public sdbus::AdaptorInterfaces<org::layerd1::Manager_adaptor> {
public:
    ManagerObject(sdbus::IConnection& bus, Daemon& daemon);
    ManagerObject(const ManagerObject&) = delete;
    ManagerObject& operator=(const ManagerObject&) = delete;
    ~ManagerObject();

    // The signals; a failure to send is logged, never thrown.
    void stack_mounted(const std::string& stack);
    void stack_unmounted(const std::string& stack);
    void snapshot_created(const std::string& stack, uint32_t number);
    void snapshots_deleted(const std::string& stack, const std::vector<uint32_t>& numbers);
    void rolled_back(const std::string& stack, uint32_t target, uint32_t backup);

private:
    std::vector<sdbus::Struct<std::string, sdbus::ObjectPath>> ListStacks() override;
    sdbus::ObjectPath GetStack(const std::string& name) override;
    void Reload() override;

    Daemon& daemon_;
};

} // namespace layerd::service
