// SPDX-License-Identifier: LGPL-2.1-or-later
// The argument values layerctl checks itself before it asks the daemon:
// snapshot numbers and --userdata KEY=VALUE pairs. Limits the daemon
// enforces (sizes, counts) stay the daemon's.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace layerd::cli {

using Userdata = std::map<std::string, std::string>;

// "KEY=VALUE" pairs split at their first '='; VALUE may be empty, KEY may
// not, and no KEY twice. Throws CliError(EX_USAGE) naming the bad pair.
Userdata parse_userdata(const std::vector<std::string>& pairs);

// A snapshot number: decimal digits only, at most 2^32-1; 0 is the live
// view. WHAT names the argument in the error. Throws CliError(EX_USAGE).
uint32_t parse_snapshot_number(std::string_view text, std::string_view what = "snapshot number");

} // namespace layerd::cli
