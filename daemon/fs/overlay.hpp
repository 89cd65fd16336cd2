// SPDX-License-Identifier: LGPL-2.1-or-later
// The overlay filesystem engine: kernel overlayfs semantics over a LayerSet,
// served through the libfuse3 low-level API. Every op replies exactly once.
#pragma once

#include "handles.hpp"
#include "layer_set.hpp"
#include "merge_gate.hpp"
#include "node_locks.hpp"
#include "node_table.hpp"
#include "overlay_format.hpp"

#include <fuse_lowlevel.h>

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace layerd::fs {

struct OverlayOptions {
    XattrFormat xattr_format = XattrFormat::trusted;
    // Entry and attribute timeouts: long, since only the overlay changes its
    // layers and it tells the kernel when it does.
    double timeout = 86400.0;
    bool writeback_cache = true;
};

class Overlay {
public:
    Overlay(LayerSet layers, OverlayOptions options);
    Overlay(const Overlay&) = delete;
    Overlay& operator=(const Overlay&) = delete;

    static const fuse_lowlevel_ops& operations();

    const LayerSet& layers() const { return layers_; }
    size_t node_count() const { return nodes_.size(); }

    // The session serving this overlay, for the kernel cache invalidations
    // a swap needs. Set by mount_and_serve().
    // Cleared before the session is destroyed, under the lock notifications
    // hold: a swap never writes to a session that is going away.
    void attach(fuse_session* session)
    {
        std::lock_guard lock(session_mutex_);
        session_ = session;
    }

    // --- swaps.cpp: what snapshots do to a live mount. Call from a thread
    // that serves no FUSE request, after syncfs() of the mountpoint (so the
    // kernel's dirty pages are in the layer being frozen).
    //
    // Freezes the live upper and continues on `next` (an empty directory on
    // the upper's filesystem): what users see does not change; the frozen
    // layer is durable and never changes again; a later write to a file of
    // it, also through an fd opened before, copies the file up into `next`.
    int freeze_upper(std::shared_ptr<Layer> next);
    // Serves `layers` ([new empty upper, …] top first) from now on, freezing
    // the current upper: every path gets a new node, while files and
    // mappings opened before keep reading what they opened (and can no longer
    // be written). Tells the kernel its entries of the root are stale (expired
    // where it supports that, so the cost does not grow with what it cached
    // below them): every path's next lookup reaches the new view.
    int replace_view(std::vector<std::shared_ptr<Layer>> layers);
    std::shared_ptr<const View> current_view() const
    {
        std::lock_guard lock(view_mutex_);
        return view_;
    }

    // Merging a deleted snapshot's frozen layer P into its only child C
    // (core merge_layer, DESIGN §2 "delete") while both are in the view.
    // Runs one step of the merge (a rename or xattr change that keeps the
    // view, or a grouped step consistent at its end) so that every lookup,
    // listing and listing hint of the engine sees the layers wholly before
    // or wholly after it (MergeGate). Returns what the step returned. Nodes
    // stay valid across steps: their stacks name objects, which keep their
    // inodes when they move from P to C. Call from a thread that serves no
    // FUSE request, holding no engine lock; lookups wait while a step runs.
    int run_merge_step(const std::function<int()>& step);
    // After the merge, P's directory gone: P (known by the dev and ino of
    // its root) leaves the view. Publishes a view of the same generation
    // without it and rewrites the stacks that name P's objects: what the
    // merge moved into C is C's, P's directories it merged into C's are
    // gone. Nodes keep their nodeids and objects, so the kernel notices
    // nothing. No copy-up (change_mutex_) and no lookup (the gate) runs
    // during the rewrite; a lookup that resolved before it and made its
    // node after fixes that node itself (drops_). A stack that cannot be
    // rewritten, or one of an older generation, still works: its own view
    // keeps P's Layer alive, and P's directories that are gone read as
    // empty (Stack::gone_after_merge). 0 also when P is not in the view;
    // -EINVAL when it is its top.
    int drop_merged_layer(dev_t dev, ino_t ino);

    // FUSE operations (ops_*.cpp).
    void init(fuse_conn_info* conn);
    void lookup(fuse_req_t req, fuse_ino_t parent, const char* name);
    void forget(fuse_ino_t ino, uint64_t nlookup);
    void getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
    void setattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set, fuse_file_info* fi);
    void readlink(fuse_req_t req, fuse_ino_t ino);
    void statfs(fuse_req_t req, fuse_ino_t ino);

    void mknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev);
    void mkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode);
    void symlink(fuse_req_t req, const char* target, fuse_ino_t parent, const char* name);
    void link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t new_parent, const char* new_name);
    void create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, fuse_file_info* fi);
    void unlink(fuse_req_t req, fuse_ino_t parent, const char* name);
    void rmdir(fuse_req_t req, fuse_ino_t parent, const char* name);
    void rename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t new_parent,
                const char* new_name, unsigned int flags);

    void open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
    void read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi);
    void write_buf(fuse_req_t req, fuse_ino_t ino, fuse_bufvec* bufv, off_t off, fuse_file_info* fi);
    void release(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
    void fsync(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info* fi);
    void fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length, fuse_file_info* fi);
    void lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence, fuse_file_info* fi);

    void opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
    void readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi, bool plus);
    void releasedir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
    void fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info* fi);

    void setxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size, int flags);
    void getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size);
    void listxattr(fuse_req_t req, fuse_ino_t ino, size_t size);
    void removexattr(fuse_req_t req, fuse_ino_t ino, const char* name);

