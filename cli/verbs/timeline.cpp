// SPDX-License-Identifier: LGPL-2.1-or-later
// layerctl timeline --all | timeline STACK...: a snapshot with cleanup
// "timeline" on every mounted stack whose configuration has `timeline:
// true` (what layerd-timeline.service runs hourly), or on the stacks named.
#include "verbs.hpp"

#include "exit_codes.hpp"

#include <fmt/format.h>

#include <memory>

namespace layerd::cli {

namespace {

struct TimelineArgs {
    bool all = false;
    std::vector<std::string> stacks;
};

} // namespace

Runner declare_timeline(CLI::App& command)
{
    auto args = std::make_shared<TimelineArgs>();
    command.add_flag("--all", args->all, "Every mounted stack with timeline: true in its configuration");
    command.add_option("STACK", args->stacks, "The stacks (not with --all)");
    command.footer("Prints STACK NUMBER for each snapshot taken; goes on with the next stack when one fails.");
    return [args](Context& context) {
        if (args->all == !args->stacks.empty())
            throw CliError(EX_USAGE, "timeline needs --all or at least one STACK, not both");
        std::vector<std::unique_ptr<StackClient>> targets;
        if (args->all) {
            for (const auto& ref : context.client().stacks())
                context.attempt([&] {
                    auto stack = context.client().stack(ref);
                    if (stack->Timeline() && stack->Mounted())
                        targets.push_back(std::move(stack));
                });
        } else {
            for (const auto& name : args->stacks)
                context.attempt([&] { targets.push_back(context.client().stack(name)); });
        }
        nlohmann::json taken = nlohmann::json::array();
        std::string text;
        for (const auto& stack : targets) {
            context.attempt([&] {
                uint32_t number = stack->CreateSnapshot("timeline", "timeline", {});
                taken.push_back({{"stack", stack->name()}, {"number", number}});
                text += fmt::format("{} {}\n", stack->name(), number);
            });
        }
        if (context.json)
            context.out_json({{"snapshots", taken}});
        else
            context.out(text);
        return 0;
    };
}

} // namespace layerd::cli
