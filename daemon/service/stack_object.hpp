// SPDX-License-Identifier: LGPL-2.1-or-later
// org.layerd1.Stack for one ManagedStack (DESIGN §6). Every handler does
// the same steps: validate the arguments, authorise the caller, act (long
// work on the stack's worker thread), emit the signals and
// PropertiesChanged, reply; any failure leaves through translate() as an
// org.layerd1.Error.*.
#pragma once

#include "caller.hpp"
#include "managed_stack.hpp"
#include "stack_adaptor.h"
#include "worker.hpp"

#include <sdbus-c++/sdbus-c++.h>

#include <functional>
#include <memory>
#include <string>

namespace layerd::service {

class ManagerObject;

// /org/layerd1/stack/<NAME escaped with sd_bus_path_encode>.
std::string stack_object_path(const std::string& name);

using SnapshotStruct = sdbus::Struct<uint32_t, std::string, uint32_t, int64_t, uint32_t, std::string, std::string, bool,
                                     std::map<std::string, std::string>>;

class StackObject final : public sdbus::AdaptorInterfaces<org::layerd1::Stack_adaptor> {
public:
    StackObject(sdbus::IConnection& bus, ManagedStack& stack, ManagerObject& manager);
    StackObject(const StackObject&) = delete;
    StackObject& operator=(const StackObject&) = delete;
    // Waits for the running job; queued calls are answered with Busy.
    ~StackObject();

    // Nothing running or queued on the worker.
    bool idle() { return worker_->idle(); }
    // PropertiesChanged for the properties a reload may change (and a
    // mount or unmount, which puts the newest definition in force).
    void definition_changed();

private:
    enum class Access { read, change };

    // The caller of the call being handled, refused unless ACCESS allows.
    Caller authorise(Access access);
    // Validates with CHECK and authorises on the bus thread, then runs WORK
    // (Caller -> the result) on the worker and replies from there.
    template <class... R, class Check, class Work>
    void queue(const char* what, sdbus::Result<R...>&& result, Access access, Check check, Work work);
    void properties_changed(const std::vector<std::string>& names);
    uint32_t create(SnapshotType type, std::optional<uint32_t> pre, std::string description, std::string cleanup,
                    std::map<std::string, std::string> userdata, const Caller& caller);

    void Mount(sdbus::Result<>&& result) override;
    void Unmount(sdbus::Result<>&& result) override;
    void CreateSnapshot(sdbus::Result<uint32_t>&& result, std::string description, std::string cleanup,
                        std::map<std::string, std::string> userdata) override;
    void CreatePreSnapshot(sdbus::Result<uint32_t>&& result, std::string description, std::string cleanup,
                           std::map<std::string, std::string> userdata) override;
    void CreatePostSnapshot(sdbus::Result<uint32_t>&& result, uint32_t pre, std::string description,
                            std::string cleanup, std::map<std::string, std::string> userdata) override;
    std::vector<SnapshotStruct> ListSnapshots() override;
    SnapshotStruct GetSnapshot(const uint32_t& number) override;
    void SetSnapshot(const uint32_t& number, const std::string& description, const std::string& cleanup,
                     const std::map<std::string, std::string>& userdata) override;
    void DeleteSnapshots(sdbus::Result<>&& result, std::vector<uint32_t> numbers) override;
    void Rollback(sdbus::Result<uint32_t>&& result, uint32_t number, bool next_mount) override;
    void Diff(sdbus::Result<sdbus::UnixFd>&& result, uint32_t a, uint32_t b) override;
    void UndoChange(sdbus::Result<>&& result, uint32_t number, std::vector<std::string> paths) override;
    void Cleanup(sdbus::Result<uint32_t>&& result, std::string algorithm) override;

    std::string Name() override;
    std::string Mountpoint() override;
    std::vector<std::string> Lowers() override;
    bool Mounted() override;
    bool ReadOnly() override;
    bool Timeline() override;
    bool PackageSnapshots() override;
    uint32_t Depth() override;
    uint64_t LiveLayer() override;

    ManagedStack& stack_;
    ManagerObject& manager_;
    // Last, so it goes first: its jobs use everything above.
    std::unique_ptr<Worker> worker_;
};

} // namespace layerd::service
