// SPDX-License-Identifier: LGPL-2.1-or-later
#include "snapshot_store.hpp"

#include <algorithm>
#include <array>
#include <cstdint>
#include <ctime>
#include <fmt/format.h>
#include <utility>

namespace layerd {

namespace {

using Kind = StoreError::Kind;

// ---- enums as stored ----

constexpr std::array<std::pair<LayerState, std::string_view>, 5> layer_states{{
    {LayerState::Live, "live"},
    {LayerState::Frozen, "frozen"},
    {LayerState::Merging, "merging"},
    {LayerState::Hidden, "hidden"},
    {LayerState::Removing, "removing"},
}};

constexpr std::array<std::pair<SnapshotType, std::string_view>, 3> snapshot_types{{
    {SnapshotType::Single, "single"},
    {SnapshotType::Pre, "pre"},
    {SnapshotType::Post, "post"},
}};

constexpr std::array<std::pair<MergeState, std::string_view>, 2> merge_states{{
    {MergeState::Queued, "queued"},
    {MergeState::Moving, "moving"},
}};

template <class E, size_t N>
std::string_view name_of(const std::array<std::pair<E, std::string_view>, N>& table, E value)
{
    for (const auto& [v, name] : table)
        if (v == value)
            return name;
    return "?";
}

template <class E, size_t N>
std::optional<E> value_of(const std::array<std::pair<E, std::string_view>, N>& table, std::string_view s)
{
    for (const auto& [v, name] : table)
        if (name == s)
            return v;
    return std::nullopt;
}

// ---- schema ----

// Version 1. The CHECKs and composite foreign keys repeat the invariants the
// C++ checks, so a bug elsewhere cannot store a state the code cannot read:
// a layer's parent, a stack's live layer and a snapshot's layer all belong
// to the same stack, because the foreign keys include the stack's name.
constexpr std::string_view schema_v1 = R"sql(
CREATE TABLE stacks (
    name TEXT PRIMARY KEY NOT NULL,
    -- the next snapshot number; only grows, so numbers are never reused
    next_snapshot INTEGER NOT NULL DEFAULT 1 CHECK (next_snapshot >= 1),
    live_layer INTEGER,
    -- a layer to roll back to at the next mount
    pending_rollback INTEGER,
    FOREIGN KEY (live_layer, name) REFERENCES layers (id, stack),
    FOREIGN KEY (pending_rollback, name) REFERENCES layers (id, stack)
) STRICT;

CREATE TABLE layers (
    -- AUTOINCREMENT: an id is never reused, even after the newest is deleted
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    stack TEXT NOT NULL REFERENCES stacks (name) ON DELETE CASCADE,
    -- NULL: sits directly on the stack's lower directories
    parent INTEGER CHECK (parent <> id),
    state TEXT NOT NULL CHECK (state IN ('live', 'frozen', 'merging', 'hidden', 'removing')),
    created INTEGER NOT NULL,
    UNIQUE (id, stack),
    FOREIGN KEY (parent, stack) REFERENCES layers (id, stack)
) STRICT;
CREATE INDEX layers_by_stack ON layers (stack, id);
CREATE INDEX layers_by_parent ON layers (parent, stack);
CREATE INDEX stacks_by_live_layer ON stacks (live_layer);
CREATE INDEX stacks_by_pending_rollback ON stacks (pending_rollback);

CREATE TABLE snapshots (
    stack TEXT NOT NULL REFERENCES stacks (name) ON DELETE CASCADE,
    number INTEGER NOT NULL CHECK (number BETWEEN 1 AND 4294967295),
    type TEXT NOT NULL CHECK (type IN ('single', 'pre', 'post')),
    -- no foreign key: a post outlives its deleted pre, as in snapper
    pre_number INTEGER CHECK (pre_number BETWEEN 1 AND 4294967295 AND pre_number < number),
    layer INTEGER NOT NULL,
    time INTEGER NOT NULL,
    uid INTEGER NOT NULL CHECK (uid BETWEEN 0 AND 4294967295),
    description TEXT NOT NULL DEFAULT '',
    cleanup TEXT NOT NULL DEFAULT '' CHECK (cleanup IN ('', 'number', 'timeline', 'empty-pre-post')),
    important INTEGER NOT NULL DEFAULT 0 CHECK (important IN (0, 1)),
    PRIMARY KEY (stack, number),
    FOREIGN KEY (layer, stack) REFERENCES layers (id, stack),
    CHECK ((type = 'post') = (pre_number IS NOT NULL))
) STRICT;
CREATE INDEX snapshots_by_layer ON snapshots (layer, stack);

CREATE TABLE userdata (
    stack TEXT NOT NULL,
    number INTEGER NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (stack, number, key),
    FOREIGN KEY (stack, number) REFERENCES snapshots (stack, number) ON DELETE CASCADE
) STRICT;

-- Background merges in progress, so a crash mid-merge resumes.
CREATE TABLE merges (
    layer INTEGER PRIMARY KEY REFERENCES layers (id) ON DELETE CASCADE,
    into_layer INTEGER NOT NULL UNIQUE REFERENCES layers (id) ON DELETE CASCADE,
    state TEXT NOT NULL CHECK (state IN ('queued', 'moving')),
    started INTEGER NOT NULL,
    CHECK (into_layer <> layer)
) STRICT;

-- An append-only log; no foreign key, it outlives what it mentions.
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time INTEGER NOT NULL,
    stack TEXT NOT NULL,
    kind TEXT NOT NULL,
    snapshot INTEGER CHECK (snapshot BETWEEN 0 AND 4294967295),
    detail TEXT NOT NULL DEFAULT ''
) STRICT;
CREATE INDEX events_by_stack ON events (stack, id);
CREATE TRIGGER events_are_append_only BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only');
END;
)sql";

