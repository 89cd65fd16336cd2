// SPDX-License-Identifier: LGPL-2.1-or-later
// Moving file data and metadata from one layer's object to another's.
#pragma once

#include <sys/types.h>

#include <functional>
#include <string_view>

namespace layerd {

// Copies the first `size` bytes of src to dst (both regular, dst empty):
// FICLONE when the filesystem shares extents, else copy_file_range per data
// segment (holes stay holes), else read/write. Returns 0 or -errno.
int copy_file_data(int src_fd, int dst_fd, off_t size) noexcept;

// Copies every xattr of src to dst (O_PATH fds allowed) for which keep(name)
// is true. Returns 0 or -errno; ENOTSUP on either side copies nothing.
int copy_xattrs(int src_fd, int dst_fd, const std::function<bool(std::string_view)>& keep);

} // namespace layerd
