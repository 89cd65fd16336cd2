// SPDX-License-Identifier: LGPL-2.1-or-later
#include "exit_codes.hpp"

#include <array>
#include <utility>

namespace layerd::cli {

namespace {

using Entry = std::pair<std::string_view, int>;

// The daemon's own names (dbus/org.layerd1.Stack.xml).
constexpr std::array layerd_errors{
    Entry{"NoSuchStack", EX_DATAERR},
    Entry{"NoSuchSnapshot", EX_DATAERR},
    Entry{"InvalidArgument", EX_DATAERR},
    // The request does not fit the stack's state: asking again will not
    // help until the user mounts it or runs a cleanup.
    Entry{"NotMounted", EX_DATAERR},
    Entry{"DepthLimit", EX_DATAERR},
    Entry{"PermissionDenied", EX_NOPERM},
    Entry{"Busy", EX_TEMPFAIL},
    Entry{"Io", EX_IOERR},
};

// What the bus or sd-bus says when the daemon cannot answer.
constexpr std::array bus_errors{
    Entry{"org.freedesktop.DBus.Error.ServiceUnknown", EX_UNAVAILABLE},
    Entry{"org.freedesktop.DBus.Error.NameHasNoOwner", EX_UNAVAILABLE},
    Entry{"org.freedesktop.DBus.Error.NoServer", EX_UNAVAILABLE},
    Entry{"org.freedesktop.DBus.Error.Disconnected", EX_UNAVAILABLE},
    Entry{"org.freedesktop.DBus.Error.SpawnChildExited", EX_UNAVAILABLE},
    Entry{"org.freedesktop.DBus.Error.SpawnFailed", EX_UNAVAILABLE},
    Entry{"org.freedesktop.DBus.Error.NoReply", EX_TEMPFAIL},
    Entry{"org.freedesktop.DBus.Error.Timeout", EX_TEMPFAIL},
    Entry{"org.freedesktop.DBus.Error.TimedOut", EX_TEMPFAIL},
    Entry{"org.freedesktop.DBus.Error.LimitsExceeded", EX_TEMPFAIL},
    Entry{"org.freedesktop.DBus.Error.AccessDenied", EX_NOPERM},
    Entry{"org.freedesktop.DBus.Error.AuthFailed", EX_NOPERM},
    Entry{"org.freedesktop.DBus.Error.InteractiveAuthorizationRequired", EX_NOPERM},
    Entry{"System.Error.ECONNREFUSED", EX_UNAVAILABLE},
    Entry{"System.Error.ENOENT", EX_UNAVAILABLE},
    Entry{"System.Error.ECONNRESET", EX_UNAVAILABLE},
    Entry{"System.Error.ENOTCONN", EX_UNAVAILABLE},
    Entry{"System.Error.ETIMEDOUT", EX_TEMPFAIL},
    Entry{"System.Error.EBUSY", EX_TEMPFAIL},
    Entry{"System.Error.EAGAIN", EX_TEMPFAIL},
    Entry{"System.Error.EACCES", EX_NOPERM},
    Entry{"System.Error.EPERM", EX_NOPERM},
    Entry{"System.Error.EIO", EX_IOERR},
};

template <class Table>
int find(const Table& table, std::string_view name, int fallback)
{
    for (const auto& [key, code] : table)
        if (key == name)
            return code;
    return fallback;
}

} // namespace

int exit_code_for_error(std::string_view name)
{
    constexpr std::string_view prefix = "org.layerd1.Error.";
    if (name.substr(0, prefix.size()) == prefix)
        return find(layerd_errors, name.substr(prefix.size()), EX_SOFTWARE);
    return find(bus_errors, name, EX_SOFTWARE);
}

} // namespace layerd::cli
