// SPDX-License-Identifier: LGPL-2.1-or-later
// layerctl package-snapshot pre|post --tag TAG [-d DESC]: what the apt hook
// (units/layerd-apt-hook) runs around each dpkg run, as snapper's apt hook
// does. pre: a pre snapshot, cleanup "number", userdata package-tag=TAG,
// on every mounted, writable stack with package_snapshots: true. post: on
// the same stacks, the post partner of the newest pre snapshot tagged TAG
// that has none yet (a single snapshot when there is no such pre), then the
// "number" cleanup. A failure on one stack is reported and the others go on.
#include "verbs.hpp"

#include "exit_codes.hpp"
#include "package_snapshots.hpp"

#include <fmt/format.h>

#include <memory>

namespace layerd::cli {

namespace {

struct PackageSnapshotArgs {
    std::string phase;
    std::string tag;
    std::string description;
};

// The daemon's limit on a userdata value.
constexpr size_t max_tag_bytes = 256;
constexpr const char* cleanup_algorithm = "number";

// The stacks that ask for package snapshots and can take one; the ones that
// ask but are not mounted go to SKIPPED.
std::vector<std::unique_ptr<StackClient>> stacks_asking(Context& context, nlohmann::json& skipped, std::string& text)
{
    std::vector<std::unique_ptr<StackClient>> targets;
    for (const auto& ref : context.client().stacks())
        context.attempt([&] {
            auto stack = context.client().stack(ref);
            if (!stack->PackageSnapshots())
                return;
            if (!stack->Mounted()) {
                skipped.push_back({{"stack", stack->name()}, {"reason", "not mounted"}});
                text += fmt::format("{}: not mounted, no snapshot\n", stack->name());
                return;
            }
            targets.push_back(std::move(stack));
        });
    return targets;
}

} // namespace

Runner declare_package_snapshot(CLI::App& command)
{
    auto args = std::make_shared<PackageSnapshotArgs>();
    command.add_option("PHASE", args->phase, "pre (before the package operation) or post (after it)")
        ->required()
        ->check(CLI::IsMember({"pre", "post"}));
    command.add_option("--tag", args->tag, "Names one package operation: post pairs with the pre of the same tag")
        ->type_name("TAG")
        ->required();
    command.add_option("-d,--description", args->description, "The package manager's command line")
        ->type_name("DESC");
    command.footer("Works on every mounted stack with package_snapshots: true; cleanup \"number\". "
                   "After post, runs the number cleanup of each stack.");
    return [args](Context& context) {
        if (args->tag.empty() || args->tag.size() > max_tag_bytes)
            throw CliError(EX_USAGE, fmt::format("--tag must have 1 to {} bytes", max_tag_bytes));
        const std::string description = package_description(args->description);
        const Userdata userdata{{std::string(package_tag_key), args->tag}};
        const bool pre = args->phase == "pre";

        nlohmann::json skipped = nlohmann::json::array();
        nlohmann::json taken = nlohmann::json::array();
        std::string text;
        auto targets = stacks_asking(context, skipped, text);
        for (const auto& stack : targets) {
            nlohmann::json entry{{"stack", stack->name()}};
            std::string line;
            context.attempt([&] {
                uint32_t number = 0;
                if (pre) {
                    number = stack->CreatePreSnapshot(description, cleanup_algorithm, userdata);
                    entry.update({{"number", number}, {"type", "pre"}});
                    line = fmt::format("{}: pre snapshot {}", stack->name(), number);
                    return;
                }
                if (std::optional<uint32_t> partner = pre_to_pair(stack->snapshots(), args->tag)) {
                    number = stack->CreatePostSnapshot(*partner, description, cleanup_algorithm, userdata);
                    entry.update({{"number", number}, {"type", "post"}, {"pre_number", *partner}});
                    line = fmt::format("{}: post snapshot {} (pre {})", stack->name(), number, *partner);
                } else {
                    number = stack->CreateSnapshot(description, cleanup_algorithm, userdata);
                    entry.update({{"number", number}, {"type", "single"}});
                    line = fmt::format("{}: no pre snapshot tagged {}: single snapshot {}", stack->name(), args->tag,
                                       number);
                }
                uint32_t deleted = stack->Cleanup(cleanup_algorithm);
                entry["cleanup_deleted"] = deleted;
                line += fmt::format("; number cleanup deleted {}", deleted);
            });
            // A snapshot taken before a failing cleanup is still reported.
            if (entry.contains("number")) {
                taken.push_back(entry);
                text += line + "\n";
            }
        }
        if (targets.empty() && skipped.empty())
            text += "no stack has package_snapshots: true\n";
        if (context.json)
            context.out_json({{"phase", args->phase}, {"tag", args->tag}, {"snapshots", taken}, {"skipped", skipped}});
        else
            context.out(text);
        return 0;
    };
}

} // namespace layerd::cli
