// SPDX-License-Identifier: LGPL-2.1-or-later
// Kernel overlayfs semantics as a library over layer directory fds, with no
// FUSE: what a view (layers top first, as a read-only `lowerdir=L0:L1:…`
// mount would stack them) shows at a path, in a directory, in a whole tree.
//
// Resolution follows fs/overlayfs/namei.c (ovl_lookup): a name is looked up
// in each layer dir of its parent, top first; a whiteout (char 0/0) or a
// non-directory ends the merge, as does an opaque directory; a non-directory
// below a directory is hidden; a directory's `redirect` xattr renames it for
// the layers below: relative ("name": that name in the parent's lower dirs)
// or absolute ("/a/b": walked component by component from the root of each
// layer below, where every component may itself be a whiteout, opaque, or
// redirected again). The bottom layer's xattrs are never read, as the kernel
// never reads them.
//
// Everything is resolved one component at a time beneath a directory fd and
// no symlink is ever followed, so paths longer than PATH_MAX work and nothing
// in a layer can reach outside it. Not supported (layerd never writes them):
// metacopy files, data-only layers, "xwhiteouts" (overlay.opaque=x).
#pragma once

#include "overlay_format.hpp"
#include "unique_fd.hpp"

#include <dirent.h>
#include <sys/stat.h>

#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace layerd {

// One layer's object behind a view entry.
struct LayerObject {
    int layer = -1;          // index into the view's layers, 0 = top
    UniqueFd fd;             // O_PATH
    dev_t dev = 0;           // identity of the backing object
    ino_t ino = 0;
    // Reached under another path than the view's, through a redirect here or
    // in an ancestor (or possibly so: every object found through an absolute
    // redirect counts). Its layer holds it elsewhere than the view shows it;
    // what copies or moves entries between layers needs to know.
    bool translated = false;
};

// What a view shows at one path, and where it comes from.
struct ViewEntry {
    struct stat st {};          // the top object's (st_dev/st_ino name the backing object)
    std::string symlink_target; // for a symlink
    // Top first. A non-directory has exactly one; a directory lists every
    // layer dir merged into it (its children are looked up in these).
    std::vector<LayerObject> objects;

    int layer() const noexcept { return objects.empty() ? -1 : objects.front().layer; }
    int fd() const noexcept { return objects.empty() ? -1 : objects.front().fd.get(); }
    bool is_dir() const noexcept { return !objects.empty() && S_ISDIR(st.st_mode); }
};

// The view's root: every layer's root dir merged (the kernel ignores opaque
// and redirect on layer roots). `layers` are directory fds (O_PATH is fine),
// top first; they are borrowed, never closed. Returns 0 or -errno.
int view_root(const std::vector<int>& layers, ViewEntry* out);

// Looks up NAME in directory DIR of the view. -ENOENT when nothing is there
// or a whiteout hides it; -ENAMETOOLONG past NAME_MAX; -EINVAL for a bad name
// or a malformed redirect xattr; -ENOTDIR when DIR is no directory.
int resolve_child(const std::vector<int>& layers, const ViewEntry& dir, std::string_view name,
                  const OverlayXattrs& xattrs, ViewEntry* out);

// Resolves "a/b/c" (a leading '/' and repeated '/' are fine; "." and ".."
// are -EINVAL) from the root, one component at a time. An intermediate
// component that is not a directory (a symlink included: none is followed)
// gives -ENOTDIR. The empty path or "/" is the root.
int resolve_path(const std::vector<int>& layers, std::string_view path, const OverlayXattrs& xattrs,
                 ViewEntry* out);

// The merged listing of a directory of the view: the union of its layer
// dirs' names where the topmost occurrence is not a whiteout; no "." or "..".
// Sorted by bytes. Returns 0 or -errno.
int list_dir(const ViewEntry& dir, std::vector<std::string>* names);

// Visits every entry below the root, parents before children, siblings sorted
// by bytes (so paths come in component-wise order). Paths start with '/'.
// The entry (and its fds) lives only during the call. A callback returning
// non-zero stops the walk; walk_view returns that value. Entries that vanish
// while walking (a live layer) are skipped.
using WalkCallback = std::function<int(const std::string& path, const ViewEntry& entry)>;
int walk_view(const std::vector<int>& layers, const OverlayXattrs& xattrs, const WalkCallback& callback);

// One raw entry of one layer directory: what is on disk, whiteouts included.
struct LayerDirEntry {
    std::string name;
    unsigned char type; // DT_*; DT_WHT for a whiteout
};
// Lists one layer directory (no "." or ".."), in the filesystem's order.
int read_layer_dir(int dir_fd, std::vector<LayerDirEntry>* out);

// The xattrs a view shows for an entry: its top object's, minus the
// overlay's private ones. Sorted by name. Returns 0 or -errno.
using XattrList = std::vector<std::pair<std::string, std::string>>;
int view_xattrs(const ViewEntry& entry, const OverlayXattrs& xattrs, XattrList* out);

// Component-wise path order ("/a" < "/a/z" < "/a-b"): the order walks and
// diffs produce.
bool path_less(std::string_view a, std::string_view b) noexcept;

} // namespace layerd
