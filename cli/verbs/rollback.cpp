// SPDX-License-Identifier: LGPL-2.1-or-later
// layerctl rollback STACK ID [--next-mount]
#include "verbs.hpp"

#include "arguments.hpp"

#include <fmt/format.h>

#include <memory>

namespace layerd::cli {

namespace {

struct RollbackArgs {
    std::string stack;
    std::string id;
    bool next_mount = false;
};

} // namespace

Runner declare_rollback(CLI::App& command)
{
    auto args = std::make_shared<RollbackArgs>();
    command.add_option("STACK", args->stack, "The stack")->required();
    command.add_option("ID", args->id, "The snapshot to go back to")->required();
    command.add_flag("--next-mount", args->next_mount, "Apply it when the stack is next mounted, not now");
    command.footer("The state from before is kept as a new snapshot (its number is printed): a rollback can be "
                   "undone with a rollback to it.");
    return [args](Context& context) {
        uint32_t target = parse_snapshot_number(args->id);
        uint32_t backup = context.client().stack(args->stack)->Rollback(target, args->next_mount);
        if (context.json)
            context.out_json(
                {{"stack", args->stack}, {"target", target}, {"backup", backup}, {"next_mount", args->next_mount}});
        else if (args->next_mount)
            context.out(fmt::format("{} goes back to snapshot {} at its next mount; snapshot {} keeps the state "
                                    "from before.\n",
                                    args->stack, target, backup));
        else
            context.out(fmt::format("{} is back at snapshot {}; snapshot {} keeps the state from before.\n",
                                    args->stack, target, backup));
        return 0;
    };
}

} // namespace layerd::cli
