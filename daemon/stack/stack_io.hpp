// SPDX-License-Identifier: LGPL-2.1-or-later
// What the files of daemon/stack share: failing with an Io SnapshotError that
// names what was being done, and opening the directories of a stack.
#pragma once

#include "mounted_stack.hpp"
#include "unique_fd.hpp"

#include <string>

namespace layerd {

[[noreturn]] void fail_io(const std::string& what, int err);
// A failure of the state database (a full disk at COMMIT, say) as the
// stack's: what a snapshot operation throws is a SnapshotError. The
// transaction that failed changed nothing.
[[noreturn]] void fail_store(const std::string& stack, const StoreError& e);

// open(PATH, FLAGS | O_DIRECTORY | O_CLOEXEC), or fail_io.
UniqueFd open_dir_or_fail(const std::string& path, int flags);

// The kernel's dirty pages into the live layer, from the calling thread,
// which must serve no request: through the root of the mount, the only path
// the daemon ever opens on it. A page whose write-back the engine refused is
// its file's error, which its writer gets from fsync() or close(); syncfs()
// reports it too, for any file of the mount, so that result is not ours.
void sync_mount(const std::string& mountpoint);

} // namespace layerd
