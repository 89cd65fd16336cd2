// SPDX-License-Identifier: LGPL-2.1-or-later
// The lines of a Diff fd (dbus/org.layerd1.Stack.xml): "FLAGS PATH\n" with
// snapper's six status columns, one space, and the path with each
// backslash doubled and each newline written as backslash-n. The daemon
// is trusted to write that and nothing else: anything else is a protocol
// error (CliError(EX_PROTOCOL)), never guessed at.
#pragma once

#include <functional>
#include <string>
#include <string_view>

namespace layerd::cli {

struct Change {
    std::string flags; // "+.....", "c.ug..", ...
    std::string path;  // decoded: "/a/b", may hold '\n' and '\\'
};

// One line without its '\n'.
Change decode_diff_line(std::string_view line);
// The path part of a line: "\\\\" is one backslash, "\\n" a newline.
std::string decode_diff_path(std::string_view escaped);

// Splits a stream read in chunks of any size into decoded changes.
class DiffDecoder {
public:
    using Sink = std::function<void(const Change&)>;
    explicit DiffDecoder(Sink sink) : sink_(std::move(sink)) {}

    void feed(std::string_view data);
    // At the end of the stream: a line without its '\n' is an error.
    void finish();
    // Lines decoded so far.
    size_t lines() const { return lines_; }

private:
    Sink sink_;
    std::string partial_;
    size_t lines_ = 0;
};

} // namespace layerd::cli
