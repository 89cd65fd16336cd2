// SPDX-License-Identifier: LGPL-2.1-or-later
// The state database (DESIGN §5): stacks, the layer tree, snapshots, pending
// rollbacks, resumable merges and an event log. It is the source of truth;
// the layer directories on disk are checked against it at start.
//
// Every method is one transaction, so a crash leaves the old state or the new
// one, never half. Several methods can be grouped into one atomic step with
// transaction(); inside it the methods become savepoints of the outer one.
// The store checks the invariants it can see (a layer in use is not deleted,
// a merge has exactly one child to merge into, ...) and throws StoreError;
// which transitions make sense is the layer tree's business.
#pragma once

#include "sqlite.hpp"

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace layerd {

enum class LayerState {
    Live,     // the writable upper of its stack
    Frozen,   // read-only, part of at least one view
    Merging,  // being merged into its only child (a row in merges says how far)
    Hidden,   // its snapshot is gone but it has several children
    Removing, // to be deleted from disk, then from the database
};

enum class SnapshotType { Single, Pre, Post };

enum class MergeState {
    Queued, // recorded, no entry moved yet
    Moving, // entries are being renamed into the child; safe to resume
};

std::string_view to_string(LayerState state);
std::string_view to_string(SnapshotType type);
std::string_view to_string(MergeState state);
std::optional<LayerState> layer_state_from_string(std::string_view s);
std::optional<SnapshotType> snapshot_type_from_string(std::string_view s);
std::optional<MergeState> merge_state_from_string(std::string_view s);

// The cleanup algorithms a snapshot may name; "" means none may remove it.
bool is_valid_cleanup(std::string_view cleanup);

struct LayerRecord {
    int64_t id = 0;
    std::string stack;
    std::optional<int64_t> parent; // nullopt: sits directly on the stack's lowers
    LayerState state = LayerState::Live;
    int64_t created = 0; // unix seconds
};

struct SnapshotRecord {
    std::string stack;
    uint32_t number = 0; // allocated by record_snapshot; never reused in a stack
    SnapshotType type = SnapshotType::Single;
    std::optional<uint32_t> pre_number; // set exactly for Post
    int64_t layer = 0;
    int64_t time = 0; // unix seconds
    uint32_t uid = 0;
    std::string description;
    std::string cleanup; // "", "number", "timeline" or "empty-pre-post"
    bool important = false;
    std::map<std::string, std::string> userdata;
};

// What update_snapshot changes; unset fields are kept. userdata, when set,
// replaces the whole map.
struct SnapshotChanges {
    std::optional<std::string> description;
    std::optional<std::string> cleanup;
    std::optional<std::map<std::string, std::string>> userdata;
    std::optional<bool> important;
};

struct MergeRecord {
    int64_t layer = 0;      // the parent being merged away
    int64_t into_layer = 0; // its only child, which receives the entries
    std::string stack;
    MergeState state = MergeState::Queued;
    int64_t started = 0;
};

struct EventRecord {
    int64_t id = 0;
    int64_t time = 0;
    std::string stack; // "" for daemon-wide events
    std::string kind;
    std::optional<uint32_t> snapshot;
    std::string detail;
};

// One schema step. Migration N turns a version N-1 database into version N;
// each runs in its own transaction together with the user_version bump.
struct Migration {
    int version = 0;
    std::string what; // for error messages
    std::function<void(Database&)> apply;
    // For table rebuilds (SQLite's 12-step ALTER): foreign keys are off while
    // it runs and `PRAGMA foreign_key_check` must come back clean to commit.
    bool foreign_keys_off = false;
};

class SnapshotStore {
public:
    // Opens PATH, creating it if needed, and brings its schema up to date.
    // A database with a newer schema than this build knows is refused.
    static SnapshotStore open(const std::string& path);
    // The same with another migration list; for tests of the mechanism.
    static SnapshotStore open(const std::string& path, const std::vector<Migration>& migrations);
    // The migrations this build knows, oldest first.
    static const std::vector<Migration>& schema_migrations();
    static int latest_schema_version() { return static_cast<int>(schema_migrations().size()); }

    SnapshotStore(SnapshotStore&&) noexcept;
    SnapshotStore& operator=(SnapshotStore&&) noexcept;
    ~SnapshotStore();

    // Runs F in one write transaction: everything F does through this store
    // commits together or not at all. F's result is returned; an exception
    // from F rolls everything back and propagates. Holds the store's lock
    // for the duration: keep slow work (copying data) out of F.
    template <class F>
    auto transaction(F&& f) -> std::invoke_result_t<F&>
    {
        return run_in(Transaction::Mode::Write, f);
    }
    // Runs F in one read transaction: a consistent view, blocking no writer.
    template <class F>
    auto read_transaction(F&& f) -> std::invoke_result_t<F&>
    {
        return run_in(Transaction::Mode::Read, f);
    }

    int schema_version();
    // Empty when `PRAGMA integrity_check` and `foreign_key_check` are clean.
    std::vector<std::string> integrity_problems();

    // ---- stacks ----
    // Creates the stack row if missing; true if it was created.
    bool ensure_stack(const std::string& name);
    bool has_stack(const std::string& name);
    std::vector<std::string> list_stacks();

    // ---- layers ----
    // A new layer of STACK on PARENT (same stack, not merging or removing).
    // Returns its id; ids are never reused, even after deletes.
    int64_t create_layer(const std::string& stack, std::optional<int64_t> parent, LayerState state);
    std::optional<LayerRecord> get_layer(int64_t id);
    std::vector<LayerRecord> list_layers(const std::string& stack); // by id
    std::vector<LayerRecord> children_of(int64_t layer);             // by id
    void set_layer_state(int64_t layer, LayerState state);
    // Refused (Conflict) while the layer has children, is used by a snapshot,
    // is its stack's live layer or pending rollback, or takes part in a merge.
    void delete_layer(int64_t layer);
    // LAYER must belong to STACK and be in state Live.
    void set_live_layer(const std::string& stack, int64_t layer);
    std::optional<int64_t> live_layer(const std::string& stack);

    // ---- snapshots ----
    // Allocates the stack's next number and stores SNAPSHOT with it (its
    // `number` field is ignored). The layer must belong to the stack and be
    // Frozen; a Post must name an existing Pre of the same stack.
    uint32_t record_snapshot(const SnapshotRecord& snapshot);
    std::optional<SnapshotRecord> get_snapshot(const std::string& stack, uint32_t number);
    std::vector<SnapshotRecord> list_snapshots(const std::string& stack); // by number
    // Throws NotFound if there is no such snapshot.
    void update_snapshot(const std::string& stack, uint32_t number, const SnapshotChanges& changes);
    // Deletes the row and its userdata, not the layer; false if absent. A
    // Post whose Pre is deleted keeps its pre_number, as in snapper.
    bool delete_snapshot_row(const std::string& stack, uint32_t number);
    std::vector<SnapshotRecord> snapshots_using_layer(int64_t layer);

    // ---- rollback at next mount ----
    void set_pending_rollback(const std::string& stack, int64_t layer);
    std::optional<int64_t> pending_rollback(const std::string& stack);
    void clear_pending_rollback(const std::string& stack);

    // ---- background merges ----
    // Records that LAYER will be merged into INTO_LAYER, its only child, and
    // marks LAYER Merging. LAYER must have no snapshot, not be live or a
    // pending rollback, and neither layer may be in another merge.
    void begin_merge(int64_t layer, int64_t into_layer);
    void set_merge_state(int64_t layer, MergeState state);
    std::vector<MergeRecord> merges_in_progress(); // oldest first
    // The entries have moved: the child takes LAYER's parent, LAYER becomes
    // Removing with no children, and the merge row goes. The caller then
    // removes LAYER's directory and calls delete_layer.
    void finish_merge(int64_t layer);

    // ---- event log (append-only) ----
    int64_t append_event(const std::string& stack, const std::string& kind, std::optional<uint32_t> snapshot,
                         const std::string& detail, std::optional<int64_t> time = std::nullopt);
    // The newest LIMIT events, newest first; of one stack or of all.
    std::vector<EventRecord> recent_events(const std::optional<std::string>& stack, size_t limit);
    // Keeps the newest KEEP events; the log must not grow without bound.
    void prune_events(size_t keep);

    // The raw connection, bypassing every invariant above: for tests only.
    Database& database_for_testing() { return state_->db; }

private:
    struct State {
        explicit State(Database d) : db(std::move(d)) {}
        Database db;
        // One connection serves all threads; SQLite transactions are per
        // connection, so a transaction holds this for its whole duration.
        // Recursive: the store's methods nest inside transaction().
        std::recursive_mutex mutex;
    };
    explicit SnapshotStore(std::unique_ptr<State> state);

    template <class F>
    auto run_in(Transaction::Mode mode, F& f) -> std::invoke_result_t<F&>
    {
        std::lock_guard lock(state_->mutex);
        Transaction tx(state_->db, mode);
        if constexpr (std::is_void_v<std::invoke_result_t<F&>>) {
            f();
            tx.commit();
        } else {
            decltype(auto) result = f();
            tx.commit();
            return result;
        }
    }

    std::unique_ptr<State> state_;
};

} // namespace layerd
