// SPDX-License-Identifier: LGPL-2.1-or-later
// layerd-fs: the overlay engine as a standalone FUSE filesystem, a drop-in
// where fuse-overlayfs is used:
//   layerd-fs -o lowerdir=L1:L2,upperdir=U,workdir=W MOUNTPOINT
//   mount -t fuse.layerd-fs layerd-fs MOUNTPOINT -o lowerdir=…   (mount.fuse3)
#include "layer_set.hpp"
#include "overlay.hpp"
#include "session.hpp"

#include <fuse_opt.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

constexpr const char usage[] =
    "usage: layerd-fs [SOURCE] MOUNTPOINT -o lowerdir=DIR[:DIR…][,upperdir=DIR,workdir=DIR][,OPTION…]\n"
    "\n"
    "A userspace overlay filesystem with kernel overlayfs's semantics and on-disk format.\n"
    "\n"
    "  -o lowerdir=L1:L2   read-only layers, leftmost on top (':' and ',' escaped with '\\')\n"
    "  -o upperdir=DIR     the writable layer; without it the mount is read-only\n"
    "  -o workdir=DIR      scratch dir on the upper's filesystem (copy-ups are built there)\n"
    "  -o userxattr        overlay xattrs in user.overlay.* instead of trusted.overlay.*\n"
    "  -o volatile         skip fsync of copied-up data; an unclean shutdown is then\n"
    "                      detected at the next mount\n"
    "  -o nonempty         allow a non-empty mountpoint that is not one of the layers\n"
    "  -o noallow_other    as root, do not let other users see the mount\n"
    "  -o OPTION           any libfuse mount option (ro, nosuid, nodev, …)\n"
    "  -f                  stay in the foreground\n"
    "  -d                  debug output (implies -f)\n"
    "  -s                  serve requests from one thread\n"
    "  -h, --help          this text\n"
    "  -V, --version       the version\n";

struct Cli {
    Cli() = default;
    Cli(const Cli&) = delete;
    Cli& operator=(const Cli&) = delete;
    ~Cli()
    {
        // fuse_opt_parse strdup()s the values of "name=%s" options.
        std::free(lowerdir);
        std::free(upperdir);
        std::free(workdir);
    }
    char* lowerdir = nullptr;
    char* upperdir = nullptr;
    char* workdir = nullptr;
    int userxattr = 0;
    int is_volatile = 0;
    int nonempty = 0;
    int noallow_other = 0;
    bool foreground = false;
    bool debug = false;
    bool single_thread = false;
    bool help = false;
    bool version = false;
    std::vector<std::string> positional;
    std::vector<std::string> fuse_options;
};

enum Key { key_foreground, key_debug, key_single_thread, key_help, key_version, key_discard };

#define CLI_OPT(t, field, value) {t, offsetof(Cli, field), value}
const fuse_opt cli_opts[] = {
    CLI_OPT("lowerdir=%s", lowerdir, 0),
    CLI_OPT("upperdir=%s", upperdir, 0),
    CLI_OPT("workdir=%s", workdir, 0),
    CLI_OPT("userxattr", userxattr, 1),
    CLI_OPT("volatile", is_volatile, 1),
    CLI_OPT("nonempty", nonempty, 1),
    CLI_OPT("noallow_other", noallow_other, 1),
    FUSE_OPT_KEY("-f", key_foreground),
    FUSE_OPT_KEY("-d", key_debug),
    FUSE_OPT_KEY("-s", key_single_thread),
    FUSE_OPT_KEY("debug", key_debug),
    FUSE_OPT_KEY("-h", key_help),
    FUSE_OPT_KEY("--help", key_help),
    FUSE_OPT_KEY("-V", key_version),
    FUSE_OPT_KEY("--version", key_version),
    // What mount(8) and fstab pass that is no filesystem option.
    FUSE_OPT_KEY("rw", key_discard),
    FUSE_OPT_KEY("defaults", key_discard),
    FUSE_OPT_KEY("auto", key_discard),
    FUSE_OPT_KEY("noauto", key_discard),
    FUSE_OPT_KEY("user", key_discard),
    FUSE_OPT_KEY("nouser", key_discard),
    FUSE_OPT_KEY("users", key_discard),
    FUSE_OPT_KEY("_netdev", key_discard),
    FUSE_OPT_KEY("nofail", key_discard),
    FUSE_OPT_END,
};
#undef CLI_OPT

