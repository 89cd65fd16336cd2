// SPDX-License-Identifier: LGPL-2.1-or-later
#include "arguments.hpp"

#include "exit_codes.hpp"

#include <fmt/format.h>

#include <limits>

namespace layerd::cli {

Userdata parse_userdata(const std::vector<std::string>& pairs)
{
    Userdata out;
    for (const auto& pair : pairs) {
        auto eq = pair.find('=');
        if (eq == std::string::npos)
            throw CliError(EX_USAGE, fmt::format("userdata '{}' is not KEY=VALUE", pair));
        std::string key = pair.substr(0, eq);
        if (key.empty())
            throw CliError(EX_USAGE, fmt::format("userdata '{}' has an empty key", pair));
        if (!out.emplace(key, pair.substr(eq + 1)).second)
            throw CliError(EX_USAGE, fmt::format("userdata key '{}' is given twice", key));
    }
    return out;
}

uint32_t parse_snapshot_number(std::string_view text, std::string_view what)
{
    if (text.empty())
        throw CliError(EX_USAGE, fmt::format("{} is empty", what));
    uint64_t value = 0;
    for (char c : text) {
        if (c < '0' || c > '9')
            throw CliError(EX_USAGE, fmt::format("{} '{}' is not a number", what, text));
        value = value * 10 + static_cast<uint64_t>(c - '0');
        if (value > std::numeric_limits<uint32_t>::max())
            throw CliError(EX_USAGE, fmt::format("{} '{}' is too big", what, text));
    }
    return static_cast<uint32_t>(value);
}

} // namespace layerd::cli
