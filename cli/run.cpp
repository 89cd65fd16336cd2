// SPDX-License-Identifier: LGPL-2.1-or-later
#include "run.hpp"

#include "exit_codes.hpp"
#include "verbs.hpp"

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <new>
#include <vector>

namespace layerd::cli {

namespace {

int run_parsed(int argc, char** argv)
{
    Context context;
    CLI::App app{"Snapshots and rollback of overlay stacks, through the layerd daemon.", "layerctl"};
    app.require_subcommand(1);
    // Global options are accepted after the verb too: `layerctl snapshots etc --json`.
    app.fallthrough();
    app.add_option("--bus", context.bus.bus, "system (default), session, or a D-Bus address")
        ->type_name("BUS")
        ->capture_default_str();
    app.add_flag("--json", context.json, "Print one JSON document instead of text");
    app.add_option("--timeout", context.bus.timeout_seconds, "Seconds one call to the daemon may take")
        ->type_name("SECONDS")
        ->check(CLI::Range(1u, 86400u))
        ->capture_default_str();

    std::vector<std::pair<CLI::App*, Runner>> commands;
    for (const Verb& verb : verbs()) {
        CLI::App* command = app.add_subcommand(std::string(verb.name), std::string(verb.summary));
        commands.emplace_back(command, verb.declare(*command));
        std::string footer = command->get_footer();
        command->footer((footer.empty() ? "" : footer + "\n") +
                        "Global options (before or after the verb): --bus BUS, --json, --timeout SECONDS.");
    }

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        if (e.get_exit_code() == 0)
            return app.exit(e); // --help
        Context::error(e.what());
        std::string verb;
        for (auto& [command, runner] : commands)
            if (command->parsed())
                verb = " " + command->get_name();
        fmt::print(stderr, "Run 'layerctl{} --help' for usage.\n", verb);
        return EX_USAGE;
    }

    for (auto& command : commands) {
        if (!command.first->parsed())
            continue;
        const Runner& runner = command.second;
        int code = 0;
        if (context.attempt([&] { code = runner(context); }))
            code = code ? code : context.status();
        else
            code = context.status();
        if (std::fflush(stdout) != 0 && code == 0) {
            Context::error(fmt::format("cannot write to stdout: {}", std::strerror(errno)));
            code = EX_IOERR;
        }
        return code;
    }
    return EX_SOFTWARE; // require_subcommand(1) makes this unreachable
}

} // namespace

int run(int argc, char** argv) noexcept
{
    try {
        return run_parsed(argc, argv);
    } catch (const CliError& e) {
        Context::error(e.what());
        return e.code();
    } catch (const std::bad_alloc&) {
        Context::error("out of memory");
        return EX_OSERR;
    } catch (const std::exception& e) {
        Context::error(fmt::format("internal error: {}", e.what()));
        return EX_SOFTWARE;
    } catch (...) {
        Context::error("internal error");
        return EX_SOFTWARE;
    }
}

} // namespace layerd::cli
