// SPDX-License-Identifier: LGPL-2.1-or-later
// layerctl unmount STACK: lazily when the mount is busy (the daemon's call).
#include "verbs.hpp"

#include <memory>

namespace layerd::cli {

Runner declare_unmount(CLI::App& command)
{
    auto name = std::make_shared<std::string>();
    command.add_option("STACK", *name, "The stack")->required();
    return [name](Context& context) {
        context.client().stack(*name)->Unmount();
        if (context.json)
            context.out_json({{"stack", *name}, {"mounted", false}});
        return 0;
    };
}

} // namespace layerd::cli
