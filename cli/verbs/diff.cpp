// SPDX-License-Identifier: LGPL-2.1-or-later
// layerctl diff STACK A B: the daemon's fd of "FLAGS PATH" lines, decoded
// and streamed to stdout as they are read (a diff can be big).
#include "verbs.hpp"

#include "arguments.hpp"
#include "diff_lines.hpp"
#include "exit_codes.hpp"

#include <unistd.h>

#include <fmt/format.h>

#include <cerrno>
#include <cstring>
#include <memory>

namespace layerd::cli {

namespace {

struct DiffArgs {
    std::string stack;
    std::string a;
    std::string b;
};

// Reads FD to its end, in pieces, into DECODER.
void pump(int fd, DiffDecoder& decoder)
{
    std::string buffer(64 * 1024, '\0');
    for (;;) {
        ssize_t n = ::read(fd, buffer.data(), buffer.size());
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            throw CliError(EX_IOERR, fmt::format("cannot read the diff from layerd: {}", std::strerror(errno)));
        if (n == 0)
            break;
        decoder.feed(std::string_view(buffer.data(), static_cast<size_t>(n)));
    }
    decoder.finish();
}

} // namespace

Runner declare_diff(CLI::App& command)
{
    auto args = std::make_shared<DiffArgs>();
    command.add_option("STACK", args->stack, "The stack")->required();
    command.add_option("A", args->a, "The older snapshot (0: the live view)")->required();
    command.add_option("B", args->b, "The newer snapshot (0: the live view)")->required();
    command.footer("Each line is FLAGS PATH, with snapper's six status columns: + created, - deleted, c content, "
                   "t type; p permissions; u owner; g group; x extended attributes; a ACLs.");
    return [args](Context& context) {
        uint32_t a = parse_snapshot_number(args->a, "snapshot A");
        uint32_t b = parse_snapshot_number(args->b, "snapshot B");
        sdbus::UnixFd fd = context.client().stack(args->stack)->Diff(a, b);
        if (context.json) {
            nlohmann::json changes = nlohmann::json::array();
            DiffDecoder decoder([&](const Change& c) { changes.push_back({{"flags", c.flags}, {"path", c.path}}); });
            pump(fd.get(), decoder);
            context.out_json({{"stack", args->stack}, {"a", a}, {"b", b}, {"changes", changes}});
        } else {
            std::string out;
            DiffDecoder decoder([&](const Change& c) {
                out += c.flags;
                out += ' ';
                out += c.path;
                out += '\n';
                if (out.size() >= 64 * 1024) {
                    context.out(out);
                    out.clear();
                }
            });
            pump(fd.get(), decoder);
            context.out(out);
        }
        return 0;
    };
}

} // namespace layerd::cli