private:
    // --- lookup.cpp: resolving names across the layers
    // Opens PATH beneath dirfd in `layer` as a new backing object.
    int open_backing(const Layer& layer, int dirfd, const char* path, Backing* out, struct stat* st) const;
    // An fd of a backing object for as long as the lease lives.
    FdLease fd_of(const Backing& b) const { return fds_.lease(b.object); }
    // Resolves NAME in the directory whose stack is `dir`: 0 with the child's
    // stack and the stat of its top object, -ENOENT, or another -errno.
    // `first`: the dir's read-only layers above this index did not hold
    // NAME when the listing of gate seq `listed_at` was made (it was listed
    // from that layer; only a merge step changes read-only layers).
    int resolve_child(const Stack& dir, std::string_view name, std::shared_ptr<Stack>* child,
                      struct stat* st, size_t first = 0, uint64_t listed_at = 0) const;
    // One try of it, which may see a merge step half done.
    int resolve_child_once(const Stack& dir, std::string_view name, std::shared_ptr<Stack>* child,
                           struct stat* st, size_t first) const;
    // Counts a lookup of the node for a resolved child (creating it).
    std::shared_ptr<Node> node_for(const std::shared_ptr<Node>& parent, std::string_view name,
                                   std::shared_ptr<Stack> stack, const struct stat& st);
    // The node of a resolved child without counting a lookup: the table's, or
    // a transient one when the kernel holds none.
    std::shared_ptr<Node> existing_node(const std::shared_ptr<Node>& parent, std::string_view name,
                                        std::shared_ptr<Stack> stack, const struct stat& st);
    uint64_t st_ino_of(const Stack& stack, const struct stat& top) const;
    NodeKey key_of(const Node* parent, std::string_view name, const Backing& top, const struct stat& st) const;
    // stat of a node as the overlay shows it.
    int stat_node(const Node& node, const Stack& stack, struct stat* st) const;
    int stat_node(const Node& node, struct stat* st) const { return stat_node(node, *node.stack(), st); }
    // Looks up a child the overlay just made or moved and fills `e` (+1 lookup).
    int entry_for(const std::shared_ptr<Node>& parent, const char* name, fuse_entry_param* e, size_t first = 0,
                  uint64_t listed_at = 0);
    void reply_entry(fuse_req_t req, const std::shared_ptr<Node>& parent, const char* name);
    // True if NAME exists (not whited out) in a lower layer of dir.
    bool in_lower(const Stack& dir, const char* name) const;
    bool in_lower_once(const Stack& dir, const char* name) const;
    // STACK without the layers drop_merged_layer() took out of VIEW (its
    // current view): in *out, or nullptr when it names none of them (or is
    // of another generation: old views keep their layers). 0 or -errno.
    int without_dropped(const Stack& stack, const std::shared_ptr<const View>& view,
                        std::shared_ptr<const Stack>* out) const;

    // --- copy_up.cpp
    // Makes the node's top object live in the upper layer (with its parents),
    // keeping nodeid, st_ino, mode, owner, times and xattrs. Directories get
    // an empty upper dir that merges with the lower ones. 0 or -errno.
    int copy_up(const std::shared_ptr<Node>& node, bool with_data = true);
    // The upper dir fd of a directory node, copying it up first.
    int upper_dir(const std::shared_ptr<Node>& dir, std::shared_ptr<const Stack>* stack);
    // Builds a copy of the node's top object as work/tmp, with its metadata.
    int build_copy_of(const Node& node, const Stack& stack, bool with_data, const std::string& tmp, UniqueFd* copy,
                      struct stat* st);
    // OLD's layers under CURRENT's upper (OLD itself when it has it): the
    // view of an orphan's copy, which must keep the layer it lives in.
    static std::shared_ptr<const View> view_with_upper(const std::shared_ptr<const View>& old,
                                                       const std::shared_ptr<const View>& current);
    // Makes the copy the node's top object (an orphan has no name left).
    void publish_copy(Node& node, const Stack& old, const std::shared_ptr<const View>& view, UniqueFd copy,
                      const struct stat& ust, bool orphan, std::string lower_path);
    // A fresh name in work/ for an object being built.
    std::string temp_name();
    int sync_file(int fd) const;

    // --- namespace.cpp helpers
    struct NewObject;
    int make_object(const std::shared_ptr<Node>& parent, const char* name, const NewObject& obj, UniqueFd* opened);
    int remove_entry(const std::shared_ptr<Node>& parent, const char* name, bool dir);
    int rename_entry(const std::shared_ptr<Node>& op, const char* name, const std::shared_ptr<Node>& np,
                     const char* newname, unsigned flags);
    int merged_dir_is_empty(const Stack& dir) const;
    // NODE's entry left the view (unlink, rmdir, replaced by a rename):
    // marks it unlinked once nothing of the view reaches its object.
    void note_removed(Node& node);
    int clear_upper_dir(int parent_fd, const char* name);

    // --- readdir.cpp
    // The merged listing of a dir; *listed_at: the gate seq it was made at.
    int list_merged(const Stack& dir, std::vector<DirEntry>* out, uint64_t* listed_at = nullptr) const;
    int list_merged_once(const Stack& dir, std::vector<DirEntry>* out) const;

    // --- io.cpp
    // The flags a layer file is opened with for an open(2) with `flags`.
    int open_flags_for(int flags) const;
    // The handle's fd for one request, reopened on the node's current object
    // (copied up first for a write); the returned lock keeps it open.
    int handle_fd(FileHandle& fh, bool for_write, std::shared_lock<std::shared_mutex>* lock);
    // The same for the open file `fh` names: 0 with `out` set, or -errno.
    struct OpenFd {
        std::shared_ptr<FileHandle> handle;
        std::shared_lock<std::shared_mutex> lock;
        int fd = -1;
    };
    int open_fd(uint64_t fh, bool for_write, OpenFd* out);

    std::shared_ptr<Node> node(fuse_ino_t ino) const { return nodes_.get(ino); }
    bool read_only() const { return current_view()->upper() == nullptr; }
    // Held (shared) by every operation that changes the upper layer, so a
    // freeze or a swap (exclusive) happens between operations, never inside.
    std::shared_lock<std::shared_mutex> changing() { return std::shared_lock(change_mutex_); }
    std::shared_ptr<Stack> root_stack(const std::shared_ptr<const View>& view);

    LayerSet layers_;
    OverlayOptions options_;
    OverlayXattrs xattrs_;
    mutable FdCache fds_; // outlives every node and handle below
    NodeTable nodes_;
    NodeLocks locks_;
    HandleTable<FileHandle> files_;
    HandleTable<DirHandle> dirs_;
    std::atomic<uint64_t> temp_counter_{0};
    mutable std::mutex view_mutex_;
    std::shared_ptr<const View> view_; // guarded by view_mutex_
    std::shared_mutex change_mutex_;
    std::atomic<uint64_t> freezes_{0}; // bumped by every freeze and swap
    // Merge steps against the readers of the layers (see MergeGate for its
    // place in the lock order).
    MergeGate gate_;
    // Bumped by drop_merged_layer() before it rewrites the stacks: a lookup
    // that resolved before and made its node after fixes the node itself.
    std::atomic<uint64_t> drops_{0};
    // The kernel can expire an entry without dropping what it cached below
    // it (FUSE_CAP_EXPIRE_ONLY): set at INIT, read by swaps.
    std::atomic<bool> expire_only_{false};
    std::mutex session_mutex_;
    fuse_session* session_ = nullptr; // guarded by session_mutex_
    uid_t my_uid_;
    gid_t my_gid_;
};

} // namespace layerd::fs
