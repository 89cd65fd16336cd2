// SPDX-License-Identifier: LGPL-2.1-or-later
// The directories one overlay is made of, opened as fds once, before anything
// is mounted: a stack may be mounted over its own lower dir, and from then on
// the daemon never resolves a path through its mountpoint.
#pragma once

#include "unique_fd.hpp"

#include <sys/types.h>

#include <atomic>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace layerd {

// Bad layer configuration; what() is one line naming the path and the reason.
class LayerError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

struct Layer {
    std::string path;   // as configured, for messages
    UniqueFd root;      // O_PATH | O_DIRECTORY
    UniqueFd mount_fd;  // O_RDONLY: open_by_handle_at() refuses O_PATH fds
    dev_t dev = 0;
    ino_t ino = 0;
    // The live upper; false forever once it is frozen by a snapshot.
    std::atomic<bool> writable{false};
    uint64_t ino_prefix = 0; // distinguishes filesystems when layers span several
};

struct LayerSetConfig {
    std::vector<std::string> lowers; // top first
    std::optional<std::string> upper;
    std::optional<std::string> work;
    std::string mountpoint;
    bool allow_nonempty_mountpoint = false;
    bool is_volatile = false;
};

class LayerSet {
public:
    // Opens and checks every directory; throws LayerError.
    static LayerSet open(const LayerSetConfig& config);

    // Opens one layer directory ("what" names it in errors); throws LayerError.
    static std::shared_ptr<Layer> open_layer(const std::string& what, const std::string& path, bool writable);
    // A new Layer on LAYER's directory, through its fds and never its path:
    // the path may lead into a mount over it by now. Throws LayerError.
    static std::shared_ptr<Layer> reopen_layer(const Layer& layer, bool writable);

    const Layer* upper() const { return layers.front()->writable ? layers.front().get() : nullptr; }
    // The inode number the overlay shows for object `ino` of `layer`.
    uint64_t overlay_ino(const Layer& layer, ino_t ino) const { return layer.ino_prefix | ino; }

    // Drops the volatile marker after a clean shutdown; 0 or -errno.
    int clear_volatile_marker() const;

    std::vector<std::shared_ptr<Layer>> layers; // [upper,] lowers top first
    UniqueFd work;                              // WORKDIR/work: copy-ups are built here
    bool is_volatile = false;
};

} // namespace layerd