// Append new versions here; never edit one that has shipped.
const std::vector<Migration>& builtin_migrations()
{
    static const std::vector<Migration> list{
        {1, "initial schema", [](Database& db) { db.exec(schema_v1); }, false},
    };
    return list;
}

[[noreturn]] void not_found(const std::string& what) { throw StoreError(Kind::NotFound, what); }
[[noreturn]] void conflict(const std::string& what) { throw StoreError(Kind::Conflict, what); }
[[noreturn]] void invalid(const std::string& what) { throw StoreError(Kind::Invalid, what); }

int64_t now() { return static_cast<int64_t>(std::time(nullptr)); }

int64_t read_user_version(Database& db) { return db.query_int64("PRAGMA user_version").value_or(0); }

// Turns foreign keys back on however a migration that needed them off ends;
// the pragma is a no-op inside a transaction, so this runs after it.
struct ForeignKeysOff {
    explicit ForeignKeysOff(Database& d) : db(d) { db.exec("PRAGMA foreign_keys = OFF"); }
    ForeignKeysOff(const ForeignKeysOff&) = delete;
    ForeignKeysOff& operator=(const ForeignKeysOff&) = delete;
    ~ForeignKeysOff()
    {
        try {
            db.exec("PRAGMA foreign_keys = ON");
        } catch (const StoreError&) {
            // Cannot fail outside a transaction; open() checks it anyway.
        }
    }
    Database& db;
};

void migrate(Database& db, const std::vector<Migration>& migrations)
{
    for (size_t i = 0; i < migrations.size(); ++i)
        if (migrations[i].version != static_cast<int>(i) + 1 || !migrations[i].apply)
            invalid(fmt::format("migration list is malformed at entry {} (version {})", i,
                                migrations[i].version));
    const auto known = static_cast<int64_t>(migrations.size());

    for (;;) {
        // Checked outside a transaction first: an up-to-date database, the
        // usual case, is opened without waiting for the write lock.
        int64_t version = read_user_version(db);
        if (version < 0)
            throw StoreError(Kind::Corrupt, fmt::format("database '{}' has an invalid schema version {}",
                                                        db.path(), version));
        if (version > known)
            throw StoreError(Kind::Schema,
                             fmt::format("database '{}' has schema version {}, newer than version {} "
                                         "which this layerd knows; refusing to open it: run a newer "
                                         "layerd or restore an older database",
                                         db.path(), version, known));
        if (version == known)
            return;

        // foreign_keys cannot change inside a transaction: set it first.
        std::optional<ForeignKeysOff> fk_off;
        if (migrations[static_cast<size_t>(version)].foreign_keys_off)
            fk_off.emplace(db);
        Transaction tx(db);
        // Another process may have migrated meanwhile: decide again.
        if (read_user_version(db) != version)
            continue;

        const Migration& m = migrations[static_cast<size_t>(version)];
        try {
            m.apply(db);
            if (m.foreign_keys_off) {
                Statement check = db.prepare("PRAGMA foreign_key_check");
                if (check.step())
                    throw StoreError(Kind::Constraint,
                                     fmt::format("foreign key violation in table '{}'", check.column_text(0)));
            }
            db.exec(fmt::format("PRAGMA user_version = {}", m.version));
            tx.commit();
        } catch (const StoreError& e) {
            throw StoreError(e.kind(),
                             fmt::format("cannot migrate database '{}' to schema version {} ({}): {}",
                                         db.path(), m.version, m.what, e.what()),
                             e.sqlite_code());
        }
    }
}

