// SPDX-License-Identifier: LGPL-2.1-or-later
// How layerctl ends (DESIGN §7): sysexits(3) codes, and the one exception
// type that carries a code from wherever a failure is found up to main.
#pragma once

#include <sysexits.h>

#include <stdexcept>
#include <string>
#include <string_view>

namespace layerd::cli {

// A failure a person can act on: MESSAGE goes to stderr as
// "layerctl: MESSAGE", CODE is the exit status.
class CliError : public std::runtime_error {
public:
    CliError(int code, const std::string& message) : std::runtime_error(message), code_(code) {}
    int code() const { return code_; }

private:
    int code_;
};

// The exit code for a D-Bus error NAME, from the daemon
// (org.layerd1.Error.*), from the bus (org.freedesktop.DBus.Error.*) or
// from sd-bus itself (System.Error.E*): EX_DATAERR for a request the daemon
// refuses, EX_NOPERM, EX_TEMPFAIL for Busy and timeouts, EX_UNAVAILABLE
// when nobody owns org.layerd1, EX_IOERR for Io, EX_SOFTWARE otherwise.
int exit_code_for_error(std::string_view name);

} // namespace layerd::cli
