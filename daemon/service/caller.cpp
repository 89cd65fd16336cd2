// SPDX-License-Identifier: LGPL-2.1-or-later
#include "caller.hpp"

#include "bus_error.hpp"

#include <grp.h>
#include <pwd.h>
#include <sdbus-c++/Message.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <optional>

namespace layerd::service {

namespace {

// getpwnam_r / getgrnam_r want a buffer that they may find too small.
template <class Entry, class Lookup>
std::optional<Entry> lookup_name(const std::string& name, Lookup lookup)
{
    std::vector<char> buf(1024);
    for (;;) {
        Entry entry{};
        Entry* result = nullptr;
        int r = lookup(name.c_str(), &entry, buf.data(), buf.size(), &result);
        if (r == ERANGE && buf.size() < (1u << 20)) {
            buf.resize(buf.size() * 2);
            continue;
        }
        if (r != 0 || !result)
            return std::nullopt;
        return entry;
    }
}

std::optional<uid_t> uid_of(const std::string& name)
{
    auto pw = lookup_name<passwd>(name, ::getpwnam_r);
    return pw ? std::optional(pw->pw_uid) : std::nullopt;
}

std::optional<gid_t> gid_of(const std::string& name)
{
    auto gr = lookup_name<group>(name, ::getgrnam_r);
    return gr ? std::optional(gr->gr_gid) : std::nullopt;
}

} // namespace

Caller caller_of(const sdbus::Message& message)
{
    Caller caller;
    try {
        caller.uid = message.getCredsEuid();
    } catch (const sdbus::Error& e) {
        throw ServiceError(ErrorKind::PermissionDenied,
                           "cannot tell who sent this call (" + e.getMessage() + "), so it is refused");
    }
    // The groups are only needed for allow_groups; a bus that does not say
    // leaves the caller with none (refusing, never granting, more).
    try {
        caller.gids = message.getCredsSupplementaryGids();
    } catch (const sdbus::Error&) {
    }
    try {
        caller.gids.push_back(message.getCredsEgid());
    } catch (const sdbus::Error&) {
    }
    return caller;
}

bool may_change(const Caller& caller, const std::vector<std::string>& allow_users,
                const std::vector<std::string>& allow_groups)
{
    if (caller.uid == 0)
        return true;
    for (const auto& user : allow_users)
        if (auto uid = uid_of(user); uid && *uid == caller.uid)
            return true;
    for (const auto& name : allow_groups)
        if (auto gid = gid_of(name); gid && std::find(caller.gids.begin(), caller.gids.end(), *gid) != caller.gids.end())
            return true;
    return false;
}

} // namespace layerd::service
