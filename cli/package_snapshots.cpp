// SPDX-License-Identifier: LGPL-2.1-or-later
#include "package_snapshots.hpp"

#include <algorithm>

namespace layerd::cli {

std::optional<uint32_t> pre_to_pair(const std::vector<SnapshotRecord>& snapshots, std::string_view tag)
{
    std::optional<uint32_t> best;
    for (const SnapshotRecord& s : snapshots) {
        if (s.type != "pre" || (best && *best > s.number))
            continue;
        auto it = s.userdata.find(std::string(package_tag_key));
        if (it == s.userdata.end() || it->second != tag)
            continue;
        bool paired = std::any_of(snapshots.begin(), snapshots.end(),
                                  [&](const SnapshotRecord& p) { return p.type == "post" && p.pre == s.number; });
        if (!paired)
            best = s.number;
    }
    return best;
}

namespace {

// dump_json already puts U+FFFD in place of bytes that are not UTF-8: the
// string it writes, read back, is the text made valid.
std::string valid_utf8(std::string_view text)
{
    return nlohmann::json::parse(dump_json(std::string(text))).get<std::string>();
}

bool continues_a_character(char c)
{
    return (static_cast<unsigned char>(c) & 0xC0) == 0x80;
}

} // namespace

std::string package_description(std::string_view text, size_t max_bytes)
{
    std::string out = valid_utf8(text);
    std::replace_if(out.begin(), out.end(), [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7F; },
                    ' ');
    const size_t first = out.find_first_not_of(' ');
    if (first == std::string::npos)
        return {};
    out.erase(0, first);
    out.erase(out.find_last_not_of(' ') + 1);
    if (out.size() <= max_bytes)
        return out;
    constexpr std::string_view ellipsis = "...";
    size_t keep = max_bytes > ellipsis.size() ? max_bytes - ellipsis.size() : 0;
    while (keep > 0 && continues_a_character(out[keep]))
        --keep;
    out.resize(keep);
    out += ellipsis.substr(0, std::min(ellipsis.size(), max_bytes - keep));
    return out;
}

} // namespace layerd::cli