// ---- rows ----

constexpr std::string_view layer_columns = "id, stack, parent, state, created";

LayerRecord read_layer(const Statement& st)
{
    LayerRecord r;
    r.id = st.column_int64(0);
    r.stack = st.column_text(1);
    r.parent = st.column_optional_int64(2);
    std::string state = st.column_text(3);
    auto parsed = layer_state_from_string(state);
    if (!parsed)
        throw StoreError(Kind::Corrupt, fmt::format("layer {} has unknown state '{}'", r.id, state));
    r.state = *parsed;
    r.created = st.column_int64(4);
    return r;
}

std::vector<LayerRecord> read_layers(Statement& st)
{
    std::vector<LayerRecord> out;
    while (st.step())
        out.push_back(read_layer(st));
    return out;
}

constexpr std::string_view snapshot_columns =
    "stack, number, type, pre_number, layer, time, uid, description, cleanup, important";

SnapshotRecord read_snapshot(const Statement& st)
{
    SnapshotRecord r;
    r.stack = st.column_text(0);
    r.number = static_cast<uint32_t>(st.column_int64(1));
    std::string type = st.column_text(2);
    auto parsed = snapshot_type_from_string(type);
    if (!parsed)
        throw StoreError(Kind::Corrupt,
                         fmt::format("snapshot {} of '{}' has unknown type '{}'", r.number, r.stack, type));
    r.type = *parsed;
    if (auto pre = st.column_optional_int64(3))
        r.pre_number = static_cast<uint32_t>(*pre);
    r.layer = st.column_int64(4);
    r.time = st.column_int64(5);
    r.uid = static_cast<uint32_t>(st.column_int64(6));
    r.description = st.column_text(7);
    r.cleanup = st.column_text(8);
    r.important = st.column_int64(9) != 0;
    return r;
}

std::map<std::string, std::string> read_userdata(Database& db, const std::string& stack, uint32_t number)
{
    Statement st = db.prepare("SELECT key, value FROM userdata WHERE stack = ?1 AND number = ?2");
    st.bind(1, stack).bind(2, int64_t{number});
    std::map<std::string, std::string> out;
    while (st.step())
        out.emplace(st.column_text(0), st.column_text(1));
    return out;
}

void write_userdata(Database& db, const std::string& stack, uint32_t number,
                    const std::map<std::string, std::string>& userdata)
{
    Statement st = db.prepare("INSERT INTO userdata (stack, number, key, value) VALUES (?1, ?2, ?3, ?4)");
    for (const auto& [key, value] : userdata) {
        st.bind(1, stack).bind(2, int64_t{number}).bind(3, key).bind(4, value);
        st.run();
        st.reset();
    }
}

std::optional<LayerRecord> find_layer(Database& db, int64_t id)
{
    Statement st = db.prepare(fmt::format("SELECT {} FROM layers WHERE id = ?1", layer_columns));
    st.bind(1, id);
    if (!st.step())
        return std::nullopt;
    return read_layer(st);
}

LayerRecord need_layer(Database& db, int64_t id)
{
    auto layer = find_layer(db, id);
    if (!layer)
        not_found(fmt::format("no layer {}", id));
    return *layer;
}

bool stack_exists(Database& db, const std::string& name)
{
    Statement st = db.prepare("SELECT 1 FROM stacks WHERE name = ?1");
    st.bind(1, name);
    return st.step();
}

void need_stack(Database& db, const std::string& name)
{
    if (!stack_exists(db, name))
        not_found(fmt::format("no stack '{}'", name));
}

// The stack row's optional layer column COLUMN ("live_layer" or
// "pending_rollback"; never user input).
std::optional<int64_t> stack_layer_column(Database& db, const std::string& stack, std::string_view column)
{
    Statement st = db.prepare(fmt::format("SELECT {} FROM stacks WHERE name = ?1", column));
    st.bind(1, stack);
    if (!st.step())
        not_found(fmt::format("no stack '{}'", stack));
    return st.column_optional_int64(0);
}

int64_t count(Database& db, std::string_view sql, int64_t id)
{
    Statement st = db.prepare(sql);
    st.bind(1, id);
    st.step();
    return st.column_int64(0);
}

void check_cleanup(std::string_view cleanup)
{
    if (!is_valid_cleanup(cleanup))
        invalid(fmt::format("unknown cleanup algorithm '{}' (expected '', 'number', 'timeline' or "
                            "'empty-pre-post')",
                            cleanup));
}

} // namespace

