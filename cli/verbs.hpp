// SPDX-License-Identifier: LGPL-2.1-or-later
// The verb table (DESIGN §7): one verb a file under verbs/, each with a
// declare function that adds its arguments to its CLI11 subcommand and
// returns what runs it once the command line is parsed.
#pragma once

#include "context.hpp"

#include <CLI/CLI.hpp>

#include <functional>
#include <span>
#include <string_view>

namespace layerd::cli {

// Runs a parsed verb; its exit code (0, or a sysexits code).
using Runner = std::function<int(Context&)>;

struct Verb {
    std::string_view name;
    std::string_view summary;
    Runner (*declare)(CLI::App& command);
};

std::span<const Verb> verbs();

Runner declare_stacks(CLI::App& command);
Runner declare_status(CLI::App& command);
Runner declare_mount(CLI::App& command);
Runner declare_unmount(CLI::App& command);
Runner declare_snapshot(CLI::App& command);
Runner declare_snapshots(CLI::App& command);
Runner declare_delete(CLI::App& command);
Runner declare_rollback(CLI::App& command);
Runner declare_diff(CLI::App& command);
Runner declare_undo_change(CLI::App& command);
Runner declare_cleanup(CLI::App& command);
Runner declare_timeline(CLI::App& command);
Runner declare_package_snapshot(CLI::App& command);

} // namespace layerd::cli
