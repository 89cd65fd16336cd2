// SPDX-License-Identifier: LGPL-2.1-or-later
// layerctl undo-change STACK ID PATH...: each PATH made in the live view
// what it is in snapshot ID.
#include "verbs.hpp"

#include "arguments.hpp"
#include "exit_codes.hpp"

#include <fmt/format.h>

#include <memory>

namespace layerd::cli {

namespace {

struct UndoArgs {
    std::string stack;
    std::string id;
    std::vector<std::string> paths;
};

} // namespace

Runner declare_undo_change(CLI::App& command)
{
    auto args = std::make_shared<UndoArgs>();
    command.add_option("STACK", args->stack, "The stack")->required();
    command.add_option("ID", args->id, "The snapshot to take the paths from")->required();
    command.add_option("PATH", args->paths, "Paths from the stack's root, as diff shows them (/a/b)")->required();
    return [args](Context& context) {
        uint32_t number = parse_snapshot_number(args->id);
        for (const auto& path : args->paths)
            if (path.empty() || path.front() != '/')
                throw CliError(EX_USAGE,
                               fmt::format("path '{}' is not from the stack's root (it must start with '/')", path));
        context.client().stack(args->stack)->UndoChange(number, args->paths);
        if (context.json)
            context.out_json({{"stack", args->stack}, {"number", number}, {"paths", args->paths}});
        return 0;
    };
}

} // namespace layerd::cli