std::string_view to_string(LayerState state) { return name_of(layer_states, state); }
std::string_view to_string(SnapshotType type) { return name_of(snapshot_types, type); }
std::string_view to_string(MergeState state) { return name_of(merge_states, state); }
std::optional<LayerState> layer_state_from_string(std::string_view s) { return value_of(layer_states, s); }
std::optional<SnapshotType> snapshot_type_from_string(std::string_view s) { return value_of(snapshot_types, s); }
std::optional<MergeState> merge_state_from_string(std::string_view s) { return value_of(merge_states, s); }

bool is_valid_cleanup(std::string_view cleanup)
{
    return cleanup.empty() || cleanup == "number" || cleanup == "timeline" || cleanup == "empty-pre-post";
}

// ---- opening ----

SnapshotStore::SnapshotStore(std::unique_ptr<State> state) : state_(std::move(state)) {}
SnapshotStore::SnapshotStore(SnapshotStore&&) noexcept = default;
SnapshotStore& SnapshotStore::operator=(SnapshotStore&&) noexcept = default;
SnapshotStore::~SnapshotStore() = default;

const std::vector<Migration>& SnapshotStore::schema_migrations() { return builtin_migrations(); }

SnapshotStore SnapshotStore::open(const std::string& path) { return open(path, builtin_migrations()); }

SnapshotStore SnapshotStore::open(const std::string& path, const std::vector<Migration>& migrations)
{
    // NoFollow: the daemon runs as root; a symlink planted in place of the
    // database must not redirect its writes.
    Database db = Database::open(path, Database::ReadWrite | Database::Create | Database::NoFollow);

    // foreign_keys is per connection and off by default in SQLite.
    db.exec("PRAGMA foreign_keys = ON");
    if (db.query_int64("PRAGMA foreign_keys").value_or(0) != 1)
        throw StoreError(Kind::Io, fmt::format("'{}': this SQLite cannot enforce foreign keys", path));
    // The schema is ours alone; nothing in it should run with privileges.
    db.exec("PRAGMA trusted_schema = OFF");
    // WAL: readers never block the writer, and a commit is one append.
    // Stored in the file; the answer is the mode actually in effect.
    auto mode = db.query_text("PRAGMA journal_mode = WAL");
    if (!mode || *mode != "wal")
        throw StoreError(Kind::Io, fmt::format("'{}': cannot switch to WAL journal mode (got '{}'); the "
                                               "filesystem may not support shared memory",
                                               path, mode.value_or("")));
    // FULL: in WAL mode NORMAL may lose the last commits on power loss; a
    // state transition that was reported done must stay done.
    db.exec("PRAGMA synchronous = FULL");

    migrate(db, migrations);
    return SnapshotStore(std::make_unique<State>(std::move(db)));
}

int SnapshotStore::schema_version()
{
    std::lock_guard lock(state_->mutex);
    return static_cast<int>(read_user_version(state_->db));
}

std::vector<std::string> SnapshotStore::integrity_problems()
{
    return read_transaction([&] {
        Database& db = state_->db;
        std::vector<std::string> out;
        Statement integrity = db.prepare("PRAGMA integrity_check");
        while (integrity.step()) {
            std::string line = integrity.column_text(0);
            if (line != "ok")
                out.push_back(line);
        }
        Statement fk = db.prepare("PRAGMA foreign_key_check");
        while (fk.step())
            out.push_back(fmt::format("foreign key violation: table '{}' row {} refers to missing '{}'",
                                      fk.column_text(0), fk.column_int64(1), fk.column_text(2)));
        return out;
    });
}

// ---- stacks ----

bool SnapshotStore::ensure_stack(const std::string& name)
{
    return transaction([&] {
        Statement st = state_->db.prepare("INSERT INTO stacks (name) VALUES (?1) ON CONFLICT (name) DO NOTHING");
        st.bind(1, name).run();
        return state_->db.changes() == 1;
    });
}

bool SnapshotStore::has_stack(const std::string& name)
{
    return read_transaction([&] { return stack_exists(state_->db, name); });
}

std::vector<std::string> SnapshotStore::list_stacks()
{
    return read_transaction([&] {
        Statement st = state_->db.prepare("SELECT name FROM stacks ORDER BY name");
        std::vector<std::string> out;
        while (st.step())
            out.push_back(st.column_text(0));
        return out;
    });
}

// ---- layers ----

