// SPDX-License-Identifier: LGPL-2.1-or-later
#include "diff_lines.hpp"

#include "exit_codes.hpp"

#include <fmt/format.h>

namespace layerd::cli {

namespace {

constexpr size_t flag_columns = 6;

[[noreturn]] void bad(std::string_view line, std::string_view why)
{
    // The line itself may be long or binary: a prefix is enough to find it.
    std::string shown(line.substr(0, 80));
    for (char& c : shown)
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f)
            c = '?';
    throw CliError(EX_PROTOCOL, fmt::format("the daemon sent a diff line layerctl cannot read ({}): '{}'", why, shown));
}

} // namespace

std::string decode_diff_path(std::string_view escaped)
{
    std::string out;
    out.reserve(escaped.size());
    for (size_t i = 0; i < escaped.size(); ++i) {
        char c = escaped[i];
        if (c == '\n')
            bad(escaped, "a raw newline");
        if (c != '\\') {
            out += c;
            continue;
        }
        if (++i == escaped.size())
            bad(escaped, "a backslash at the end");
        if (escaped[i] == '\\')
            out += '\\';
        else if (escaped[i] == 'n')
            out += '\n';
        else
            bad(escaped, fmt::format("unknown escape '\\{}'", escaped[i]));
    }
    return out;
}

Change decode_diff_line(std::string_view line)
{
    if (line.size() < flag_columns + 2 || line[flag_columns] != ' ')
        bad(line, "no six status columns and a space");
    for (size_t i = 0; i < flag_columns; ++i) {
        auto c = static_cast<unsigned char>(line[i]);
        if (c <= 0x20 || c >= 0x7f)
            bad(line, "a status column that is not a letter or '.'");
    }
    Change change{std::string(line.substr(0, flag_columns)), decode_diff_path(line.substr(flag_columns + 1))};
    if (change.path.front() != '/')
        bad(line, "a path that does not start with '/'");
    return change;
}

void DiffDecoder::feed(std::string_view data)
{
    while (!data.empty()) {
        auto nl = data.find('\n');
        if (nl == std::string_view::npos) {
            partial_.append(data);
            return;
        }
        if (partial_.empty()) {
            sink_(decode_diff_line(data.substr(0, nl)));
        } else {
            partial_.append(data.substr(0, nl));
            std::string line = std::move(partial_);
            partial_.clear();
            sink_(decode_diff_line(line));
        }
        ++lines_;
        data.remove_prefix(nl + 1);
    }
}

void DiffDecoder::finish()
{
    if (!partial_.empty())
        bad(partial_, "the last line has no newline");
}

} // namespace layerd::cli
