// SPDX-License-Identifier: LGPL-2.1-or-later
// What every verb gets: the global options, the bus (connected on first
// use, so `--help` and usage errors never need a daemon) and the output.
#pragma once

#include "client.hpp"
#include "exit_codes.hpp"

#include <nlohmann/json.hpp>

#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace layerd::cli {

class Context {
public:
    BusOptions bus;
    bool json = false;

    Client& client();

    // Writes TEXT to stdout as it is.
    void out(std::string_view text);
    // Writes DOCUMENT to stdout, one JSON document and a newline.
    void out_json(const nlohmann::json& document);
    // "layerctl: MESSAGE" on stderr.
    static void error(std::string_view message);

    // Runs F; a failure of F (sdbus::Error or CliError) is reported on
    // stderr at once and its exit code kept, so a verb over many stacks
    // goes on with the next one. Returns whether F succeeded.
    bool attempt(const std::function<void()>& f);
    // 0, or the exit code of the first failure attempt() saw.
    int status() const { return status_; }

private:
    std::unique_ptr<Client> client_;
    int status_ = 0;
};

// The CliError for a D-Bus error (exit_code_for_error, and the daemon's
// message as it is).
CliError from_bus_error(const sdbus::Error& e);

} // namespace layerd::cli
