// SPDX-License-Identifier: LGPL-2.1-or-later
#include "verbs.hpp"

#include <array>

namespace layerd::cli {

namespace {

constexpr std::array table{
    Verb{"stacks", "List the configured stacks", declare_stacks},
    Verb{"status", "Show a stack's state, or every stack's", declare_status},
    Verb{"mount", "Mount a stack", declare_mount},
    Verb{"unmount", "Unmount a stack (lazily when it is busy)", declare_unmount},
    Verb{"snapshot", "Take a snapshot of a stack", declare_snapshot},
    Verb{"snapshots", "List a stack's snapshots", declare_snapshots},
    Verb{"delete", "Delete snapshots", declare_delete},
    Verb{"rollback", "Make the stack what it was in a snapshot", declare_rollback},
    Verb{"diff", "Show what changed between two snapshots", declare_diff},
    Verb{"undo-change", "Restore paths from a snapshot into the live view", declare_undo_change},
    Verb{"cleanup", "Run the cleanup algorithms of a stack or of all stacks", declare_cleanup},
    Verb{"timeline", "Take a timeline snapshot of the stacks named", declare_timeline},
    Verb{"package-snapshot", "Pre or post snapshot of a package operation (the apt hook)", declare_package_snapshot},
};

} // namespace

std::span<const Verb> verbs()
{
    return table;
}

} // namespace layerd::cli
