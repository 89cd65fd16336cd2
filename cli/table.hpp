// SPDX-License-Identifier: LGPL-2.1-or-later
// The human tables of layerctl, drawn as snapper draws `snapper list`:
//
//    # | Type   | Pre # | Date
//   ---+--------+-------+---------------------
//    1 | single |       | 2026-12-02 14:54:01
//
// Columns as wide as their widest cell (counted in characters of UTF-8,
// not bytes), numbers right-aligned, no trailing blanks. Cells never hold
// control characters: they are shown escaped, so a description with a
// newline cannot break the table.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace layerd::cli {

enum class Align { left, right };

struct Column {
    std::string title;
    Align align = Align::left;
};

class Table {
public:
    explicit Table(std::vector<Column> columns) : columns_(std::move(columns)) {}

    // ROW has one cell per column (missing cells are empty, extra ones an
    // error: std::invalid_argument).
    void add(std::vector<std::string> row);
    std::string render() const;
    size_t rows() const { return rows_.size(); }

private:
    std::vector<Column> columns_;
    std::vector<std::vector<std::string>> rows_;
};

// TEXT with '\n', '\t', '\\'-free controls and DEL shown as "\n", "\t",
// "\xHH": what a table cell or a "key: value" line may hold.
std::string printable(std::string_view text);
// Characters of UTF-8 TEXT (bytes that do not continue a sequence).
size_t display_width(std::string_view text);

} // namespace layerd::cli
