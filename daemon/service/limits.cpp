// SPDX-License-Identifier: LGPL-2.1-or-later
#include "limits.hpp"

#include "bus_error.hpp"
#include "snapshot_store.hpp"

#include <fmt/format.h>

namespace layerd::service {

namespace {

[[noreturn]] void invalid(const std::string& what)
{
    throw ServiceError(ErrorKind::InvalidArgument, what);
}

} // namespace

void check_stack_name(const std::string& name)
{
    if (name.size() > max_name_bytes)
        invalid(fmt::format("a stack name has at most {} bytes, this one {}", max_name_bytes, name.size()));
}

void check_description(const std::string& description)
{
    if (description.size() > max_description_bytes)
        invalid(fmt::format("a description has at most {} bytes, this one {}", max_description_bytes,
                            description.size()));
}

void check_cleanup(const std::string& cleanup)
{
    if (!is_valid_cleanup(cleanup))
        invalid(fmt::format("unknown cleanup algorithm '{}' (expected '', 'number', 'timeline' or "
                            "'empty-pre-post')",
                            cleanup.substr(0, 64)));
}

void check_userdata(const std::map<std::string, std::string>& userdata)
{
    if (userdata.size() > max_userdata_entries)
        invalid(fmt::format("userdata has at most {} entries, this one {}", max_userdata_entries, userdata.size()));
    for (const auto& [key, value] : userdata) {
        if (key.empty())
            invalid("a userdata key must not be empty");
        if (key.size() > max_userdata_key_bytes)
            invalid(fmt::format("a userdata key has at most {} bytes, '{}…' has {}", max_userdata_key_bytes,
                                key.substr(0, 32), key.size()));
        if (key.find('=') != std::string::npos)
            invalid(fmt::format("a userdata key must not contain '=': '{}'", key));
        if (value.size() > max_userdata_value_bytes)
            invalid(fmt::format("a userdata value has at most {} bytes, the one of '{}' has {}",
                                max_userdata_value_bytes, key, value.size()));
    }
}

void check_numbers(const std::vector<uint32_t>& numbers)
{
    if (numbers.size() > max_list_entries)
        invalid(fmt::format("at most {} snapshots at once, not {}", max_list_entries, numbers.size()));
}

void check_paths(const std::vector<std::string>& paths)
{
    if (paths.size() > max_list_entries)
        invalid(fmt::format("at most {} paths at once, not {}", max_list_entries, paths.size()));
    for (const auto& p : paths) {
        if (p.empty() || p.front() != '/')
            invalid(fmt::format("a path must start with '/' (from the stack's root): '{}'", p.substr(0, 256)));
        if (p.size() > max_path_bytes)
            invalid(fmt::format("a path has at most {} bytes, '{}…' has {}", max_path_bytes, p.substr(0, 64),
                                p.size()));
    }
}

std::optional<CleanupAlgorithm> parse_algorithm(const std::string& algorithm)
{
    if (algorithm.empty())
        return std::nullopt;
    auto a = cleanup_algorithm_from_string(algorithm);
    if (!a)
        invalid(fmt::format("unknown cleanup algorithm '{}' (expected 'number', 'timeline', 'empty-pre-post' or "
                            "'' for every enabled one)",
                            algorithm.substr(0, 64)));
    return a;
}

} // namespace layerd::service
