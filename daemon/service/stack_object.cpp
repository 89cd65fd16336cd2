// SPDX-License-Identifier: LGPL-2.1-or-later
#include "stack_object.hpp"

#include "bus_error.hpp"
#include "limits.hpp"
#include "log.hpp"
#include "manager_object.hpp"
#include "unique_fd.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <systemd/sd-bus.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <fmt/format.h>

namespace layerd::service {

namespace {

// Queued calls beyond the running one before a stack answers Busy.
constexpr size_t max_queued_calls = 16;

// The properties read from the stack's definition: what a reload, a mount
// or an unmount may change.
const std::vector<std::string>& definition_properties()
{
    static const std::vector<std::string> names{"Mountpoint", "Lowers", "ReadOnly", "Timeline", "PackageSnapshots"};
    return names;
}

std::vector<std::string> with_definition_properties(std::vector<std::string> names)
{
    const auto& definition = definition_properties();
    names.insert(names.end(), definition.begin(), definition.end());
    return names;
}

SnapshotStruct to_struct(const SnapshotRecord& r)
{
    return SnapshotStruct(r.number, std::string(to_string(r.type)), r.pre_number.value_or(0), r.time, r.uid,
                          r.description, r.cleanup, r.important, r.userdata);
}

// snapper's convention: userdata important=yes marks a snapshot important.
bool is_important(const std::map<std::string, std::string>& userdata)
{
    auto it = userdata.find("important");
    return it != userdata.end() && it->second == "yes";
}

// A diff line's path: '\' and newline escaped so one entry is one line.
void append_escaped(std::string& out, const std::string& path)
{
    for (char c : path) {
        if (c == '\\')
            out += "\\\\";
        else if (c == '\n')
            out += "\\n";
        else
            out += c;
    }
}

[[noreturn]] void fail_errno(const std::string& what, int err)
{
    throw ServiceError(ErrorKind::Io, fmt::format("{}: {}", what, std::strerror(err)));
}

void write_all(int fd, const std::string& data)
{
    size_t done = 0;
    while (done < data.size()) {
        ssize_t n = ::write(fd, data.data() + done, data.size() - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            fail_errno("writing the diff", errno);
        done += static_cast<size_t>(n);
    }
}

template <class... R>
void send_error(const sdbus::Result<R...>& reply, const sdbus::Error& error) noexcept
{
    try {
        reply.returnError(error);
    } catch (...) {
        // The caller is gone or the bus is: nobody is left to tell.
    }
}

} // namespace

std::string stack_object_path(const std::string& name)
{
    char* path = nullptr;
    int r = sd_bus_path_encode("/org/layerd1/stack", name.c_str(), &path);
    if (r < 0)
        fail_errno("encoding the object path of stack " + name, -r);
    std::string result(path);
    std::free(path); // NOLINT(cppcoreguidelines-no-malloc): sd-bus allocates with malloc
    return result;
}

StackObject::StackObject(sdbus::IConnection& bus, ManagedStack& stack, ManagerObject& manager)
    : AdaptorInterfaces(bus, stack_object_path(stack.name())), stack_(stack), manager_(manager),
      worker_(std::make_unique<Worker>(stack.name(), max_queued_calls))
{
    registerAdaptor();
}

StackObject::~StackObject()
{
    worker_.reset();
    unregisterAdaptor();
}

Caller StackObject::authorise(Access access)
{
    const sdbus::Message* message = getObject().getCurrentlyProcessedMessage();
    if (!message)
        throw ServiceError(ErrorKind::PermissionDenied, "no call is being handled");
    Caller caller = caller_of(*message);
    if (access == Access::read)
        return caller;
    StackDefinition d = stack_.definition();
    if (!may_change(caller, d.allow_users, d.allow_groups))
        throw ServiceError(ErrorKind::PermissionDenied,
                           fmt::format("uid {} may not change stack {}: only root and the users and groups in its "
                                       "allow_users / allow_groups may ({})",
                                       caller.uid, stack_.name(), d.source));
    return caller;
}

template <class... R, class Check, class Work>
void StackObject::queue(const char* what, sdbus::Result<R...>&& result, Access access, Check check, Work work)
{
    // Result is move-only; a job must be copyable.
    auto reply = std::make_shared<sdbus::Result<R...>>(std::move(result));
    try {
        check();
        Caller caller = authorise(access);
        std::string name = what;
        worker_->post(Worker::Job{
            name,
            [this, reply, caller, name, work = std::move(work)]() mutable {
                try {
                    if constexpr (sizeof...(R) == 0) {
                        work(caller);
                        reply->returnResults();
                    } else {
                        reply->returnResults(work(caller));
                    }
                } catch (...) {
                    sdbus::Error e = to_bus_error(std::current_exception());
                    log(LOG_WARNING, fmt::format("{} by uid {} failed: {}", name, caller.uid, e.getMessage()),
                        stack_.name());
                    send_error(*reply, e);
                }
            },
            [reply, name, stack = stack_.name()] {
                send_error(*reply, sdbus::Error(error_name(ErrorKind::Busy),
                                                fmt::format("layerd stopped before it ran {} on stack {}", name, stack)));
            }});
    } catch (...) {
        send_error(*reply, to_bus_error(std::current_exception()));
    }
}

void StackObject::properties_changed(const std::vector<std::string>& names)
{
    try {
        getObject().emitPropertiesChangedSignal(INTERFACE_NAME, names);
    } catch (const std::exception& e) {
        log(LOG_WARNING, fmt::format("cannot send PropertiesChanged: {}", e.what()), stack_.name());
    }
}

void StackObject::definition_changed()
{
    properties_changed(definition_properties());
}

// ---- mount ----

void StackObject::Mount(sdbus::Result<>&& result)
{
    queue("Mount", std::move(result), Access::change, [] {}, [this](const Caller& caller) {
        if (!stack_.mount())
            return;
        log(LOG_INFO, fmt::format("mounted at {} (asked by uid {})", stack_.active().mountpoint, caller.uid),
            stack_.name());
        properties_changed(with_definition_properties({"Mounted", "Depth", "LiveLayer"}));
        manager_.stack_mounted(stack_.name());
    });
}

void StackObject::Unmount(sdbus::Result<>&& result)
{
    queue("Unmount", std::move(result), Access::change, [] {}, [this](const Caller& caller) {
        bool lazy = false;
        stack_.unmount(&lazy);
        log(lazy ? LOG_WARNING : LOG_INFO,
            fmt::format("unmounted{} (asked by uid {})",
                        lazy ? " lazily: the mount was busy, its FUSE connection is aborted" : "", caller.uid),
            stack_.name());
        properties_changed(with_definition_properties({"Mounted"}));
        manager_.stack_unmounted(stack_.name());
    });
}

// ---- snapshots ----

uint32_t StackObject::create(SnapshotType type, std::optional<uint32_t> pre, std::string description,
                             std::string cleanup, std::map<std::string, std::string> userdata, const Caller& caller)
{
    MountedStack& mounted = stack_.mounted();
    if (pre) {
        auto p = stack_.snapshot(*pre);
        if (!p)
            throw ServiceError(ErrorKind::NoSuchSnapshot,
                               fmt::format("stack {} has no snapshot {}", stack_.name(), *pre));
        if (p->type != SnapshotType::Pre)
            throw ServiceError(ErrorKind::InvalidArgument,
                               fmt::format("snapshot {} of stack {} is a {} snapshot, not a pre one", *pre,
                                           stack_.name(), to_string(p->type)));
    }
    MountedStack::NewSnapshot s;
    s.type = type;
    s.pre = pre;
    s.description = std::move(description);
    s.cleanup = std::move(cleanup);
    bool important = is_important(userdata);
    s.userdata = std::move(userdata);
    s.uid = caller.uid;
    uint32_t number = mounted.create_snapshot(s);
    if (important) {
        // The engine records no importance; the store keeps it beside the
        // snapshot. This worker is the only one changing the stack, so
        // nothing comes between the two steps.
        SnapshotChanges changes;
        changes.important = true;
        stack_.update_snapshot(number, changes);
    }
    log(LOG_INFO, fmt::format("{} snapshot {} created by uid {}", to_string(type), number, caller.uid),
        stack_.name(), number);
    properties_changed({"Depth", "LiveLayer"});
    manager_.snapshot_created(stack_.name(), number);
    return number;
}

namespace {

void check_new_snapshot(const std::string& description, const std::string& cleanup,
                        const std::map<std::string, std::string>& userdata)
{
    check_description(description);
    check_cleanup(cleanup);
    check_userdata(userdata);
}

} // namespace

void StackObject::CreateSnapshot(sdbus::Result<uint32_t>&& result, std::string description, std::string cleanup,
                                 std::map<std::string, std::string> userdata)
{
    auto check = [&] { check_new_snapshot(description, cleanup, userdata); };
    queue("CreateSnapshot", std::move(result), Access::change, check,
          [this, description, cleanup, userdata](const Caller& caller) {
              return create(SnapshotType::Single, std::nullopt, description, cleanup, userdata, caller);
          });
}

void StackObject::CreatePreSnapshot(sdbus::Result<uint32_t>&& result, std::string description, std::string cleanup,
                                    std::map<std::string, std::string> userdata)
{
    auto check = [&] { check_new_snapshot(description, cleanup, userdata); };
    queue("CreatePreSnapshot", std::move(result), Access::change, check,
          [this, description, cleanup, userdata](const Caller& caller) {
              return create(SnapshotType::Pre, std::nullopt, description, cleanup, userdata, caller);
          });
}

void StackObject::CreatePostSnapshot(sdbus::Result<uint32_t>&& result, uint32_t pre, std::string description,
                                     std::string cleanup, std::map<std::string, std::string> userdata)
{
    auto check = [&] { check_new_snapshot(description, cleanup, userdata); };
    queue("CreatePostSnapshot", std::move(result), Access::change, check,
          [this, pre, description, cleanup, userdata](const Caller& caller) {
              return create(SnapshotType::Post, pre, description, cleanup, userdata, caller);
          });
}

std::vector<SnapshotStruct> StackObject::ListSnapshots()
{
    return translate([&] {
        std::vector<SnapshotStruct> out;
        for (const auto& r : stack_.snapshots())
            out.push_back(to_struct(r));
        return out;
    });
}

SnapshotStruct StackObject::GetSnapshot(const uint32_t& number)
{
    return translate([&] {
        auto r = stack_.snapshot(number);
        if (!r)
            throw ServiceError(ErrorKind::NoSuchSnapshot,
                               fmt::format("stack {} has no snapshot {}", stack_.name(), number));
        return to_struct(*r);
    });
}

void StackObject::SetSnapshot(const uint32_t& number, const std::string& description, const std::string& cleanup,
                              const std::map<std::string, std::string>& userdata)
{
    translate([&] {
        check_new_snapshot(description, cleanup, userdata);
        Caller caller = authorise(Access::change);
        if (!stack_.snapshot(number))
            throw ServiceError(ErrorKind::NoSuchSnapshot,
                               fmt::format("stack {} has no snapshot {}", stack_.name(), number));
        // One store transaction, quick: it need not wait behind the worker.
        SnapshotChanges changes;
        changes.description = description;
        changes.cleanup = cleanup;
        changes.userdata = userdata;
        changes.important = is_important(userdata);
        stack_.update_snapshot(number, changes);
        log(LOG_INFO, fmt::format("snapshot {} changed by uid {}", number, caller.uid), stack_.name(), number);
    });
}

void StackObject::DeleteSnapshots(sdbus::Result<>&& result, std::vector<uint32_t> numbers)
{
    queue("DeleteSnapshots", std::move(result), Access::change, [&] { check_numbers(numbers); },
          [this, numbers](const Caller& caller) {
              MountedStack& mounted = stack_.mounted();
              std::vector<uint32_t> existed;
              for (uint32_t n : numbers)
                  if (std::find(existed.begin(), existed.end(), n) == existed.end() && stack_.snapshot(n))
                      existed.push_back(n);
              std::exception_ptr failure;
              try {
                  mounted.delete_snapshots(numbers);
              } catch (...) {
                  failure = std::current_exception();
              }
              // Some may have gone even when others failed: say which did.
              std::vector<uint32_t> gone;
              for (uint32_t n : existed)
                  if (!stack_.snapshot(n))
                      gone.push_back(n);
              if (!gone.empty()) {
                  log(LOG_INFO, fmt::format("snapshots {} deleted by uid {}", fmt::join(gone, ", "), caller.uid),
                      stack_.name());
                  properties_changed({"Depth", "LiveLayer"});
                  manager_.snapshots_deleted(stack_.name(), gone);
              }
              if (failure)
                  std::rethrow_exception(failure);
          });
}

void StackObject::Rollback(sdbus::Result<uint32_t>&& result, uint32_t number, bool next_mount)
{
    queue("Rollback", std::move(result), Access::change, [] {}, [this, number, next_mount](const Caller& caller) {
        uint32_t backup = stack_.mounted().rollback(number, next_mount, caller.uid);
        log(LOG_INFO,
            fmt::format("rolled back to snapshot {}{} by uid {}; snapshot {} keeps the state from before", number,
                        next_mount ? " at the next mount" : "", caller.uid, backup),
            stack_.name(), number);
        properties_changed({"Depth", "LiveLayer"});
        manager_.snapshot_created(stack_.name(), backup);
        manager_.rolled_back(stack_.name(), number, backup);
        return backup;
    });
}

void StackObject::Diff(sdbus::Result<sdbus::UnixFd>&& result, uint32_t a, uint32_t b)
{
    queue("Diff", std::move(result), Access::read, [] {}, [this, a, b](const Caller&) {
        MountedStack& mounted = stack_.mounted();
        int raw = ::memfd_create("layerd-diff", MFD_CLOEXEC | MFD_ALLOW_SEALING);
        if (raw < 0)
            fail_errno("memfd_create", errno);
        UniqueFd memfd(raw);
        std::string buffer;
        mounted.diff(a, b, [&](const DiffEntry& e) {
            buffer += e.flags();
            buffer += ' ';
            append_escaped(buffer, e.path);
            buffer += '\n';
            if (buffer.size() >= 64 * 1024) {
                write_all(memfd.get(), buffer);
                buffer.clear();
            }
        });
        write_all(memfd.get(), buffer);
        // The caller gets a read-only open file of its own, at offset 0, on
        // a file nobody can change any more.
        if (::fcntl(memfd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) != 0)
            fail_errno("sealing the diff", errno);
        int ro = ::open(fmt::format("/proc/self/fd/{}", memfd.get()).c_str(), O_RDONLY | O_CLOEXEC);
        if (ro < 0)
            fail_errno("reopening the diff read-only", errno);
        return sdbus::UnixFd(ro, sdbus::adopt_fd);
    });
}

void StackObject::UndoChange(sdbus::Result<>&& result, uint32_t number, std::vector<std::string> paths)
{
    queue("UndoChange", std::move(result), Access::change, [&] { check_paths(paths); },
          [this, number, paths](const Caller& caller) {
              stack_.mounted().undo_change(number, paths);
              log(LOG_INFO,
                  fmt::format("{} path(s) restored from snapshot {} by uid {}", paths.size(), number, caller.uid),
                  stack_.name(), number);
          });
}

void StackObject::Cleanup(sdbus::Result<uint32_t>&& result, std::string algorithm)
{
    queue("Cleanup", std::move(result), Access::change, [&] { (void)parse_algorithm(algorithm); },
          [this, algorithm](const Caller& caller) {
              CleanupResult r = stack_.mounted().cleanup(parse_algorithm(algorithm), static_cast<int64_t>(std::time(nullptr)));
              for (const auto& f : r.failures)
                  log(LOG_WARNING, "cleanup: " + f, stack_.name());
              log(LOG_INFO,
                  fmt::format("cleanup {} by uid {}: {} snapshot(s) and {} leftover layer(s) removed",
                              algorithm.empty() ? "of every algorithm" : algorithm, caller.uid, r.deleted.size(),
                              r.layers_removed),
                  stack_.name());
              if (!r.deleted.empty()) {
                  properties_changed({"Depth", "LiveLayer"});
                  manager_.snapshots_deleted(stack_.name(), r.deleted);
              }
              return static_cast<uint32_t>(r.deleted.size());
          });
}

// ---- properties ----

std::string StackObject::Name()
{
    return stack_.name();
}

std::string StackObject::Mountpoint()
{
    return translate([&] { return stack_.active().mountpoint; });
}

std::vector<std::string> StackObject::Lowers()
{
    return translate([&] { return stack_.active().lowers; });
}

bool StackObject::Mounted()
{
    return stack_.is_mounted();
}

bool StackObject::ReadOnly()
{
    return translate([&] { return !stack_.active().upper; });
}

// The newest definition, not the one the mount serves: a reload switches
// these on a mounted stack (config_diff.hpp). The config refuses both on a
// read-only stack, and a mounted stack keeps its upper until remounted.
bool StackObject::Timeline()
{
    return translate([&] { return stack_.definition().timeline && stack_.active().upper; });
}

bool StackObject::PackageSnapshots()
{
    return translate([&] { return stack_.definition().package_snapshots && stack_.active().upper; });
}

uint32_t StackObject::Depth()
{
    return translate([&] { return stack_.depth(); });
}

uint64_t StackObject::LiveLayer()
{
    return translate([&] { return static_cast<uint64_t>(stack_.live_layer()); });
}

} // namespace layerd::service
