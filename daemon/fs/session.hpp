// SPDX-License-Identifier: LGPL-2.1-or-later
// Mounting an Overlay and serving it until it is unmounted.
#pragma once

#include "overlay.hpp"

#include <string>
#include <vector>

namespace layerd::fs {

struct MountConfig {
    std::string mountpoint;
    std::string fsname = "layerd-fs";
    // Options for libfuse's mount and session (allow_other, ro, nosuid, …);
    // unknown ones make mount_and_serve fail before anything is mounted.
    std::vector<std::string> options;
    bool foreground = false;
    bool debug = false;
    bool single_thread = false;
    // SIGINT/SIGTERM/SIGHUP end the loop; off when the overlay is served
    // from inside a process that owns its signals (the daemon, tests).
    bool signal_handlers = true;
};

// Mounts, goes to the background (unless foreground) only once the mount is
// live, serves with a thread pool until umount or SIGTERM/SIGINT, unmounts.
// Returns a process exit status; libfuse has printed why on failure.
int mount_and_serve(Overlay& overlay, const MountConfig& config);

} // namespace layerd::fs