int on_option(void* data, const char* arg, int key, fuse_args*)
{
    auto* cli = static_cast<Cli*>(data);
    switch (key) {
    case key_foreground:
        cli->foreground = true;
        return 0;
    case key_debug:
        cli->debug = cli->foreground = true;
        return 0;
    case key_single_thread:
        cli->single_thread = true;
        return 0;
    case key_help:
        cli->help = true;
        return 0;
    case key_version:
        cli->version = true;
        return 0;
    case key_discard:
        return 0;
    case FUSE_OPT_KEY_NONOPT:
        cli->positional.emplace_back(arg);
        return 0;
    case FUSE_OPT_KEY_OPT:
        if (std::strncmp(arg, "x-", 2) == 0 || std::strncmp(arg, "comment=", 8) == 0)
            return 0; // userspace mount(8) annotations
        if (arg[0] == '-') {
            std::fprintf(stderr, "layerd-fs: unknown option '%s'\n", arg);
            return -1;
        }
        cli->fuse_options.emplace_back(arg); // libfuse's to judge
        return 0;
    default:
        return 1;
    }
}

// Splits a lowerdir list at unescaped ':' ("\:" and "\\" escape).
std::vector<std::string> split_lowers(const char* list)
{
    std::vector<std::string> out(1);
    for (const char* p = list; *p; ++p) {
        if (*p == '\\' && p[1]) {
            out.back() += *++p;
        } else if (*p == ':') {
            out.emplace_back();
        } else {
            out.back() += *p;
        }
    }
    return out;
}

// A node holds an O_PATH fd per layer object it stands for, so the kernel's
// inode cache, not an fd limit, bounds how many nodes there are: as root,
// raise the limit to the system's ceiling (nr_open).
void raise_fd_limit()
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    rlim_t ceiling = rl.rlim_max;
    if (FILE* f = std::fopen("/proc/sys/fs/nr_open", "re")) {
        unsigned long long nr_open = 0;
        if (std::fscanf(f, "%llu", &nr_open) == 1 && nr_open > ceiling)
            ceiling = static_cast<rlim_t>(nr_open);
        std::fclose(f);
    }
    struct rlimit want = {ceiling, ceiling};
    if (setrlimit(RLIMIT_NOFILE, &want) != 0) { // not privileged: the soft one up to the hard one
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int run(int argc, char** argv)
{
    Cli cli;
    fuse_args args = FUSE_ARGS_INIT(argc, argv);
    if (fuse_opt_parse(&args, &cli, cli_opts, on_option) != 0)
        return 1;
    fuse_opt_free_args(&args);
    if (cli.help) {
        std::fputs(usage, stdout);
        return 0;
    }
    if (cli.version) {
        std::printf("layerd-fs %s (libfuse %s)\n", LAYERD_VERSION, fuse_pkgversion());
        return 0;
    }
    if (cli.positional.empty() || cli.positional.size() > 2) {
        std::fprintf(stderr, "layerd-fs: %s; see layerd-fs --help\n",
                     cli.positional.empty() ? "no mountpoint given" : "too many arguments");
        return 1;
    }
    if (!cli.lowerdir) {
        std::fprintf(stderr, "layerd-fs: no lowerdir given (-o lowerdir=DIR[:DIR…])\n");
        return 1;
    }

    layerd::LayerSetConfig config;
    config.lowers = split_lowers(cli.lowerdir);
    if (cli.upperdir)
        config.upper = cli.upperdir;
    if (cli.workdir)
        config.work = cli.workdir;
    config.mountpoint = cli.positional.back();
    config.allow_nonempty_mountpoint = cli.nonempty;
    config.is_volatile = cli.is_volatile;

    // Modes come from the caller, already masked by its umask.
    umask(0);
    raise_fd_limit();

    layerd::fs::OverlayOptions options;
    options.xattr_format = cli.userxattr ? layerd::XattrFormat::user : layerd::XattrFormat::trusted;

    layerd::fs::MountConfig mount;
    mount.mountpoint = config.mountpoint;
    if (cli.positional.size() == 2)
        mount.fsname = cli.positional.front();
    mount.foreground = cli.foreground;
    mount.debug = cli.debug;
    mount.single_thread = cli.single_thread;
    mount.options = cli.fuse_options;
    if (geteuid() == 0 && !cli.noallow_other)
        mount.options.emplace_back("allow_other");

    try {
        layerd::fs::Overlay overlay(layerd::LayerSet::open(config), options);
        int status = layerd::fs::mount_and_serve(overlay, mount);
        if (int r = overlay.layers().clear_volatile_marker(); r < 0)
            std::fprintf(stderr, "layerd-fs: cannot clear the volatile marker: %s\n", std::strerror(-r));
        return status;
    } catch (const layerd::LayerError& e) {
        std::fprintf(stderr, "layerd-fs: %s\n", e.what());
        return 1;
    }
}

} // namespace

int main(int argc, char** argv)
{
    return run(argc, argv);
}
