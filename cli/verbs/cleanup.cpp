// SPDX-License-Identifier: LGPL-2.1-or-later
// layerctl cleanup STACK [ALGO] | cleanup --all [ALGO]
#include "verbs.hpp"

#include "exit_codes.hpp"

#include <fmt/format.h>

#include <memory>
#include <utility>

namespace layerd::cli {

namespace {

struct CleanupArgs {
    bool all = false;
    std::string stack;
    std::string algorithm;
};

} // namespace

Runner declare_cleanup(CLI::App& command)
{
    auto args = std::make_shared<CleanupArgs>();
    command.add_flag("--all", args->all, "Every mounted stack that has snapshots");
    command.add_option("STACK", args->stack, "The stack (not with --all)");
    command.add_option("ALGO", args->algorithm,
                       "number, timeline or empty-pre-post (default: every one the stack enables)");
    command.footer("Usage with --all: layerctl cleanup --all [ALGO]. Prints how many snapshots each stack lost.");
    return [args](Context& context) {
        // With --all, the one word given is the algorithm.
        std::string stack = args->stack;
        std::string algorithm = args->algorithm;
        if (args->all && !algorithm.empty())
            throw CliError(EX_USAGE, "cleanup --all takes one ALGO at most, no STACK");
        if (args->all)
            std::swap(stack, algorithm);
        if (!args->all && stack.empty())
            throw CliError(EX_USAGE, "cleanup needs a STACK or --all");

        std::vector<Client::StackRef> targets;
        if (args->all)
            targets = context.client().stacks();
        nlohmann::json results = nlohmann::json::array();
        std::string text;
        auto clean = [&](std::unique_ptr<StackClient> target) {
            uint32_t deleted = target->Cleanup(algorithm);
            results.push_back({{"stack", target->name()}, {"deleted", deleted}});
            text += fmt::format("{}: {} snapshot{} deleted\n", target->name(), deleted, deleted == 1 ? "" : "s");
        };
        if (args->all) {
            // What the cleanup timer runs: an unmounted or read-only stack
            // has nothing to clean, and is no failure.
            for (const auto& ref : targets)
                context.attempt([&] {
                    auto target = context.client().stack(ref);
                    if (target->Mounted() && !target->ReadOnly())
                        clean(std::move(target));
                });
        } else {
            clean(context.client().stack(stack));
        }
        if (context.json)
            context.out_json({{"algorithm", algorithm.empty() ? nlohmann::json() : nlohmann::json(algorithm)},
                              {"stacks", results}});
        else
            context.out(text);
        return 0;
    };
}

} // namespace layerd::cli
