// SPDX-License-Identifier: LGPL-2.1-or-later
// layerctl delete STACK ID...: in one call, so the daemon sees them together.
#include "verbs.hpp"

#include "arguments.hpp"

#include <memory>

namespace layerd::cli {

namespace {

struct DeleteArgs {
    std::string stack;
    std::vector<std::string> ids;
};

} // namespace

Runner declare_delete(CLI::App& command)
{
    auto args = std::make_shared<DeleteArgs>();
    command.add_option("STACK", args->stack, "The stack")->required();
    command.add_option("ID", args->ids, "The snapshots to delete")->required();
    return [args](Context& context) {
        std::vector<uint32_t> numbers;
        for (const auto& id : args->ids)
            numbers.push_back(parse_snapshot_number(id));
        context.client().stack(args->stack)->DeleteSnapshots(numbers);
        if (context.json)
            context.out_json({{"stack", args->stack}, {"deleted", numbers}});
        return 0;
    };
}

} // namespace layerd::cli
