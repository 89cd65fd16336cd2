// SPDX-License-Identifier: LGPL-2.1-or-later
#include "bus_error.hpp"

#include "config.hpp"
#include "layer_set.hpp"
#include "mounted_stack.hpp"
#include "sqlite.hpp"

#include <new>

namespace layerd::service {

std::string_view to_string(ErrorKind kind)
{
    switch (kind) {
    case ErrorKind::NoSuchStack: return "NoSuchStack";
    case ErrorKind::NoSuchSnapshot: return "NoSuchSnapshot";
    case ErrorKind::InvalidArgument: return "InvalidArgument";
    case ErrorKind::PermissionDenied: return "PermissionDenied";
    case ErrorKind::Busy: return "Busy";
    case ErrorKind::NotMounted: return "NotMounted";
    case ErrorKind::DepthLimit: return "DepthLimit";
    case ErrorKind::Io: return "Io";
    }
    return "Io";
}

std::string error_name(ErrorKind kind)
{
    return std::string("org.layerd1.Error.") + std::string(to_string(kind));
}

namespace {

ErrorKind kind_of(SnapshotError::Kind kind)
{
    switch (kind) {
    case SnapshotError::Kind::NoSuchSnapshot: return ErrorKind::NoSuchSnapshot;
    case SnapshotError::Kind::DepthLimit: return ErrorKind::DepthLimit;
    case SnapshotError::Kind::InvalidArgument: return ErrorKind::InvalidArgument;
    case SnapshotError::Kind::Io: return ErrorKind::Io;
    }
    return ErrorKind::Io;
}

ErrorKind kind_of(StoreError::Kind kind)
{
    switch (kind) {
    case StoreError::Kind::NotFound: return ErrorKind::NoSuchSnapshot;
    case StoreError::Kind::Invalid: return ErrorKind::InvalidArgument;
    case StoreError::Kind::Busy: return ErrorKind::Busy;
    // A change the layer tree refuses (a layer still in use, ...) is the
    // caller's to reconsider, not a failing disk.
    case StoreError::Kind::Conflict: return ErrorKind::InvalidArgument;
    default: return ErrorKind::Io;
    }
}

sdbus::Error make(ErrorKind kind, const std::string& message)
{
    return sdbus::Error(error_name(kind), message);
}

} // namespace

sdbus::Error to_bus_error(const std::exception_ptr& error) noexcept
{
    try {
        try {
            std::rethrow_exception(error);
        } catch (const sdbus::Error& e) {
            return e;
        } catch (const ServiceError& e) {
            return make(e.kind(), e.what());
        } catch (const SnapshotError& e) {
            return make(kind_of(e.kind()), e.what());
        } catch (const StoreError& e) {
            return make(kind_of(e.kind()), e.what());
        } catch (const ConfigError& e) {
            return make(ErrorKind::InvalidArgument, e.what());
        } catch (const LayerError& e) {
            return make(ErrorKind::Io, e.what());
        } catch (const std::bad_alloc&) {
            return make(ErrorKind::Io, "layerd ran out of memory");
        } catch (const std::exception& e) {
            return make(ErrorKind::Io, e.what());
        } catch (...) {
            return make(ErrorKind::Io, "unknown internal error");
        }
    } catch (...) {
        // Building the error itself failed (out of memory): a name with no
        // message still tells the caller what kind of failure it was.
        return sdbus::Error("org.layerd1.Error.Io", "");
    }
}

} // namespace layerd::service