int64_t SnapshotStore::create_layer(const std::string& stack, std::optional<int64_t> parent, LayerState state)
{
    return transaction([&] {
        Database& db = state_->db;
        need_stack(db, stack);
        if (parent) {
            LayerRecord p = need_layer(db, *parent);
            if (p.stack != stack)
                invalid(fmt::format("layer {} belongs to stack '{}', not '{}'", p.id, p.stack, stack));
            // A merging layer must keep exactly one child; a removing one is
            // on its way out.
            if (p.state == LayerState::Merging || p.state == LayerState::Removing)
                conflict(fmt::format("layer {} is {}: no new layer can sit on it", p.id, to_string(p.state)));
        }
        Statement st = db.prepare("INSERT INTO layers (stack, parent, state, created) VALUES (?1, ?2, ?3, ?4)");
        st.bind(1, stack).bind(2, parent).bind(3, to_string(state)).bind(4, now()).run();
        return db.last_insert_rowid();
    });
}

std::optional<LayerRecord> SnapshotStore::get_layer(int64_t id)
{
    return read_transaction([&] { return find_layer(state_->db, id); });
}

std::vector<LayerRecord> SnapshotStore::list_layers(const std::string& stack)
{
    return read_transaction([&] {
        Statement st = state_->db.prepare(
            fmt::format("SELECT {} FROM layers WHERE stack = ?1 ORDER BY id", layer_columns));
        st.bind(1, stack);
        return read_layers(st);
    });
}

std::vector<LayerRecord> SnapshotStore::children_of(int64_t layer)
{
    return read_transaction([&] {
        Statement st = state_->db.prepare(
            fmt::format("SELECT {} FROM layers WHERE parent = ?1 ORDER BY id", layer_columns));
        st.bind(1, layer);
        return read_layers(st);
    });
}

void SnapshotStore::set_layer_state(int64_t layer, LayerState state)
{
    transaction([&] {
        Statement st = state_->db.prepare("UPDATE layers SET state = ?2 WHERE id = ?1");
        st.bind(1, layer).bind(2, to_string(state)).run();
        if (state_->db.changes() == 0)
            not_found(fmt::format("no layer {}", layer));
    });
}

void SnapshotStore::delete_layer(int64_t layer)
{
    transaction([&] {
        Database& db = state_->db;
        LayerRecord l = need_layer(db, layer);
        // Each of these is also a foreign key; checked here first so the
        // error says which use keeps the layer.
        if (int64_t n = count(db, "SELECT count(*) FROM layers WHERE parent = ?1", layer))
            conflict(fmt::format("layer {} still has {} child layer(s)", layer, n));
        if (int64_t n = count(db, "SELECT count(*) FROM snapshots WHERE layer = ?1", layer))
            conflict(fmt::format("layer {} is still used by {} snapshot(s)", layer, n));
        if (count(db, "SELECT count(*) FROM stacks WHERE live_layer = ?1", layer))
            conflict(fmt::format("layer {} is the live layer of stack '{}'", layer, l.stack));
        if (count(db, "SELECT count(*) FROM stacks WHERE pending_rollback = ?1", layer))
            conflict(fmt::format("layer {} is the pending rollback of stack '{}'", layer, l.stack));
        if (count(db, "SELECT count(*) FROM merges WHERE layer = ?1 OR into_layer = ?1", layer))
            conflict(fmt::format("layer {} takes part in a merge in progress", layer));
        Statement st = db.prepare("DELETE FROM layers WHERE id = ?1");
        st.bind(1, layer).run();
    });
}

void SnapshotStore::set_live_layer(const std::string& stack, int64_t layer)
{
    transaction([&] {
        Database& db = state_->db;
        need_stack(db, stack);
        LayerRecord l = need_layer(db, layer);
        if (l.stack != stack)
            invalid(fmt::format("layer {} belongs to stack '{}', not '{}'", layer, l.stack, stack));
        if (l.state != LayerState::Live)
            conflict(fmt::format("layer {} is {}, not live", layer, to_string(l.state)));
        Statement st = db.prepare("UPDATE stacks SET live_layer = ?2 WHERE name = ?1");
        st.bind(1, stack).bind(2, layer).run();
    });
}

std::optional<int64_t> SnapshotStore::live_layer(const std::string& stack)
{
    return read_transaction([&] { return stack_layer_column(state_->db, stack, "live_layer"); });
}

// ---- snapshots ----

