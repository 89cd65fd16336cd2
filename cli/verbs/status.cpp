// SPDX-License-Identifier: LGPL-2.1-or-later
// layerctl status [STACK]: the properties of one stack, or of each.
#include "verbs.hpp"

#include "table.hpp"

#include <fmt/format.h>

#include <memory>

namespace layerd::cli {

namespace {

nlohmann::json status_of(StackClient& stack)
{
    auto snapshots = stack.snapshots();
    return {
        {"name", stack.name()},
        {"mountpoint", stack.Mountpoint()},
        {"lowers", stack.Lowers()},
        {"mounted", stack.Mounted()},
        {"read_only", stack.ReadOnly()},
        {"depth", stack.Depth()},
        {"live_layer", stack.LiveLayer()},
        {"snapshots", snapshots.size()},
        {"newest_snapshot", snapshots.empty() ? nlohmann::json() : nlohmann::json(snapshots.back().number)},
    };
}

std::string text_of(const nlohmann::json& s)
{
    auto yes_no = [](bool b) { return b ? "yes" : "no"; };
    std::string lowers;
    for (const auto& l : s["lowers"])
        lowers += (lowers.empty() ? "" : ":") + printable(l.get<std::string>());
    return fmt::format("Stack:       {}\n"
                       "Mountpoint:  {}\n"
                       "Lowers:      {}\n"
                       "Mounted:     {}\n"
                       "Read-only:   {}\n"
                       "Depth:       {}\n"
                       "Live layer:  {}\n"
                       "Snapshots:   {}{}\n",
                       printable(s["name"].get<std::string>()), printable(s["mountpoint"].get<std::string>()),
                       lowers.empty() ? "-" : lowers, yes_no(s["mounted"].get<bool>()),
                       yes_no(s["read_only"].get<bool>()), s["depth"].get<uint32_t>(), s["live_layer"].get<uint64_t>(),
                       s["snapshots"].get<size_t>(),
                       s["newest_snapshot"].is_null()
                           ? std::string()
                           : fmt::format(" (newest {})", s["newest_snapshot"].get<uint32_t>()));
}

} // namespace

Runner declare_status(CLI::App& command)
{
    auto name = std::make_shared<std::string>();
    command.add_option("STACK", *name, "The stack (default: every stack)");
    return [name](Context& context) {
        if (!name->empty()) {
            auto s = status_of(*context.client().stack(*name));
            context.out(context.json ? dump_json(s) + "\n" : text_of(s));
            return 0;
        }
        nlohmann::json all = nlohmann::json::array();
        std::string text;
        for (const auto& ref : context.client().stacks()) {
            context.attempt([&] {
                auto s = status_of(*context.client().stack(ref));
                text += (text.empty() ? "" : "\n") + text_of(s);
                all.push_back(std::move(s));
            });
        }
        context.out(context.json ? dump_json({{"stacks", all}}) + "\n" : text);
        return 0;
    };
}

} // namespace layerd::cli
