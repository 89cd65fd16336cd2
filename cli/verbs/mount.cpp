// SPDX-License-Identifier: LGPL-2.1-or-later
// layerctl mount STACK.
#include "verbs.hpp"

#include <memory>

namespace layerd::cli {

Runner declare_mount(CLI::App& command)
{
    auto name = std::make_shared<std::string>();
    command.add_option("STACK", *name, "The stack")->required();
    return [name](Context& context) {
        context.client().stack(*name)->Mount();
        if (context.json)
            context.out_json({{"stack", *name}, {"mounted", true}});
        return 0;
    };
}

} // namespace layerd::cli
