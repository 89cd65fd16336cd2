// SPDX-License-Identifier: LGPL-2.1-or-later
// What changed between two views that share their bottom layers: snapshot A
// is [A's own layers…, common layers…, lowers…], snapshot B is [B's own
// layers…, the same common layers…]. Only the layers a view does not share can
// make it differ, so the diff is driven by what those layers hold (files,
// whiteouts, opaque and redirected dirs), never by a walk of the whole tree:
// its cost follows the size of the non-shared layers, not of the view.
#pragma once

#include "layer_view.hpp"
#include "overlay_format.hpp"

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace layerd {

// One changed path, with snapper's status bits.
struct DiffEntry {
    enum Status : unsigned {
        created = 1u << 0,     // '+': only in B
        deleted = 1u << 1,     // '-': only in A
        content = 1u << 2,     // 'c': data, symlink target or device number differ
        type = 1u << 3,        // 't': file type differs (content is set too)
        permissions = 1u << 4, // 'p': mode bits (07777)
        owner = 1u << 5,       // 'u'
        group = 1u << 6,       // 'g'
        xattrs = 1u << 7,      // 'x': xattrs other than ACLs and the overlay's own
        acl = 1u << 8,         // 'a': system.posix_acl_access / _default
    };

    std::string path;    // "/a/b", from the view's root (the root itself is never reported)
    unsigned status = 0; // Status bits

    // snapper's six columns: "+.....", "-.....", "c.ug..", "t.....", ".p..x.":
    // [+-tc.] then p, u, g, x, a or '.'. 't' wins over 'c' in column one.
    std::string flags() const;
};

// Counters for callers and tests: how much work a diff did.
struct DiffStats {
    uint64_t lookups = 0;     // resolve_child calls, both views together
    uint64_t dirs_listed = 0; // layer or merged directories read
    uint64_t expanded = 0;    // directories whose whole subtree had to be compared
};

// Compares what two views show at one path (both present): Status bits
// (never created/deleted) into *status. Regular files are compared by size,
// then bytes, unless both are the same backing inode (then nothing differs).
// Returns 0 or -errno.
int compare_entries(const ViewEntry& a, const ViewEntry& b, const OverlayXattrs& xattrs, unsigned* status);

// Called once per changed path, in component-wise path order (parents before
// children, siblings by bytes; see path_less). Non-zero stops the diff and is
// returned by diff_views.
using DiffCallback = std::function<int(const DiffEntry& entry)>;

// Streams what changed from view A to view B. The last SHARED_SUFFIX fds of
// both vectors must be the same layers (checked: -EINVAL otherwise); the
// layers above them are the ones walked. Returns 0, the callback's non-zero
// value, or -errno.
int diff_views(const std::vector<int>& a_layers, const std::vector<int>& b_layers, size_t shared_suffix,
               const OverlayXattrs& xattrs, const DiffCallback& callback, DiffStats* stats = nullptr);

} // namespace layerd