uint32_t SnapshotStore::record_snapshot(const SnapshotRecord& s)
{
    return transaction([&] {
        Database& db = state_->db;
        need_stack(db, s.stack);
        LayerRecord l = need_layer(db, s.layer);
        if (l.stack != s.stack)
            invalid(fmt::format("layer {} belongs to stack '{}', not '{}'", l.id, l.stack, s.stack));
        // A snapshot is a point in time: its layer must no longer change.
        if (l.state != LayerState::Frozen)
            conflict(fmt::format("layer {} is {}; a snapshot needs a frozen layer", l.id, to_string(l.state)));
        check_cleanup(s.cleanup);
        if ((s.type == SnapshotType::Post) != s.pre_number.has_value())
            invalid("a post snapshot needs the number of its pre snapshot, and only a post has one");
        if (s.pre_number) {
            Statement pre = db.prepare("SELECT type FROM snapshots WHERE stack = ?1 AND number = ?2");
            pre.bind(1, s.stack).bind(2, int64_t{*s.pre_number});
            if (!pre.step())
                not_found(fmt::format("no snapshot {} in stack '{}' to pair with", *s.pre_number, s.stack));
            if (pre.column_text(0) != to_string(SnapshotType::Pre))
                invalid(fmt::format("snapshot {} of stack '{}' is not a pre snapshot", *s.pre_number, s.stack));
        }

        // Allocation and insert are in this one transaction, so a number is
        // consumed exactly when a snapshot with it is stored.
        Statement next = db.prepare(
            "UPDATE stacks SET next_snapshot = next_snapshot + 1 WHERE name = ?1 RETURNING next_snapshot - 1");
        next.bind(1, s.stack);
        if (!next.step())
            not_found(fmt::format("no stack '{}'", s.stack));
        int64_t number = next.column_int64(0);
        next.run();
        if (number < 1 || number > int64_t{UINT32_MAX})
            conflict(fmt::format("stack '{}' has used up all snapshot numbers", s.stack));

        Statement ins = db.prepare(fmt::format("INSERT INTO snapshots ({}) VALUES "
                                               "(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                                               snapshot_columns));
        ins.bind(1, s.stack)
            .bind(2, number)
            .bind(3, to_string(s.type))
            .bind(4, s.pre_number)
            .bind(5, s.layer)
            .bind(6, s.time)
            .bind(7, int64_t{s.uid})
            .bind(8, s.description)
            .bind(9, s.cleanup)
            .bind(10, int64_t{s.important})
            .run();
        write_userdata(db, s.stack, static_cast<uint32_t>(number), s.userdata);
        return static_cast<uint32_t>(number);
    });
}

std::optional<SnapshotRecord> SnapshotStore::get_snapshot(const std::string& stack, uint32_t number)
{
    return read_transaction([&]() -> std::optional<SnapshotRecord> {
        Statement st = state_->db.prepare(
            fmt::format("SELECT {} FROM snapshots WHERE stack = ?1 AND number = ?2", snapshot_columns));
        st.bind(1, stack).bind(2, int64_t{number});
        if (!st.step())
            return std::nullopt;
        SnapshotRecord r = read_snapshot(st);
        r.userdata = read_userdata(state_->db, stack, number);
        return r;
    });
}

std::vector<SnapshotRecord> SnapshotStore::list_snapshots(const std::string& stack)
{
    return read_transaction([&] {
        Database& db = state_->db;
        Statement st =
            db.prepare(fmt::format("SELECT {} FROM snapshots WHERE stack = ?1 ORDER BY number",
                                   snapshot_columns));
        st.bind(1, stack);
        std::vector<SnapshotRecord> out;
        std::map<uint32_t, size_t> index;
        while (st.step()) {
            index[static_cast<uint32_t>(st.column_int64(1))] = out.size();
            out.push_back(read_snapshot(st));
        }
        // All userdata of the stack in one query, not one per snapshot.
        Statement ud = db.prepare("SELECT number, key, value FROM userdata WHERE stack = ?1");
        ud.bind(1, stack);
        while (ud.step()) {
            auto it = index.find(static_cast<uint32_t>(ud.column_int64(0)));
            if (it != index.end())
                out[it->second].userdata.emplace(ud.column_text(1), ud.column_text(2));
        }
        return out;
    });
}

void SnapshotStore::update_snapshot(const std::string& stack, uint32_t number, const SnapshotChanges& changes)
{
    transaction([&] {
        Database& db = state_->db;
        if (changes.cleanup)
            check_cleanup(*changes.cleanup);
        // COALESCE keeps a column whose new value is NULL (not given).
        Statement st = db.prepare("UPDATE snapshots SET description = COALESCE(?3, description), "
                                  "cleanup = COALESCE(?4, cleanup), important = COALESCE(?5, important) "
                                  "WHERE stack = ?1 AND number = ?2");
        st.bind(1, stack).bind(2, int64_t{number}).bind(3, changes.description).bind(4, changes.cleanup);
        if (changes.important)
            st.bind(5, int64_t{*changes.important});
        st.run();
        if (db.changes() == 0)
            not_found(fmt::format("no snapshot {} in stack '{}'", number, stack));
        if (changes.userdata) {
            Statement del = db.prepare("DELETE FROM userdata WHERE stack = ?1 AND number = ?2");
            del.bind(1, stack).bind(2, int64_t{number}).run();
            write_userdata(db, stack, number, *changes.userdata);
        }
    });
}

bool SnapshotStore::delete_snapshot_row(const std::string& stack, uint32_t number)
{
    return transaction([&] {
        // userdata goes with it: ON DELETE CASCADE.
        Statement st = state_->db.prepare("DELETE FROM snapshots WHERE stack = ?1 AND number = ?2");
        st.bind(1, stack).bind(2, int64_t{number}).run();
        return state_->db.changes() == 1;
    });
}

std::vector<SnapshotRecord> SnapshotStore::snapshots_using_layer(int64_t layer)
{
    return read_transaction([&] {
        Statement st = state_->db.prepare(
            fmt::format("SELECT {} FROM snapshots WHERE layer = ?1 ORDER BY stack, number", snapshot_columns));
        st.bind(1, layer);
        std::vector<SnapshotRecord> out;
        while (st.step())
            out.push_back(read_snapshot(st));
        for (SnapshotRecord& r : out)
            r.userdata = read_userdata(state_->db, r.stack, r.number);
        return out;
    });
}

// ---- rollback at next mount ----

void SnapshotStore::set_pending_rollback(const std::string& stack, int64_t layer)
{
    transaction([&] {
        Database& db = state_->db;
        need_stack(db, stack);
        LayerRecord l = need_layer(db, layer);
        if (l.stack != stack)
            invalid(fmt::format("layer {} belongs to stack '{}', not '{}'", layer, l.stack, stack));
        if (l.state == LayerState::Merging || l.state == LayerState::Removing)
            conflict(fmt::format("layer {} is {}: cannot roll back to it", layer, to_string(l.state)));
        Statement st = db.prepare("UPDATE stacks SET pending_rollback = ?2 WHERE name = ?1");
        st.bind(1, stack).bind(2, layer).run();
    });
}

std::optional<int64_t> SnapshotStore::pending_rollback(const std::string& stack)
{
    return read_transaction([&] { return stack_layer_column(state_->db, stack, "pending_rollback"); });
}

void SnapshotStore::clear_pending_rollback(const std::string& stack)
{
    transaction([&] {
        Statement st = state_->db.prepare("UPDATE stacks SET pending_rollback = NULL WHERE name = ?1");
        st.bind(1, stack).run();
        if (state_->db.changes() == 0)
            not_found(fmt::format("no stack '{}'", stack));
    });
}

// ---- background merges ----

void SnapshotStore::begin_merge(int64_t layer, int64_t into_layer)
{
    transaction([&] {
        Database& db = state_->db;
        LayerRecord from = need_layer(db, layer);
        LayerRecord into = need_layer(db, into_layer);
        if (into.parent != layer)
            invalid(fmt::format("layer {} is not a child of layer {}", into_layer, layer));
        if (from.state != LayerState::Frozen && from.state != LayerState::Hidden)
            conflict(fmt::format("layer {} is {}: only a frozen or hidden layer can be merged away", layer,
                                 to_string(from.state)));
        if (int64_t n = count(db, "SELECT count(*) FROM layers WHERE parent = ?1", layer); n != 1)
            conflict(fmt::format("layer {} has {} children; it can only be merged into exactly one", layer, n));
        if (count(db, "SELECT count(*) FROM snapshots WHERE layer = ?1", layer))
            conflict(fmt::format("layer {} is still used by a snapshot", layer));
        if (count(db, "SELECT count(*) FROM stacks WHERE live_layer = ?1 OR pending_rollback = ?1", layer))
            conflict(fmt::format("layer {} is a live layer or a pending rollback", layer));
        // Chained merges would move entries through a layer being emptied.
        constexpr std::string_view in_merge = "SELECT count(*) FROM merges WHERE layer = ?1 OR into_layer = ?1";
        if (count(db, in_merge, layer) || count(db, in_merge, into_layer))
            conflict(fmt::format("layer {} or {} already takes part in a merge", layer, into_layer));

        Statement ins =
            db.prepare("INSERT INTO merges (layer, into_layer, state, started) VALUES (?1, ?2, ?3, ?4)");
        ins.bind(1, layer).bind(2, into_layer).bind(3, to_string(MergeState::Queued)).bind(4, now()).run();
        Statement upd = db.prepare("UPDATE layers SET state = ?2 WHERE id = ?1");
        upd.bind(1, layer).bind(2, to_string(LayerState::Merging)).run();
    });
}

void SnapshotStore::set_merge_state(int64_t layer, MergeState state)
{
    transaction([&] {
        Statement st = state_->db.prepare("UPDATE merges SET state = ?2 WHERE layer = ?1");
        st.bind(1, layer).bind(2, to_string(state)).run();
        if (state_->db.changes() == 0)
            not_found(fmt::format("no merge of layer {} in progress", layer));
    });
}

std::vector<MergeRecord> SnapshotStore::merges_in_progress()
{
    return read_transaction([&] {
        Statement st = state_->db.prepare("SELECT m.layer, m.into_layer, l.stack, m.state, m.started "
                                          "FROM merges m JOIN layers l ON l.id = m.layer "
                                          "ORDER BY m.started, m.layer");
        std::vector<MergeRecord> out;
        while (st.step()) {
            MergeRecord r;
            r.layer = st.column_int64(0);
            r.into_layer = st.column_int64(1);
            r.stack = st.column_text(2);
            std::string state = st.column_text(3);
            auto parsed = merge_state_from_string(state);
            if (!parsed)
                throw StoreError(Kind::Corrupt,
                                 fmt::format("merge of layer {} has unknown state '{}'", r.layer, state));
            r.state = *parsed;
            r.started = st.column_int64(4);
            out.push_back(std::move(r));
        }
        return out;
    });
}

void SnapshotStore::finish_merge(int64_t layer)
{
    transaction([&] {
        Database& db = state_->db;
        Statement m = db.prepare("SELECT into_layer FROM merges WHERE layer = ?1");
        m.bind(1, layer);
        if (!m.step())
            not_found(fmt::format("no merge of layer {} in progress", layer));
        int64_t into = m.column_int64(0);
        LayerRecord from = need_layer(db, layer);

        Statement reparent = db.prepare("UPDATE layers SET parent = ?2 WHERE id = ?1");
        reparent.bind(1, into).bind(2, from.parent).run();
        Statement state = db.prepare("UPDATE layers SET state = ?2 WHERE id = ?1");
        state.bind(1, layer).bind(2, to_string(LayerState::Removing)).run();
        Statement del = db.prepare("DELETE FROM merges WHERE layer = ?1");
        del.bind(1, layer).run();
    });
}

// ---- event log ----

int64_t SnapshotStore::append_event(const std::string& stack, const std::string& kind,
                                    std::optional<uint32_t> snapshot, const std::string& detail,
                                    std::optional<int64_t> time)
{
    return transaction([&] {
        Statement st = state_->db.prepare(
            "INSERT INTO events (time, stack, kind, snapshot, detail) VALUES (?1, ?2, ?3, ?4, ?5)");
        st.bind(1, time.value_or(now())).bind(2, stack).bind(3, kind);
        if (snapshot)
            st.bind(4, int64_t{*snapshot});
        st.bind(5, detail).run();
        return state_->db.last_insert_rowid();
    });
}

std::vector<EventRecord> SnapshotStore::recent_events(const std::optional<std::string>& stack, size_t limit)
{
    return read_transaction([&] {
        // ?1 IS NULL: one statement serves "all stacks" and "one stack".
        Statement st = state_->db.prepare("SELECT id, time, stack, kind, snapshot, detail FROM events "
                                          "WHERE ?1 IS NULL OR stack = ?1 ORDER BY id DESC LIMIT ?2");
        st.bind(1, stack).bind(2, static_cast<int64_t>(std::min<size_t>(limit, INT64_MAX)));
        std::vector<EventRecord> out;
        while (st.step()) {
            EventRecord e;
            e.id = st.column_int64(0);
            e.time = st.column_int64(1);
            e.stack = st.column_text(2);
            e.kind = st.column_text(3);
            if (auto n = st.column_optional_int64(4))
                e.snapshot = static_cast<uint32_t>(*n);
            e.detail = st.column_text(5);
            out.push_back(std::move(e));
        }
        return out;
    });
}

void SnapshotStore::prune_events(size_t keep)
{
    transaction([&] {
        Statement st = state_->db.prepare(
            "DELETE FROM events WHERE id <= (SELECT id FROM events ORDER BY id DESC LIMIT 1 OFFSET ?1)");
        st.bind(1, static_cast<int64_t>(std::min<size_t>(keep, INT64_MAX))).run();
    });
}

} // namespace layerd
