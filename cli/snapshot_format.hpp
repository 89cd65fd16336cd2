// SPDX-License-Identifier: LGPL-2.1-or-later
// A snapshot record as the daemon sends it ((usuxussba{ss}), see
// dbus/org.layerd1.Stack.xml), and how layerctl shows it: a row of the
// `snapshots` table or a JSON object.
#pragma once

#include "arguments.hpp"
#include "table.hpp"

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace layerd::cli {

struct SnapshotRecord {
    uint32_t number = 0;
    std::string type; // "single" | "pre" | "post"
    uint32_t pre = 0; // the pre snapshot of a post one, else 0
    int64_t time = 0; // unix seconds
    uint32_t uid = 0;
    std::string description;
    std::string cleanup;
    bool important = false;
    Userdata userdata;
};

// Local time, "2026-12-02 14:54:01".
std::string format_local_time(int64_t unix_seconds);
// UTC, ISO 8601: "2026-12-02T14:54:01Z".
std::string format_utc_time(int64_t unix_seconds);
// The user name of UID, or the number when it has none.
std::string user_name(uint32_t uid);
// "k1=v1, k2=v2", as `snapper list` shows userdata.
std::string format_userdata(const Userdata& userdata);

// # | Type | Pre # | Date | User | Cleanup | Description | Userdata
Table snapshot_table(const std::vector<SnapshotRecord>& snapshots);
// {"number", "type", "pre_number" (null unless post), "time", "date",
//  "uid", "user", "cleanup" (null when none), "description", "important",
//  "userdata"}
nlohmann::json snapshot_json(const SnapshotRecord& snapshot);

// The one way layerctl writes a JSON document: indented, and a string
// that is not UTF-8 (a path can be anything) gets U+FFFD in place of the
// bad bytes rather than failing.
std::string dump_json(const nlohmann::json& document);

} // namespace layerd::cli
