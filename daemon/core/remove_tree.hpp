// SPDX-License-Identifier: LGPL-2.1-or-later
#pragma once

namespace layerd {

// Removes NAME beneath dirfd, recursively when it is a directory, never
// following symlinks. Returns 0 (also when NAME is already gone) or -errno.
int remove_tree_at(int dirfd, const char* name) noexcept;

// Removes everything inside the directory dirfd, keeping the directory.
int clear_dir(int dirfd) noexcept;

} // namespace layerd
