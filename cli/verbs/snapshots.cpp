// SPDX-License-Identifier: LGPL-2.1-or-later
// layerctl snapshots STACK: the table of `snapper list`, oldest first.
#include "verbs.hpp"

#include <memory>

namespace layerd::cli {

Runner declare_snapshots(CLI::App& command)
{
    auto name = std::make_shared<std::string>();
    command.add_option("STACK", *name, "The stack")->required();
    command.footer("Snapshot 0, the live view, is not listed. Dates are local time (UTC in --json).");
    return [name](Context& context) {
        auto snapshots = context.client().stack(*name)->snapshots();
        if (context.json) {
            nlohmann::json list = nlohmann::json::array();
            for (const auto& s : snapshots)
                list.push_back(snapshot_json(s));
            context.out_json({{"stack", *name}, {"snapshots", list}});
        } else {
            context.out(snapshot_table(snapshots).render());
        }
        return 0;
    };
}

} // namespace layerd::cli
