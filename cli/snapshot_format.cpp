// SPDX-License-Identifier: LGPL-2.1-or-later
#include "snapshot_format.hpp"

#include <pwd.h>
#include <unistd.h>

#include <fmt/format.h>

#include <ctime>
#include <string>

namespace layerd::cli {

namespace {

std::string format_tm(int64_t unix_seconds, bool utc, const char* format)
{
    auto t = static_cast<std::time_t>(unix_seconds);
    std::tm tm{};
    if ((utc ? ::gmtime_r(&t, &tm) : ::localtime_r(&t, &tm)) == nullptr)
        return std::to_string(unix_seconds);
    char buf[64];
    size_t n = std::strftime(buf, sizeof buf, format, &tm);
    return n ? std::string(buf, n) : std::to_string(unix_seconds);
}

} // namespace

std::string format_local_time(int64_t unix_seconds)
{
    return format_tm(unix_seconds, false, "%Y-%m-%d %H:%M:%S");
}

std::string format_utc_time(int64_t unix_seconds)
{
    return format_tm(unix_seconds, true, "%Y-%m-%dT%H:%M:%SZ");
}

std::string user_name(uint32_t uid)
{
    long hint = ::sysconf(_SC_GETPW_R_SIZE_MAX);
    std::string buf(hint > 0 ? static_cast<size_t>(hint) : 16384, '\0');
    passwd pw{};
    passwd* found = nullptr;
    while (::getpwuid_r(uid, &pw, buf.data(), buf.size(), &found) == ERANGE && buf.size() < (1u << 20))
        buf.resize(buf.size() * 2);
    return found ? std::string(found->pw_name) : std::to_string(uid);
}

std::string format_userdata(const Userdata& userdata)
{
    std::string out;
    for (const auto& [key, value] : userdata) {
        if (!out.empty())
            out += ", ";
        out += key;
        out += '=';
        out += value;
    }
    return out;
}

Table snapshot_table(const std::vector<SnapshotRecord>& snapshots)
{
    Table table({{"#", Align::right},
                 {"Type"},
                 {"Pre #", Align::right},
                 {"Date"},
                 {"User"},
                 {"Cleanup"},
                 {"Description"},
                 {"Userdata"}});
    for (const auto& s : snapshots) {
        // snapper shows importance as userdata: so does layerctl, whether
        // or not the daemon keeps the key that set it.
        Userdata shown = s.userdata;
        if (s.important)
            shown.emplace("important", "yes");
        table.add({std::to_string(s.number), s.type, s.pre ? std::to_string(s.pre) : "", format_local_time(s.time),
                   user_name(s.uid), s.cleanup, s.description, format_userdata(shown)});
    }
    return table;
}

nlohmann::json snapshot_json(const SnapshotRecord& s)
{
    return {
        {"number", s.number},
        {"type", s.type},
        {"pre_number", s.pre ? nlohmann::json(s.pre) : nlohmann::json()},
        {"time", s.time},
        {"date", format_utc_time(s.time)},
        {"uid", s.uid},
        {"user", user_name(s.uid)},
        {"cleanup", s.cleanup.empty() ? nlohmann::json() : nlohmann::json(s.cleanup)},
        {"description", s.description},
        {"important", s.important},
        {"userdata", s.userdata},
    };
}

std::string dump_json(const nlohmann::json& document)
{
    return document.dump(2, ' ', false, nlohmann::json::error_handler_t::replace);
}

} // namespace layerd::cli
