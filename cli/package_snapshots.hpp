// SPDX-License-Identifier: LGPL-2.1-or-later
// What `layerctl package-snapshot` decides without a bus: which pre
// snapshot a post one pairs with, and how a package manager's command line
// becomes a description the daemon takes.
#pragma once

#include "snapshot_format.hpp"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace layerd::cli {

// The userdata key that ties a pre snapshot to its post one: the hook's tag
// of one package operation ("PID-STARTTIME" of the apt process).
inline constexpr std::string_view package_tag_key = "package-tag";
// The daemon's limit on a description (org.layerd1.Stack.xml).
inline constexpr size_t max_description_bytes = 4096;

// The newest pre snapshot in SNAPSHOTS whose userdata holds TAG under
// package_tag_key and that no post snapshot names as its pre yet; nullopt
// when there is none. Newest is the highest number: numbers only grow.
std::optional<uint32_t> pre_to_pair(const std::vector<SnapshotRecord>& snapshots, std::string_view tag);

// TEXT as a description a D-Bus string can carry and the daemon accepts:
// bytes that are not UTF-8 become U+FFFD, control characters (a newline,
// a tab) become spaces, surrounding spaces go, and what is longer than
// MAX_BYTES is cut at a character boundary, ending in "...".
std::string package_description(std::string_view text, size_t max_bytes = max_description_bytes);

} // namespace layerd::cli
