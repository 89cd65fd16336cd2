// SPDX-License-Identifier: LGPL-2.1-or-later
#include "context.hpp"

#include "exit_codes.hpp"

#include <fmt/format.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace layerd::cli {

Client& Context::client()
{
    if (!client_)
        client_ = std::make_unique<Client>(bus);
    return *client_;
}

void Context::out(std::string_view text)
{
    if (std::fwrite(text.data(), 1, text.size(), stdout) != text.size())
        throw CliError(EX_IOERR, fmt::format("cannot write to stdout: {}", std::strerror(errno)));
}

void Context::out_json(const nlohmann::json& document)
{
    out(dump_json(document) + "\n");
}

void Context::error(std::string_view message)
{
    std::fflush(stdout);
    fmt::print(stderr, "layerctl: {}\n", message);
}

bool Context::attempt(const std::function<void()>& f)
{
    auto fail = [&](const CliError& e) {
        error(e.what());
        if (status_ == 0)
            status_ = e.code();
        return false;
    };
    try {
        f();
        return true;
    } catch (const CliError& e) {
        return fail(e);
    } catch (const sdbus::Error& e) {
        return fail(from_bus_error(e));
    }
}

CliError from_bus_error(const sdbus::Error& e)
{
    int code = exit_code_for_error(e.getName());
    std::string message = e.getMessage().empty() ? e.getName() : e.getMessage();
    if (code == EX_UNAVAILABLE)
        message = fmt::format("layerd is not reachable on the bus ({}): {}", e.getName(), message);
    else if (code == EX_SOFTWARE)
        message = fmt::format("{} ({})", message, e.getName());
    return CliError(code, message);
}

} // namespace layerd::cli
