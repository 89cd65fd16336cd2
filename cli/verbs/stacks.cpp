// SPDX-License-Identifier: LGPL-2.1-or-later
// layerctl stacks: every configured stack, mounted or not.
#include "verbs.hpp"

#include "table.hpp"

namespace layerd::cli {

Runner declare_stacks(CLI::App& command)
{
    command.footer("Columns: Name, Mountpoint, Mounted, Read-only, Depth (frozen layers under the live one).");
    return [](Context& context) {
        Table table({{"Name"}, {"Mountpoint"}, {"Mounted"}, {"Read-only"}, {"Depth", Align::right}});
        nlohmann::json list = nlohmann::json::array();
        for (const auto& ref : context.client().stacks()) {
            auto stack = context.client().stack(ref);
            std::string mountpoint = stack->Mountpoint();
            bool mounted = stack->Mounted();
            bool read_only = stack->ReadOnly();
            uint32_t depth = stack->Depth();
            table.add({ref.name, mountpoint, mounted ? "yes" : "no", read_only ? "yes" : "no", std::to_string(depth)});
            list.push_back({{"name", ref.name},
                            {"object_path", ref.path},
                            {"mountpoint", mountpoint},
                            {"mounted", mounted},
                            {"read_only", read_only},
                            {"depth", depth}});
        }
        if (context.json)
            context.out_json({{"stacks", list}});
        else
            context.out(table.render());
        return 0;
    };
}

} // namespace layerd::cli
