// SPDX-License-Identifier: LGPL-2.1-or-later
#include "table.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <stdexcept>

namespace layerd::cli {

std::string printable(std::string_view text)
{
    std::string out;
    out.reserve(text.size());
    for (char c : text) {
        auto u = static_cast<unsigned char>(c);
        if (c == '\n')
            out += "\\n";
        else if (c == '\t')
            out += "\\t";
        else if (u < 0x20 || u == 0x7f)
            out += fmt::format("\\x{:02x}", u);
        else
            out += c;
    }
    return out;
}

size_t display_width(std::string_view text)
{
    return static_cast<size_t>(
        std::count_if(text.begin(), text.end(), [](char c) { return (static_cast<unsigned char>(c) & 0xc0) != 0x80; }));
}

void Table::add(std::vector<std::string> row)
{
    if (row.size() > columns_.size())
        throw std::invalid_argument(fmt::format("a table row of {} cells for {} columns", row.size(), columns_.size()));
    row.resize(columns_.size());
    for (auto& cell : row)
        cell = printable(cell);
    rows_.push_back(std::move(row));
}

std::string Table::render() const
{
    std::vector<size_t> widths;
    for (const auto& c : columns_)
        widths.push_back(display_width(c.title));
    for (const auto& row : rows_)
        for (size_t i = 0; i < row.size(); ++i)
            widths[i] = std::max(widths[i], display_width(row[i]));

    std::string out;
    auto line = [&](const std::vector<std::string>& cells) {
        std::string text;
        for (size_t i = 0; i < cells.size(); ++i) {
            size_t pad = widths[i] - display_width(cells[i]);
            bool last = i + 1 == cells.size();
            text += i == 0 ? " " : " | ";
            if (columns_[i].align == Align::right)
                text += std::string(pad, ' ') + cells[i];
            else
                text += cells[i] + (last ? "" : std::string(pad, ' '));
        }
        // A last column that is empty in this row leaves blanks behind.
        while (!text.empty() && text.back() == ' ')
            text.pop_back();
        out += text + '\n';
    };

    std::vector<std::string> titles;
    for (const auto& c : columns_)
        titles.push_back(c.title);
    line(titles);
    for (size_t i = 0; i < widths.size(); ++i)
        out += (i == 0 ? "-" : "-+-") + std::string(widths[i], '-');
    out += "\n";
    for (const auto& row : rows_)
        line(row);
    return out;
}

} // namespace layerd::cli
