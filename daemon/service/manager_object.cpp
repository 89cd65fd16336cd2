// SPDX-License-Identifier: LGPL-2.1-or-later
#include "manager_object.hpp"

#include "bus_error.hpp"
#include "caller.hpp"
#include "daemon.hpp"
#include "stack_object.hpp"
#include "limits.hpp"
#include "log.hpp"

#include <fmt/format.h>

namespace layerd::service {

ManagerObject::ManagerObject(sdbus::IConnection& bus, Daemon& daemon)
    : AdaptorInterfaces(bus, manager_object_path), daemon_(daemon)
{
    registerAdaptor();
}

ManagerObject::~ManagerObject()
{
    unregisterAdaptor();
}

namespace {

template <class F>
void emit_logged(const char* signal, F&& f)
{
    try {
        f();
    } catch (const std::exception& e) {
        log(LOG_WARNING, fmt::format("cannot send the {} signal: {}", signal, e.what()));
    }
}

} // namespace

void ManagerObject::stack_mounted(const std::string& stack)
{
    emit_logged("StackMounted", [&] { emitStackMounted(stack); });
}

void ManagerObject::stack_unmounted(const std::string& stack)
{
    emit_logged("StackUnmounted", [&] { emitStackUnmounted(stack); });
}

void ManagerObject::snapshot_created(const std::string& stack, uint32_t number)
{
    emit_logged("SnapshotCreated", [&] { emitSnapshotCreated(stack, number); });
}

void ManagerObject::snapshots_deleted(const std::string& stack, const std::vector<uint32_t>& numbers)
{
    emit_logged("SnapshotsDeleted", [&] { emitSnapshotsDeleted(stack, numbers); });
}

void ManagerObject::rolled_back(const std::string& stack, uint32_t target, uint32_t backup)
{
    emit_logged("RolledBack", [&] { emitRolledBack(stack, target, backup); });
}

std::vector<sdbus::Struct<std::string, sdbus::ObjectPath>> ManagerObject::ListStacks()
{
    return translate([&] {
        std::vector<sdbus::Struct<std::string, sdbus::ObjectPath>> out;
        for (const auto& name : daemon_.stack_names())
            out.emplace_back(name, sdbus::ObjectPath(stack_object_path(name)));
        return out;
    });
}

sdbus::ObjectPath ManagerObject::GetStack(const std::string& name)
{
    return translate([&] {
        check_stack_name(name);
        if (!daemon_.has_stack(name))
            throw ServiceError(ErrorKind::NoSuchStack,
                               fmt::format("no stack '{}' is configured (see layerctl stacks)", name));
        return sdbus::ObjectPath(stack_object_path(name));
    });
}

void ManagerObject::Reload()
{
    translate([&] {
        const sdbus::Message* message = getObject().getCurrentlyProcessedMessage();
        if (!message)
            throw ServiceError(ErrorKind::PermissionDenied, "no call is being handled");
        Caller caller = caller_of(*message);
        if (caller.uid != 0)
            throw ServiceError(ErrorKind::PermissionDenied,
                               fmt::format("uid {} may not reload layerd's configuration: only root may", caller.uid));
        log(LOG_INFO, fmt::format("reloading the configuration (asked by uid {})", caller.uid));
        daemon_.reload();
    });
}

} // namespace layerd::service
