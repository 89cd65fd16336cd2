// SPDX-License-Identifier: LGPL-2.1-or-later
// One stack, mounted, with its snapshots (DESIGN §2, §5): the layer tree in
// the state database, the layer directories under the state dir, and the
// engine that serves the live view. Not reachable from a command yet: the
// daemon will own one per mounted stack.
#pragma once

#include "cleanup.hpp"
#include "layer_diff.hpp"
#include "overlay.hpp"
#include "snapshot_store.hpp"
#include "unique_fd.hpp"

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace layerd {

struct StackConfig {
    std::string name;
    std::vector<std::string> lowers; // top first, read-only
    std::string mountpoint;
    std::string state_dir; // layers in STATE/stacks/NAME/layers/ID, work in STATE/stacks/NAME/work
    XattrFormat xattr_format = XattrFormat::trusted;
    unsigned max_depth = 128; // frozen layers under the live one
    // No writable upper: the lowers are served as they are, and the stack
    // has no snapshots (its state, if any, is left as it is).
    bool read_only = false;
    // Copied-up data is not made durable before it is renamed into place
    // (kernel overlayfs's `volatile`); snapshots still freeze durable layers.
    bool volatile_upper = false;
    // The algorithms cleanup() may run (absent = off), and the fraction of
    // the state dir's filesystem to keep free.
    CleanupConfig cleanup{NumberCleanup{}, TimelineCleanup{}, EmptyPrePostCleanup{}};
    double free_limit = 0.2;
};

// What one cleanup() run did.
struct CleanupResult {
    std::vector<uint32_t> deleted; // snapshot numbers, in the order they went
    // One line per snapshot or leftover that could not be removed; the rest
    // went on regardless.
    std::vector<std::string> failures;
    unsigned layers_removed = 0; // abandoned layers and leftover dirs
};

// A refused snapshot operation; kind() says which D-Bus error it becomes.
class SnapshotError : public std::runtime_error {
public:
    enum class Kind { NoSuchSnapshot, DepthLimit, InvalidArgument, Io };
    SnapshotError(Kind kind, const std::string& what) : std::runtime_error(what), kind_(kind) {}
    Kind kind() const { return kind_; }

private:
    Kind kind_;
};

class MountedStack {
public:
    // Opens the stack's state (creating it), recovers what a crash left
    // half-done (a pending next-mount rollback is applied, merges resume),
    // then mounts the live view. Throws LayerError, StoreError, SnapshotError.
    MountedStack(SnapshotStore& store, StackConfig config);
    MountedStack(const MountedStack&) = delete;
    MountedStack& operator=(const MountedStack&) = delete;
    // Unmounts (lazily if busy).
    ~MountedStack();

    struct NewSnapshot {
        SnapshotType type = SnapshotType::Single;
        std::optional<uint32_t> pre; // for a Post
        std::string description;
        std::string cleanup;
        std::map<std::string, std::string> userdata;
        uint32_t uid = 0;
    };
    // Freezes the live layer as a new snapshot; what users see does not
    // change. Returns the snapshot's number. O(1) in the size of the layer.
    uint32_t create_snapshot(const NewSnapshot& snapshot);

    // Rolls the live view back to snapshot NUMBER. The state before is kept
    // as a new snapshot first (its number is returned), so it can be undone.
    // With next_mount the switch is recorded and happens at the next mount
    // (which keeps what changed meanwhile as one more snapshot).
    uint32_t rollback(uint32_t number, bool next_mount, uint32_t uid);

    // Deletes snapshots; their layers are removed or merged into their only
    // child. One that fails does not stop the rest: the failures are thrown
    // together at the end.
    void delete_snapshots(const std::vector<uint32_t>& numbers);

    // What changed from snapshot A to snapshot B (0 = the live view).
    void diff(uint32_t a, uint32_t b, const std::function<void(const DiffEntry&)>& out);

    // snapper's cleanup: ALGORITHM (every enabled one when nullopt) by its
    // limits; then, while the state dir's filesystem has less than
    // free_limit free, the enabled algorithms down to their lower limits;
    // then layers nothing uses any more and leftovers of interrupted merges.
    // NOW is the clock, in unix seconds. A disabled ALGORITHM deletes no
    // snapshot. Throws SnapshotError only when nothing could be done at all.
    CleanupResult cleanup(std::optional<CleanupAlgorithm> algorithm, int64_t now);

    // Makes each of PATHS ("/a/b", from the stack's root) in the live view
    // what it is in snapshot NUMBER: restored with its data, mode, owner,
    // times and xattrs (a directory with its whole subtree), or removed when
    // the snapshot has nothing there. Written through the mount, beneath its
    // root fd, so the engine copies up and whites out as for any write.
    void undo_change(uint32_t number, const std::vector<std::string>& paths);

    std::vector<SnapshotRecord> snapshots();
    // Frozen layers under the live one; 0 for a read-only stack.
    unsigned depth();
    const StackConfig& config() const { return config_; }
    // The keys a reload changes on a mounted stack (config_diff.hpp), in
    // force from the next snapshot or cleanup; from the thread that runs
    // those.
    void set_limits(const CleanupConfig& cleanup, double free_limit, unsigned max_depth);
    // What the start found and left alone, one line each, for the caller to
    // log: entries of layers/ the database does not know, layers whose
    // directory is gone.
    const std::vector<std::string>& recovery_notes() const { return recovery_notes_; }

private:
    std::string layer_dir(int64_t id) const;
    // Refuses what changes snapshots on a read-only stack.
    void require_upper() const;
    // The layer chain of LAYER, top first (LAYER, its parent, …).
    std::vector<int64_t> chain_of(int64_t layer);
    // Snapshot NUMBER's layer; 0 is the live one.
    int64_t layer_of_snapshot(uint32_t number);
    // The layer fds of snapshots A and B's views (0 = live), top first, the
    // last `shared` ones the same fds on both sides, as diff_views wants.
    struct Views {
        std::vector<UniqueFd> fds;
        std::vector<int> a, b;
        size_t shared = 0;
    };
    Views open_views(uint32_t a, uint32_t b);
    // diff_views of A and B; returns OUT's non-zero value that stopped it, or 0.
    int diff_until(uint32_t a, uint32_t b, const DiffCallback& out);
    // One pass of ALGORITHM by its limits, deleting what it selects.
    void run_cleanup_pass(CleanupAlgorithm algorithm, const CleanupConfig& config, int64_t now,
                          CleanupResult* result);
    void delete_for_cleanup(uint32_t number, CleanupResult* result);
    bool enough_free_space();
    // Whether snapshots A and B show the same tree (false when they cannot
    // be compared: such a pair is kept).
    bool diff_is_empty(uint32_t a, uint32_t b);
    // Abandoned layers and leftovers of crashes; returns how many went.
    unsigned remove_leftovers(CleanupResult* result);
    void recover();
    void note_unknown_layer_dirs();
    void mount();
    void unmount();
    void merge_into_child(int64_t layer, int64_t child);
    void remove_layer_if_unused(int64_t layer);
    void remove_layer_dir_and_row(int64_t layer);
    uint32_t freeze_live(const NewSnapshot& snapshot, int64_t* new_live);
    // In a transaction: the live layer becomes a snapshot (DESCRIPTION) and a
    // new live layer starts on PARENT. Returns the snapshot number and the
    // new layer.
    std::pair<uint32_t, int64_t> switch_live(int64_t parent, const std::string& description, uint32_t uid);
    int64_t mkdir_layer(int64_t id);

    SnapshotStore& store_;
    StackConfig config_;
    std::string stack_dir_;
    std::vector<std::string> recovery_notes_;
    // The configured lowers, top first, as the mount's first view opened
    // them: only their fds and identity are read here, which nothing
    // changes, and a rollback's view gets new Layer objects on them.
    std::vector<std::shared_ptr<const Layer>> lowers_;
    std::unique_ptr<fs::Overlay> overlay_;
    std::thread loop_;
    std::atomic<bool> loop_done_{false};
    int loop_status_ = 0;
};

} // namespace layerd
