// SPDX-License-Identifier: LGPL-2.1-or-later
// layerctl snapshot STACK [-d DESC] [-c ALGO] [-u K=V]... [--pre | --post PRE]
#include "verbs.hpp"

#include "arguments.hpp"

#include <fmt/format.h>

#include <memory>
#include <optional>

namespace layerd::cli {

namespace {

struct SnapshotArgs {
    std::string stack;
    std::string description;
    std::string cleanup;
    std::vector<std::string> userdata;
    bool pre = false;
    std::string post;
};

} // namespace

Runner declare_snapshot(CLI::App& command)
{
    auto args = std::make_shared<SnapshotArgs>();
    command.add_option("STACK", args->stack, "The stack")->required();
    command.add_option("-d,--description", args->description, "What the snapshot is for")->type_name("DESC");
    command
        .add_option("-c,--cleanup", args->cleanup,
                    "The cleanup algorithm that may delete it: number, timeline or empty-pre-post")
        ->type_name("ALGO");
    command.add_option("-u,--userdata", args->userdata, "KEY=VALUE to keep with it (repeat for more)")
        ->type_name("KEY=VALUE")
        ->allow_extra_args(false)
        ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
    auto* pre = command.add_flag("--pre", args->pre, "A pre snapshot, to pair with a --post one later");
    command.add_option("--post", args->post, "A post snapshot, the partner of pre snapshot PRE")
        ->type_name("PRE")
        ->excludes(pre);
    command.footer("Prints the number of the new snapshot. important=yes in userdata marks it important.");
    return [args](Context& context) {
        Userdata userdata = parse_userdata(args->userdata);
        std::optional<uint32_t> post_of;
        if (!args->post.empty())
            post_of = parse_snapshot_number(args->post, "--post");
        auto stack = context.client().stack(args->stack);
        uint32_t number = 0;
        std::string type = "single";
        if (args->pre) {
            number = stack->CreatePreSnapshot(args->description, args->cleanup, userdata);
            type = "pre";
        } else if (post_of) {
            number = stack->CreatePostSnapshot(*post_of, args->description, args->cleanup, userdata);
            type = "post";
        } else {
            number = stack->CreateSnapshot(args->description, args->cleanup, userdata);
        }
        if (context.json) {
            nlohmann::json out{{"stack", args->stack}, {"number", number}, {"type", type}};
            if (post_of)
                out["pre_number"] = *post_of;
            context.out_json(out);
        } else {
            context.out(fmt::format("{}\n", number));
        }
        return 0;
    };
}

} // namespace layerd::cli
