// SPDX-License-Identifier: LGPL-2.1-or-later
// Limits on everything a D-Bus caller controls. Each check throws
// ServiceError(InvalidArgument) with a message that says which limit.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "cleanup.hpp"

namespace layerd::service {

inline constexpr size_t max_name_bytes = 4096;        // a stack name as an argument
inline constexpr size_t max_description_bytes = 4096;
inline constexpr size_t max_userdata_entries = 64;
inline constexpr size_t max_userdata_key_bytes = 256;
inline constexpr size_t max_userdata_value_bytes = 256;
inline constexpr size_t max_list_entries = 4096;      // snapshot numbers, paths
inline constexpr size_t max_path_bytes = 4096;        // PATH_MAX

void check_stack_name(const std::string& name);
void check_description(const std::string& description);
// One of the store's cleanup names ("" = none).
void check_cleanup(const std::string& cleanup);
// Keys: 1 to 256 bytes, no '=' (snapper's KEY=VALUE syntax); values: at
// most 256 bytes.
void check_userdata(const std::map<std::string, std::string>& userdata);
void check_numbers(const std::vector<uint32_t>& numbers);
// Absolute ("/a/b"), at most PATH_MAX bytes each.
void check_paths(const std::vector<std::string>& paths);
// "" (every enabled algorithm) or one algorithm's name.
std::optional<CleanupAlgorithm> parse_algorithm(const std::string& algorithm);

} // namespace layerd::service
