// SPDX-License-Identifier: LGPL-2.1-or-later
// The one place where exceptions become D-Bus errors (DESIGN §6). sdbus-c++
// 1.2 lets any exception but sdbus::Error escape into C from a handler, so
// every handler body runs inside translate(), which catches everything.
#pragma once

#include <sdbus-c++/Error.h>

#include <exception>
#include <stdexcept>
#include <string>
#include <string_view>

namespace layerd::service {

// The org.layerd1.Error.* names, without the prefix.
enum class ErrorKind { NoSuchStack, NoSuchSnapshot, InvalidArgument, PermissionDenied, Busy, NotMounted, DepthLimit, Io };

std::string_view to_string(ErrorKind kind);
// "org.layerd1.Error.NAME".
std::string error_name(ErrorKind kind);

// A refusal of the service itself (not of the layer tree).
class ServiceError : public std::runtime_error {
public:
    ServiceError(ErrorKind kind, const std::string& what) : std::runtime_error(what), kind_(kind) {}
    ErrorKind kind() const { return kind_; }

private:
    ErrorKind kind_;
};

// The D-Bus error for an exception: ServiceError, SnapshotError, StoreError,
// LayerError and ConfigError by their kinds, anything else as Io. An
// sdbus::Error passes unchanged. Never throws.
sdbus::Error to_bus_error(const std::exception_ptr& error) noexcept;

// Runs F; whatever it throws leaves as an sdbus::Error.
template <class F>
auto translate(F&& f) -> decltype(f())
{
    try {
        return f();
    } catch (...) {
        throw to_bus_error(std::current_exception());
    }
}

} // namespace layerd::service
