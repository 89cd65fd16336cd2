// SPDX-License-Identifier: LGPL-2.1-or-later
// layerd: the snapshot and rollback daemon (DESIGN §6, §8).
#include "daemon.hpp"
#include "log.hpp"

#include <cstdio>
#include <cstring>
#include <exception>
#include <string>

namespace {

void usage(std::FILE* out)
{
    std::fputs("Usage: layerd [--bus system|session|ADDRESS] [--config-dir DIR] [--state-dir DIR]\n"
               "\n"
               "Mounts the boot stacks and serves org.layerd1 on D-Bus.\n"
               "  --bus BUS         system (default), session, or a D-Bus address\n"
               "  --config-dir DIR  read layerd.yaml and stacks.d/ from DIR only\n"
               "  --state-dir DIR   keep the database and layers in DIR\n",
               out);
}

int run(int argc, char** argv)
{
    layerd::service::Options options;
    for (int i = 1; i < argc; ++i) {
        std::string arg = argv[i];
        auto value = [&](const char* name) -> std::string {
            std::string prefix = std::string(name) + "=";
            if (arg.rfind(prefix, 0) == 0)
                return arg.substr(prefix.size());
            if (i + 1 >= argc)
                throw std::invalid_argument(std::string(name) + " needs a value");
            return argv[++i];
        };
        auto is = [&](const char* name) { return arg == name || arg.rfind(std::string(name) + "=", 0) == 0; };
        if (arg == "-h" || arg == "--help") {
            usage(stdout);
            return 0;
        }
        if (is("--bus"))
            options.bus = value("--bus");
        else if (is("--config-dir"))
            options.config_dirs = {value("--config-dir")};
        else if (is("--state-dir"))
            options.state_dir = value("--state-dir");
        else
            throw std::invalid_argument("unknown argument '" + arg + "'");
    }
    layerd::service::init_log();
    layerd::service::Daemon daemon(options);
    return daemon.run();
}

} // namespace

int main(int argc, char** argv)
{
    try {
        return run(argc, argv);
    } catch (const std::invalid_argument& e) {
        std::fprintf(stderr, "layerd: %s\n", e.what());
        usage(stderr);
        return 64; // EX_USAGE
    } catch (const std::exception& e) {
        std::fprintf(stderr, "<3>layerd: %s\n", e.what());
        return 1;
    }
}
