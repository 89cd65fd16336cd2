// SPDX-License-Identifier: LGPL-2.1-or-later
// The state database on real SQLite files: schema and migrations, the
// never-reused counters, foreign keys, atomic grouped steps, crashes (a child
// process killed before and after commit), concurrent connections, arbitrary
// strings, and a full filesystem.
#include "snapshot_store.hpp"
#include "sqlite.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

using namespace layerd;
using Kind = StoreError::Kind;

namespace {

struct TempDir {
    TempDir()
    {
        char tmpl[] = "/var/tmp/layerd-unit.XXXXXX";
        path = mkdtemp(tmpl);
    }
    ~TempDir() { std::system(("rm -rf '" + path + "'").c_str()); }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    std::string path;
};

// Runs F and returns the kind of the StoreError it throws; fails the test
// if it throws nothing or something else.
template <class F>
std::optional<Kind> error_kind(F&& f, std::string* message = nullptr)
{
    try {
        f();
    } catch (const StoreError& e) {
        if (message)
            *message = e.what();
        return e.kind();
    }
    return std::nullopt;
}

// A stack with an empty live layer on its lowers.
int64_t make_stack(SnapshotStore& store, const std::string& stack)
{
    return store.transaction([&] {
        store.ensure_stack(stack);
        int64_t live = store.create_layer(stack, std::nullopt, LayerState::Live);
        store.set_live_layer(stack, live);
        return live;
    });
}

SnapshotRecord snapshot_of(const std::string& stack, int64_t layer)
{
    SnapshotRecord s;
    s.stack = stack;
    s.layer = layer;
    s.time = 1700000000;
    s.uid = 0;
    s.description = "test";
    return s;
}

// DESIGN §2 "create", as the snapshot logic will do it: freeze the live
// layer, put a new live layer on it, record the snapshot, switch the live
// layer, all in one transaction. FAIL_MIDWAY throws after the snapshot is
// recorded and before the live layer is switched.
uint32_t take_snapshot(SnapshotStore& store, const std::string& stack,
                       const std::map<std::string, std::string>& userdata = {}, bool fail_midway = false)
{
    return store.transaction([&] {
        int64_t old_live = store.live_layer(stack).value();
        store.set_layer_state(old_live, LayerState::Frozen);
        int64_t new_live = store.create_layer(stack, old_live, LayerState::Live);
        SnapshotRecord s = snapshot_of(stack, old_live);
        s.userdata = userdata;
        uint32_t number = store.record_snapshot(s);
        if (fail_midway)
            throw std::runtime_error("injected failure");
        store.set_live_layer(stack, new_live);
        return number;
    });
}

// What a reader must always see after take_snapshot() steps: whole steps.
// Returns "" or what is wrong.
std::string check_whole_steps(SnapshotStore& store, const std::string& stack, size_t userdata_keys)
{
    return store.read_transaction([&]() -> std::string {
        auto snaps = store.list_snapshots(stack);
        auto live = store.live_layer(stack);
        if (!live)
            return "no live layer";
        auto live_rec = store.get_layer(*live);
        if (!live_rec || live_rec->state != LayerState::Live)
            return "live layer is not live";
        uint32_t expect = 1;
        for (const auto& s : snaps) {
            if (s.number != expect++)
                return "gap in snapshot numbers at " + std::to_string(s.number);
            if (s.userdata.size() != userdata_keys)
                return "snapshot " + std::to_string(s.number) + " has partial userdata";
            auto l = store.get_layer(s.layer);
            if (!l || l->state != LayerState::Frozen)
                return "snapshot layer not frozen";
        }
        if (!snaps.empty() && live_rec->parent != snaps.back().layer)
            return "live layer does not sit on the newest snapshot";
        if (store.list_layers(stack).size() != snaps.size() + 1)
            return "layer count does not match snapshots";
        return "";
    });
}

class SnapshotStoreTest : public ::testing::Test {
protected:
    std::string db() const { return dir.path + "/layerd.db"; }
    TempDir dir;
};

} // namespace

// ---- schema ----

TEST_F(SnapshotStoreTest, CreatesSchemaAndReopens)
{
    {
        SnapshotStore store = SnapshotStore::open(db());
        EXPECT_EQ(store.schema_version(), SnapshotStore::latest_schema_version());
        EXPECT_EQ(store.schema_version(), 1);
        EXPECT_TRUE(store.ensure_stack("etc"));
        EXPECT_FALSE(store.ensure_stack("etc")) << "second ensure is a no-op";
        make_stack(store, "var");
        EXPECT_TRUE(store.integrity_problems().empty());
    }
    SnapshotStore store = SnapshotStore::open(db());
    EXPECT_EQ(store.schema_version(), 1);
    EXPECT_EQ(store.list_stacks(), (std::vector<std::string>{"etc", "var"}));
    EXPECT_FALSE(store.live_layer("etc").has_value());
    EXPECT_TRUE(store.live_layer("var").has_value());
    EXPECT_EQ(error_kind([&] { store.live_layer("nope"); }), Kind::NotFound);

    // Every table and index the code queries exists.
    Database raw = Database::open(db(), Database::ReadOnly);
    for (const char* name : {"stacks", "layers", "snapshots", "userdata", "merges", "events", "layers_by_parent",
                             "snapshots_by_layer", "events_by_stack"}) {
        Statement st = raw.prepare("SELECT count(*) FROM sqlite_schema WHERE name = ?1");
        st.bind(1, name);
        ASSERT_TRUE(st.step());
        EXPECT_EQ(st.column_int64(0), 1) << name;
    }
}

TEST_F(SnapshotStoreTest, PragmasAreInEffect)
{
    SnapshotStore store = SnapshotStore::open(db());
    Database& conn = store.database_for_testing();
    EXPECT_EQ(conn.query_text("PRAGMA journal_mode"), "wal");
    EXPECT_EQ(conn.query_int64("PRAGMA synchronous"), 2) << "FULL";
    EXPECT_EQ(conn.query_int64("PRAGMA foreign_keys"), 1);
    make_stack(store, "s");
    struct stat st;
    EXPECT_EQ(::stat((db() + "-wal").c_str(), &st), 0) << "a WAL file exists while open";
    // WAL is a property of the file: a fresh connection sees it too.
    Database other = Database::open(db(), Database::ReadOnly);
    EXPECT_EQ(other.query_text("PRAGMA journal_mode"), "wal");
}

TEST_F(SnapshotStoreTest, RefusesNewerSchema)
{
    SnapshotStore::open(db());
    {
        Database raw = Database::open(db(), Database::ReadWrite);
        raw.exec("PRAGMA user_version = 99");
    }
    std::string message;
    EXPECT_EQ(error_kind([&] { SnapshotStore::open(db()); }, &message), Kind::Schema);
    EXPECT_NE(message.find("99"), std::string::npos) << message;
    EXPECT_NE(message.find("newer"), std::string::npos) << message;
    Database raw = Database::open(db(), Database::ReadOnly);
    EXPECT_EQ(raw.query_int64("PRAGMA user_version"), 99) << "refusing must not touch the file";
}

TEST_F(SnapshotStoreTest, AppendedMigrationUpgradesAndKeepsData)
{
    {
        SnapshotStore store = SnapshotStore::open(db());
        make_stack(store, "etc");
        take_snapshot(store, "etc", {{"k", "v"}});
    }
    std::vector<Migration> v2 = SnapshotStore::schema_migrations();
    v2.push_back({2, "stack comments", [](Database& d) { d.exec("ALTER TABLE stacks ADD COLUMN comment TEXT"); }});
    {
        SnapshotStore store = SnapshotStore::open(db(), v2);
        EXPECT_EQ(store.schema_version(), 2);
        ASSERT_EQ(store.list_snapshots("etc").size(), 1u);
        EXPECT_EQ(store.list_snapshots("etc")[0].userdata.at("k"), "v");
        store.database_for_testing().exec("UPDATE stacks SET comment = 'x'");
    }
    // The same list again: nothing to do. An older build: refused.
    EXPECT_EQ(SnapshotStore::open(db(), v2).schema_version(), 2);
    EXPECT_EQ(error_kind([&] { SnapshotStore::open(db()); }), Kind::Schema);
}

TEST_F(SnapshotStoreTest, FailedMigrationLeavesThePreviousVersion)
{
    SnapshotStore::open(db());
    std::vector<Migration> list = SnapshotStore::schema_migrations();
    list.push_back({2, "half done", [](Database& d) {
                        d.exec("CREATE TABLE extra (x INTEGER)");
                        d.exec("INSERT INTO no_such_table VALUES (1)");
                    }});
    std::string message;
    EXPECT_EQ(error_kind([&] { SnapshotStore::open(db(), list); }, &message), Kind::Io);
    EXPECT_NE(message.find("schema version 2"), std::string::npos) << message;
    EXPECT_NE(message.find("no_such_table"), std::string::npos) << "names the failing SQL: " << message;

    Database raw = Database::open(db(), Database::ReadOnly);
    EXPECT_EQ(raw.query_int64("PRAGMA user_version"), 1);
    EXPECT_EQ(raw.query_int64("SELECT count(*) FROM sqlite_schema WHERE name = 'extra'"), 0);
}

TEST_F(SnapshotStoreTest, MigrationsRunOneTransactionEach)
{
    // v2 commits; v3 fails: the file ends at version 2 with v2's table.
    std::vector<Migration> list = SnapshotStore::schema_migrations();
    list.push_back({2, "add a", [](Database& d) { d.exec("CREATE TABLE a (x INTEGER)"); }});
    list.push_back({3, "add b, fail", [](Database& d) {
                        d.exec("CREATE TABLE b (x INTEGER)");
                        throw StoreError(Kind::Invalid, "injected");
                    }});
    EXPECT_EQ(error_kind([&] { SnapshotStore::open(db(), list); }), Kind::Invalid);
    Database raw = Database::open(db(), Database::ReadOnly);
    EXPECT_EQ(raw.query_int64("PRAGMA user_version"), 2);
    EXPECT_EQ(raw.query_int64("SELECT count(*) FROM sqlite_schema WHERE name IN ('a', 'b')"), 1);
}

TEST_F(SnapshotStoreTest, TableRebuildMigrationChecksForeignKeys)
{
    {
        SnapshotStore store = SnapshotStore::open(db());
        make_stack(store, "etc");
        take_snapshot(store, "etc");
    }
    // A migration that loses referenced rows while foreign keys are off
    // must be refused as a whole.
    std::vector<Migration> bad = SnapshotStore::schema_migrations();
    bad.push_back({2, "lossy", [](Database& d) { d.exec("DELETE FROM layers"); }, true});
    std::string message;
    EXPECT_EQ(error_kind([&] { SnapshotStore::open(db(), bad); }, &message), Kind::Constraint);
    EXPECT_NE(message.find("foreign key"), std::string::npos) << message;
    {
        SnapshotStore store = SnapshotStore::open(db());
        EXPECT_EQ(store.schema_version(), 1);
        EXPECT_EQ(store.list_layers("etc").size(), 2u) << "the lossy step was rolled back";
    }

    // A faithful rebuild (add a column by copying the table) passes.
    std::vector<Migration> good = SnapshotStore::schema_migrations();
    good.push_back({2, "rebuild events",
                    [](Database& d) {
                        d.exec("CREATE TABLE events_new (id INTEGER PRIMARY KEY AUTOINCREMENT, time INTEGER "
                               "NOT NULL, stack TEXT NOT NULL, kind TEXT NOT NULL, snapshot INTEGER, detail "
                               "TEXT NOT NULL DEFAULT '', extra TEXT) STRICT;"
                               "INSERT INTO events_new (id, time, stack, kind, snapshot, detail) "
                               "SELECT id, time, stack, kind, snapshot, detail FROM events;"
                               "DROP TABLE events;"
                               "ALTER TABLE events_new RENAME TO events;");
                    },
                    true});
    SnapshotStore store = SnapshotStore::open(db(), good);
    EXPECT_EQ(store.schema_version(), 2);
    EXPECT_EQ(store.list_snapshots("etc").size(), 1u);
    EXPECT_EQ(store.database_for_testing().query_int64("PRAGMA foreign_keys"), 1) << "back on afterwards";
}

TEST_F(SnapshotStoreTest, MalformedMigrationListIsRejected)
{
    std::vector<Migration> list = SnapshotStore::schema_migrations();
    list.push_back({3, "skips 2", [](Database&) {}});
    EXPECT_EQ(error_kind([&] { SnapshotStore::open(db(), list); }), Kind::Invalid);
}

TEST_F(SnapshotStoreTest, NotADatabaseIsReportedAsCorrupt)
{
    int fd = ::open(db().c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    ASSERT_GE(fd, 0);
    std::string junk(8192, 'x');
    ASSERT_EQ(::write(fd, junk.data(), junk.size()), static_cast<ssize_t>(junk.size()));
    ::close(fd);
    EXPECT_EQ(error_kind([&] { SnapshotStore::open(db()); }), Kind::Corrupt);
}

TEST_F(SnapshotStoreTest, SymlinkedDatabaseIsRefused)
{
    SnapshotStore::open(db());
    ASSERT_EQ(::symlink(db().c_str(), (dir.path + "/link.db").c_str()), 0);
    EXPECT_TRUE(error_kind([&] { SnapshotStore::open(dir.path + "/link.db"); }).has_value());
}

// ---- counters ----

TEST_F(SnapshotStoreTest, SnapshotNumbersAreNeverReused)
{
    {
        SnapshotStore store = SnapshotStore::open(db());
        make_stack(store, "etc");
        make_stack(store, "var");
        EXPECT_EQ(take_snapshot(store, "etc"), 1u);
        EXPECT_EQ(take_snapshot(store, "etc"), 2u);
        EXPECT_EQ(take_snapshot(store, "etc"), 3u);
        EXPECT_EQ(take_snapshot(store, "var"), 1u) << "numbers are per stack";
        EXPECT_TRUE(store.delete_snapshot_row("etc", 3));
        EXPECT_FALSE(store.delete_snapshot_row("etc", 3));
        EXPECT_EQ(take_snapshot(store, "etc"), 4u) << "the newest number is not handed out again";
        for (uint32_t n : {1u, 2u, 4u})
            EXPECT_TRUE(store.delete_snapshot_row("etc", n));
        EXPECT_TRUE(store.list_snapshots("etc").empty());
    }
    SnapshotStore store = SnapshotStore::open(db());
    EXPECT_EQ(take_snapshot(store, "etc"), 5u) << "nor after a reopen with no snapshots left";
    EXPECT_EQ(take_snapshot(store, "var"), 2u);
}

TEST_F(SnapshotStoreTest, LayerIdsAreNeverReused)
{
    int64_t last = 0;
    {
        SnapshotStore store = SnapshotStore::open(db());
        store.ensure_stack("s");
        int64_t a = store.create_layer("s", std::nullopt, LayerState::Frozen);
        int64_t b = store.create_layer("s", a, LayerState::Frozen);
        EXPECT_GT(b, a);
        store.delete_layer(b);
        last = store.create_layer("s", a, LayerState::Frozen);
        EXPECT_GT(last, b) << "AUTOINCREMENT: the deleted newest id is not reused";
        store.delete_layer(last);
    }
    SnapshotStore store = SnapshotStore::open(db());
    EXPECT_GT(store.create_layer("s", std::nullopt, LayerState::Live), last);
}

// ---- invariants ----

TEST_F(SnapshotStoreTest, ForeignKeysAreEnforced)
{
    SnapshotStore store = SnapshotStore::open(db());
    make_stack(store, "etc");
    // A leaf layer used by a snapshot: only the snapshot keeps it.
    int64_t snap_layer = store.create_layer("etc", std::nullopt, LayerState::Frozen);
    store.record_snapshot(snapshot_of("etc", snap_layer));

    std::string message;
    EXPECT_EQ(error_kind([&] { store.delete_layer(snap_layer); }, &message), Kind::Conflict);
    EXPECT_NE(message.find("snapshot"), std::string::npos) << message;

    // Past the store's own checks, the schema refuses on the store's own
    // connection: foreign keys are really on there.
    Database& raw = store.database_for_testing();
    EXPECT_EQ(error_kind([&] { raw.exec("DELETE FROM layers WHERE id = " + std::to_string(snap_layer)); }),
              Kind::Constraint);
    EXPECT_EQ(error_kind([&] {
                  raw.exec("INSERT INTO layers (stack, state, created) VALUES ('nope', 'live', 0)");
              }),
              Kind::Constraint);
    // A snapshot's layer must belong to the snapshot's stack.
    make_stack(store, "var");
    int64_t var_live = store.live_layer("var").value();
    EXPECT_EQ(error_kind([&] {
                  raw.exec("INSERT INTO snapshots (stack, number, type, layer, time, uid) "
                           "VALUES ('etc', 99, 'single', " +
                           std::to_string(var_live) + ", 0, 0)");
              }),
              Kind::Constraint);
    EXPECT_EQ(error_kind([&] { raw.exec("UPDATE layers SET state = 'bogus'"); }), Kind::Constraint);
    EXPECT_TRUE(store.integrity_problems().empty());
}

TEST_F(SnapshotStoreTest, DeleteLayerRefusesEveryUse)
{
    SnapshotStore store = SnapshotStore::open(db());
    int64_t root = make_stack(store, "s");
    EXPECT_EQ(error_kind([&] { store.delete_layer(root); }), Kind::Conflict) << "live layer";
    take_snapshot(store, "s");
    store.delete_snapshot_row("s", 1);
    EXPECT_EQ(error_kind([&] { store.delete_layer(root); }), Kind::Conflict) << "has a child";
    store.set_pending_rollback("s", root);
    int64_t live = store.live_layer("s").value();
    store.transaction([&] {
        int64_t fresh = store.create_layer("s", std::nullopt, LayerState::Live);
        store.set_live_layer("s", fresh);
        store.set_layer_state(live, LayerState::Removing);
    });
    store.delete_layer(live);
    EXPECT_EQ(error_kind([&] { store.delete_layer(root); }), Kind::Conflict) << "pending rollback";
    store.clear_pending_rollback("s");
    store.delete_layer(root);
    EXPECT_FALSE(store.get_layer(root).has_value());
    EXPECT_EQ(error_kind([&] { store.delete_layer(root); }), Kind::NotFound);
}

TEST_F(SnapshotStoreTest, RecordSnapshotChecksItsArguments)
{
    SnapshotStore store = SnapshotStore::open(db());
    int64_t live = make_stack(store, "etc");
    make_stack(store, "var");
    EXPECT_EQ(error_kind([&] { store.record_snapshot(snapshot_of("etc", live)); }), Kind::Conflict)
        << "the live layer is not frozen";
    store.set_layer_state(live, LayerState::Frozen);
    EXPECT_EQ(error_kind([&] { store.record_snapshot(snapshot_of("var", live)); }), Kind::Invalid)
        << "layer of another stack";
    EXPECT_EQ(error_kind([&] { store.record_snapshot(snapshot_of("nope", live)); }), Kind::NotFound);
    EXPECT_EQ(error_kind([&] { store.record_snapshot(snapshot_of("etc", 12345)); }), Kind::NotFound);
    SnapshotRecord bad_cleanup = snapshot_of("etc", live);
    bad_cleanup.cleanup = "sometimes";
    EXPECT_EQ(error_kind([&] { store.record_snapshot(bad_cleanup); }), Kind::Invalid);

    SnapshotRecord post = snapshot_of("etc", live);
    post.type = SnapshotType::Post;
    EXPECT_EQ(error_kind([&] { store.record_snapshot(post); }), Kind::Invalid) << "post without pre";
    post.pre_number = 7;
    EXPECT_EQ(error_kind([&] { store.record_snapshot(post); }), Kind::NotFound);
    uint32_t single = store.record_snapshot(snapshot_of("etc", live));
    post.pre_number = single;
    EXPECT_EQ(error_kind([&] { store.record_snapshot(post); }), Kind::Invalid) << "pre is not a pre";
    SnapshotRecord pre = snapshot_of("etc", live);
    pre.type = SnapshotType::Pre;
    pre.cleanup = "number";
    uint32_t pre_number = store.record_snapshot(pre);
    post.pre_number = pre_number;
    uint32_t post_number = store.record_snapshot(post);
    auto got = store.get_snapshot("etc", post_number);
    ASSERT_TRUE(got);
    EXPECT_EQ(got->type, SnapshotType::Post);
    EXPECT_EQ(got->pre_number, pre_number);
    EXPECT_EQ(store.get_snapshot("etc", pre_number)->cleanup, "number");
    // A post outlives its pre, as in snapper.
    EXPECT_TRUE(store.delete_snapshot_row("etc", pre_number));
    EXPECT_EQ(store.get_snapshot("etc", post_number)->pre_number, pre_number);
    EXPECT_EQ(store.snapshots_using_layer(live).size(), 2u);
    EXPECT_EQ(single, 1u);
    EXPECT_EQ(post_number, 3u) << "failed attempts consume no number";
}

TEST_F(SnapshotStoreTest, UpdateSnapshotChangesOnlyWhatIsGiven)
{
    SnapshotStore store = SnapshotStore::open(db());
    make_stack(store, "etc");
    uint32_t n = take_snapshot(store, "etc", {{"a", "1"}, {"b", "2"}});
    SnapshotChanges changes;
    changes.description = "new";
    changes.important = true;
    store.update_snapshot("etc", n, changes);
    auto s = store.get_snapshot("etc", n).value();
    EXPECT_EQ(s.description, "new");
    EXPECT_EQ(s.cleanup, "");
    EXPECT_TRUE(s.important);
    EXPECT_EQ(s.userdata.size(), 2u);
    SnapshotChanges ud;
    ud.userdata = std::map<std::string, std::string>{{"c", "3"}};
    ud.cleanup = "timeline";
    store.update_snapshot("etc", n, ud);
    s = store.get_snapshot("etc", n).value();
    EXPECT_EQ(s.userdata, (std::map<std::string, std::string>{{"c", "3"}}));
    EXPECT_EQ(s.cleanup, "timeline");
    EXPECT_EQ(s.description, "new");
    EXPECT_TRUE(s.important);
    SnapshotChanges bad;
    bad.cleanup = "never";
    EXPECT_EQ(error_kind([&] { store.update_snapshot("etc", n, bad); }), Kind::Invalid);
    EXPECT_EQ(error_kind([&] { store.update_snapshot("etc", 99, ud); }), Kind::NotFound);
}

TEST_F(SnapshotStoreTest, PendingRollbackSurvivesReopen)
{
    int64_t target = 0;
    {
        SnapshotStore store = SnapshotStore::open(db());
        make_stack(store, "boot");
        take_snapshot(store, "boot");
        target = store.get_snapshot("boot", 1)->layer;
        EXPECT_FALSE(store.pending_rollback("boot").has_value());
        store.set_pending_rollback("boot", target);
        EXPECT_EQ(error_kind([&] { store.set_pending_rollback("boot", 9999); }), Kind::NotFound);
    }
    SnapshotStore store = SnapshotStore::open(db());
    EXPECT_EQ(store.pending_rollback("boot"), target);
    store.clear_pending_rollback("boot");
    EXPECT_FALSE(store.pending_rollback("boot").has_value());
    EXPECT_EQ(error_kind([&] { store.clear_pending_rollback("nope"); }), Kind::NotFound);
}

TEST_F(SnapshotStoreTest, MergeLifecycleSurvivesReopen)
{
    int64_t parent = 0, child = 0, root = 0;
    {
        SnapshotStore store = SnapshotStore::open(db());
        root = make_stack(store, "s");
        take_snapshot(store, "s"); // 1 on root
        take_snapshot(store, "s"); // 2 on root's child
        parent = store.get_snapshot("s", 2)->layer;
        child = store.live_layer("s").value();
        EXPECT_EQ(error_kind([&] { store.begin_merge(parent, child); }), Kind::Conflict) << "snapshot 2 uses it";
        store.delete_snapshot_row("s", 2);
        EXPECT_EQ(error_kind([&] { store.begin_merge(parent, root); }), Kind::Invalid) << "not its child";
        EXPECT_EQ(error_kind([&] { store.begin_merge(root, parent); }), Kind::Conflict) << "snapshot 1 uses root";
        store.begin_merge(parent, child);
        EXPECT_EQ(store.get_layer(parent)->state, LayerState::Merging);
        EXPECT_EQ(error_kind([&] { store.create_layer("s", parent, LayerState::Live); }), Kind::Conflict)
            << "a merging layer keeps exactly one child";
        EXPECT_EQ(error_kind([&] { store.begin_merge(parent, child); }), Kind::Conflict) << "already merging";
        EXPECT_EQ(error_kind([&] { store.delete_layer(parent); }), Kind::Conflict);
        store.set_merge_state(parent, MergeState::Moving);
    }
    // A restart finds the merge and can resume it.
    SnapshotStore store = SnapshotStore::open(db());
    auto merges = store.merges_in_progress();
    ASSERT_EQ(merges.size(), 1u);
    EXPECT_EQ(merges[0].layer, parent);
    EXPECT_EQ(merges[0].into_layer, child);
    EXPECT_EQ(merges[0].stack, "s");
    EXPECT_EQ(merges[0].state, MergeState::Moving);
    store.finish_merge(parent);
    EXPECT_TRUE(store.merges_in_progress().empty());
    EXPECT_EQ(store.get_layer(child)->parent, root) << "the child takes the merged layer's place";
    EXPECT_EQ(store.get_layer(parent)->state, LayerState::Removing);
    EXPECT_TRUE(store.children_of(parent).empty());
    store.delete_layer(parent);
    EXPECT_EQ(error_kind([&] { store.finish_merge(parent); }), Kind::NotFound);
    EXPECT_EQ(check_whole_steps(store, "s", 0), "");
}

TEST_F(SnapshotStoreTest, EventsAreAnAppendOnlyLog)
{
    SnapshotStore store = SnapshotStore::open(db());
    for (int i = 0; i < 10; ++i)
        store.append_event(i % 2 ? "etc" : "var", "snapshot-created", static_cast<uint32_t>(i),
                           "n=" + std::to_string(i), 1000 + i);
    store.append_event("", "daemon-started", std::nullopt, "");
    auto all = store.recent_events(std::nullopt, 3);
    ASSERT_EQ(all.size(), 3u);
    EXPECT_EQ(all[0].kind, "daemon-started") << "newest first";
    EXPECT_FALSE(all[0].snapshot.has_value());
    EXPECT_EQ(all[1].detail, "n=9");
    auto etc = store.recent_events(std::string("etc"), 100);
    ASSERT_EQ(etc.size(), 5u);
    EXPECT_EQ(etc[0].snapshot, 9u);
    EXPECT_EQ(etc[0].time, 1009);
    EXPECT_EQ(error_kind([&] { store.database_for_testing().exec("UPDATE events SET detail = 'x'"); }),
              Kind::Constraint);
    store.prune_events(4);
    auto left = store.recent_events(std::nullopt, 100);
    ASSERT_EQ(left.size(), 4u);
    EXPECT_EQ(left[0].kind, "daemon-started");
    EXPECT_EQ(left[3].detail, "n=7");
    store.prune_events(100); // fewer than KEEP: nothing goes
    EXPECT_EQ(store.recent_events(std::nullopt, 100).size(), 4u);
}

// ---- atomicity ----

TEST_F(SnapshotStoreTest, GroupedTransactionIsAtomic)
{
    int64_t live_before = 0;
    {
        SnapshotStore store = SnapshotStore::open(db());
        live_before = make_stack(store, "etc");
        EXPECT_THROW(take_snapshot(store, "etc", {{"k", "v"}}, true), std::runtime_error);
        // Nothing of the step is visible, on this connection ...
        EXPECT_EQ(store.live_layer("etc"), live_before);
        EXPECT_EQ(store.get_layer(live_before)->state, LayerState::Live);
        EXPECT_TRUE(store.list_snapshots("etc").empty());
        EXPECT_EQ(store.list_layers("etc").size(), 1u);
    }
    // ... nor in the file.
    {
        SnapshotStore store = SnapshotStore::open(db());
        EXPECT_EQ(store.live_layer("etc"), live_before);
        EXPECT_EQ(store.get_layer(live_before)->state, LayerState::Live);
        EXPECT_TRUE(store.list_snapshots("etc").empty());
        EXPECT_EQ(store.list_layers("etc").size(), 1u);
        EXPECT_EQ(take_snapshot(store, "etc", {{"k", "v"}}), 1u) << "the failed step consumed no number";
    }
    SnapshotStore store = SnapshotStore::open(db());
    EXPECT_EQ(check_whole_steps(store, "etc", 1), "");
    EXPECT_EQ(store.get_layer(live_before)->state, LayerState::Frozen);
}

TEST_F(SnapshotStoreTest, NestedFailureUndoesOnlyItself)
{
    SnapshotStore store = SnapshotStore::open(db());
    store.transaction([&] {
        store.ensure_stack("a");
        try {
            store.transaction([&] {
                store.ensure_stack("b");
                throw std::runtime_error("inner fails");
            });
        } catch (const std::runtime_error&) {
        }
        // A method that fails after checks is undone alone as well.
        EXPECT_EQ(error_kind([&] { store.create_layer("a", 424242, LayerState::Live); }), Kind::NotFound);
        store.ensure_stack("c");
    });
    EXPECT_EQ(store.list_stacks(), (std::vector<std::string>{"a", "c"}));
    EXPECT_EQ(store.list_layers("a").size(), 0u);
    EXPECT_EQ(error_kind([&] { store.read_transaction([&] { store.ensure_stack("d"); }); }), Kind::Invalid)
        << "a write nested in a read transaction is a bug";
    EXPECT_FALSE(store.has_stack("d"));
}

// ---- crashes ----

namespace {

// Runs BODY in a child process and returns its wait status. The child opens
// its own connection: an SQLite connection must not cross a fork.
template <class F>
int in_child(F&& body)
{
    pid_t pid = ::fork();
    if (pid == 0) {
        try {
            body();
        } catch (...) {
            ::_exit(3);
        }
        ::_exit(0);
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    return status;
}

} // namespace

TEST_F(SnapshotStoreTest, ExitBeforeCommitLeavesNothing)
{
    int64_t live = 0;
    {
        SnapshotStore store = SnapshotStore::open(db());
        live = make_stack(store, "etc");
    }
    for (bool kill : {false, true}) {
        int status = in_child([&] {
            SnapshotStore store = SnapshotStore::open(db());
            store.transaction([&] {
                int64_t old_live = store.live_layer("etc").value();
                store.set_layer_state(old_live, LayerState::Frozen);
                int64_t new_live = store.create_layer("etc", old_live, LayerState::Live);
                SnapshotRecord s = snapshot_of("etc", old_live);
                s.userdata = {{"k", "v"}};
                store.record_snapshot(s);
                store.set_live_layer("etc", new_live);
                store.append_event("etc", "created", 1, "");
                // Dies with the transaction open: no destructor, no rollback.
                if (kill)
                    ::raise(SIGKILL);
                ::_exit(7);
            });
        });
        if (kill)
            ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << status;
        else
            ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 7) << status;

        SnapshotStore store = SnapshotStore::open(db());
        EXPECT_EQ(store.live_layer("etc"), live);
        EXPECT_EQ(store.get_layer(live)->state, LayerState::Live);
        EXPECT_EQ(store.list_layers("etc").size(), 1u);
        EXPECT_TRUE(store.list_snapshots("etc").empty());
        EXPECT_TRUE(store.recent_events(std::nullopt, 10).empty());
        EXPECT_TRUE(store.integrity_problems().empty());
    }
}

TEST_F(SnapshotStoreTest, KillRightAfterCommitKeepsEverything)
{
    {
        SnapshotStore store = SnapshotStore::open(db());
        make_stack(store, "etc");
    }
    int status = in_child([&] {
        SnapshotStore store = SnapshotStore::open(db());
        take_snapshot(store, "etc", {{"k", "v"}});
        take_snapshot(store, "etc", {{"k", "w"}});
        // No clean close: the WAL is not checkpointed into the main file.
        ::raise(SIGKILL);
    });
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << status;
    struct stat st;
    EXPECT_EQ(::stat((db() + "-wal").c_str(), &st), 0) << "the commits live in the WAL";

    SnapshotStore store = SnapshotStore::open(db());
    EXPECT_EQ(check_whole_steps(store, "etc", 1), "");
    auto snaps = store.list_snapshots("etc");
    ASSERT_EQ(snaps.size(), 2u);
    EXPECT_EQ(snaps[1].userdata.at("k"), "w");
    EXPECT_EQ(take_snapshot(store, "etc"), 3u);
    EXPECT_TRUE(store.integrity_problems().empty());
}

TEST_F(SnapshotStoreTest, KilledAtRandomMomentsLeavesOnlyWholeSteps)
{
    {
        SnapshotStore store = SnapshotStore::open(db());
        make_stack(store, "etc");
    }
    size_t reported_total = 0;
    for (int round = 0; round < 8; ++round) {
        int pipefd[2];
        ASSERT_EQ(::pipe2(pipefd, O_CLOEXEC), 0);
        pid_t pid = ::fork();
        if (pid == 0) {
            ::close(pipefd[0]);
            try {
                SnapshotStore store = SnapshotStore::open(db());
                for (;;) {
                    take_snapshot(store, "etc", {{"a", "1"}, {"b", "2"}, {"c", "3"}});
                    char c = 'x';
                    if (::write(pipefd[1], &c, 1) != 1)
                        ::_exit(4);
                }
            } catch (...) {
                ::_exit(3);
            }
        }
        ::close(pipefd[1]);
        // Let it commit a few, then kill it at an arbitrary point.
        char buf[8];
        size_t seen = 0;
        while (seen < 3 && ::read(pipefd[0], buf, 1) == 1)
            ++seen;
        std::this_thread::sleep_for(std::chrono::microseconds(200 * round + 50));
        ::kill(pid, SIGKILL);
        int status = 0;
        ::waitpid(pid, &status, 0);
        ASSERT_TRUE(WIFSIGNALED(status)) << "child failed on its own: " << status;
        ssize_t r;
        while ((r = ::read(pipefd[0], buf, sizeof buf)) > 0)
            seen += static_cast<size_t>(r);
        ::close(pipefd[0]);
        reported_total += seen;

        SnapshotStore store = SnapshotStore::open(db());
        EXPECT_EQ(check_whole_steps(store, "etc", 3), "") << "round " << round;
        size_t have = store.list_snapshots("etc").size();
        EXPECT_GE(have, reported_total) << "a reported commit was lost";
        EXPECT_LE(have, reported_total + 1) << "at most the one being reported";
        reported_total = have;
        EXPECT_TRUE(store.integrity_problems().empty());
    }
}

// ---- concurrency ----

TEST_F(SnapshotStoreTest, ReadersSeeWholeStepsWhileAWriterWrites)
{
    {
        SnapshotStore store = SnapshotStore::open(db());
        make_stack(store, "etc");
    }
    constexpr int steps = 150;
    std::atomic<bool> done{false};
    std::atomic<int> reads{0}, readers_open{0};
    std::vector<std::string> problems(3);
    std::thread writer([&] {
        try {
            SnapshotStore store = SnapshotStore::open(db());
            while (readers_open < 2)
                std::this_thread::yield();
            for (int i = 0; i < steps; ++i)
                take_snapshot(store, "etc", {{"a", "1"}, {"b", "2"}});
        } catch (const std::exception& e) {
            problems[0] = e.what();
        }
        done = true;
    });
    std::vector<std::thread> readers;
    for (int r = 1; r <= 2; ++r)
        readers.emplace_back([&, r] {
            try {
                SnapshotStore store = SnapshotStore::open(db());
                ++readers_open;
                while (!done && problems[static_cast<size_t>(r)].empty()) {
                    problems[static_cast<size_t>(r)] = check_whole_steps(store, "etc", 2);
                    ++reads;
                }
            } catch (const std::exception& e) {
                problems[static_cast<size_t>(r)] = e.what();
                ++readers_open;
            }
        });
    writer.join();
    for (auto& t : readers)
        t.join();
    for (const auto& p : problems)
        EXPECT_EQ(p, "");
    EXPECT_GT(reads.load(), 10) << "readers ran while the writer wrote";
    SnapshotStore store = SnapshotStore::open(db());
    EXPECT_EQ(store.list_snapshots("etc").size(), static_cast<size_t>(steps));
}

TEST_F(SnapshotStoreTest, WritersOnTwoConnectionsWaitForEachOther)
{
    {
        SnapshotStore store = SnapshotStore::open(db());
        make_stack(store, "etc");
    }
    std::vector<std::string> problems(2);
    std::vector<std::thread> writers;
    for (size_t w = 0; w < 2; ++w)
        writers.emplace_back([&, w] {
            try {
                SnapshotStore store = SnapshotStore::open(db());
                for (int i = 0; i < 60; ++i) {
                    take_snapshot(store, "etc", {{"writer", std::to_string(w)}});
                    store.append_event("etc", "created", std::nullopt, "");
                }
            } catch (const std::exception& e) {
                problems[w] = e.what();
            }
        });
    for (auto& t : writers)
        t.join();
    EXPECT_EQ(problems[0], "");
    EXPECT_EQ(problems[1], "");
    SnapshotStore store = SnapshotStore::open(db());
    EXPECT_EQ(check_whole_steps(store, "etc", 1), "");
    EXPECT_EQ(store.list_snapshots("etc").size(), 120u);
}

TEST_F(SnapshotStoreTest, OneStoreServesManyThreads)
{
    SnapshotStore store = SnapshotStore::open(db());
    make_stack(store, "etc");
    std::vector<std::thread> threads;
    threads.reserve(4);
    std::atomic<int> failures{0};
    for (int t = 0; t < 4; ++t)
        threads.emplace_back([&] {
            for (int i = 0; i < 25; ++i) {
                try {
                    take_snapshot(store, "etc", {{"x", "y"}});
                    if (!check_whole_steps(store, "etc", 1).empty())
                        ++failures;
                } catch (const std::exception&) {
                    ++failures;
                }
            }
        });
    for (auto& t : threads)
        t.join();
    EXPECT_EQ(failures.load(), 0);
    EXPECT_EQ(store.list_snapshots("etc").size(), 100u);
}

// ---- arbitrary strings ----

TEST_F(SnapshotStoreTest, UserdataRoundTripsArbitraryStrings)
{
    const std::map<std::string, std::string> userdata{
        {"plain", "value"},
        {"quote'", "it's \"quoted\""},
        {"sql", "'); DROP TABLE snapshots; --"},
        {"'; DELETE FROM userdata; --", "key is SQL"},
        {"unicode \u00e9\u4e2d\U0001F600", "\u00fcml\u00e4ut \u0645\u0631\u062d\u0628\u0627"},
        {"", "empty key"},
        {"empty value", ""},
        {"newline\nand\ttab", "line1\nline2\r\n"},
        {"percent %s %d %n", "{} {0} {:>10}"},
        {"backslash \\ \\0", "?1 ?2 :name @x $y"},
        {"not utf-8 \xff\xfe", "\xc3\x28 \x80"},
        {std::string("nul\0inside", 10), std::string("a\0b\0", 4)},
        {"long", std::string(100000, 'z')},
    };
    const std::string stack = "stack'; DROP TABLE layers; --";
    const std::string description = "desc \"with\" 'quotes' and ; -- comment";
    {
        SnapshotStore store = SnapshotStore::open(db());
        make_stack(store, stack);
        store.transaction([&] {
            int64_t old_live = store.live_layer(stack).value();
            store.set_layer_state(old_live, LayerState::Frozen);
            int64_t new_live = store.create_layer(stack, old_live, LayerState::Live);
            SnapshotRecord s = snapshot_of(stack, old_live);
            s.description = description;
            s.userdata = userdata;
            s.uid = 4294967295u;
            store.record_snapshot(s);
            store.set_live_layer(stack, new_live);
        });
        store.append_event(stack, "kind'--", 1, "detail \xff");
    }
    SnapshotStore store = SnapshotStore::open(db());
    EXPECT_EQ(store.list_stacks(), std::vector<std::string>{stack});
    auto s = store.get_snapshot(stack, 1);
    ASSERT_TRUE(s);
    EXPECT_EQ(s->description, description);
    EXPECT_EQ(s->uid, 4294967295u);
    EXPECT_EQ(s->userdata, userdata);
    EXPECT_EQ(store.list_snapshots(stack).at(0).userdata, userdata);
    EXPECT_EQ(store.recent_events(stack, 1).at(0).detail, "detail \xff");
    EXPECT_TRUE(store.integrity_problems().empty());
}

// ---- the wrappers ----

TEST_F(SnapshotStoreTest, WrapperErrorsNameTheSql)
{
    Database raw = Database::open(db(), Database::ReadWrite | Database::Create);
    std::string message;
    EXPECT_EQ(error_kind([&] { raw.exec("CREATE TABLE t (x INTEGER NOT NULL); INSERT INTO t VALUES (NULL)"); },
                         &message),
              Kind::Constraint);
    EXPECT_NE(message.find("INSERT INTO t VALUES (NULL)"), std::string::npos) << message;
    EXPECT_EQ(error_kind([&] { raw.prepare("SELECT 1; SELECT 2"); }), Kind::Invalid);
    EXPECT_EQ(error_kind([&] { raw.prepare("SELEC 1"); }, &message), Kind::Io);
    EXPECT_NE(message.find("SELEC 1"), std::string::npos) << message;
    Statement st = raw.prepare("SELECT ?1, ?2");
    EXPECT_EQ(error_kind([&] { st.bind(3, int64_t{1}); }), Kind::Invalid);
    st.bind(1, "x").bind(2, std::nullopt);
    ASSERT_TRUE(st.step());
    EXPECT_EQ(st.column_text(0), "x");
    EXPECT_TRUE(st.column_is_null(1));
    EXPECT_FALSE(st.column_optional_int64(1).has_value());
    EXPECT_EQ(error_kind([&] { st.column_text(2); }), Kind::Invalid);
    EXPECT_FALSE(st.step());
    st.reset();
    ASSERT_TRUE(st.step());
    EXPECT_TRUE(st.column_is_null(0)) << "reset clears bindings";
    EXPECT_EQ(error_kind([&] { Database::open(dir.path + "/missing.db", Database::ReadWrite); }), Kind::Io);
    EXPECT_EQ(error_kind([&] { Database::open(db(), Database::ReadOnly | Database::ReadWrite); }), Kind::Invalid);
}

TEST_F(SnapshotStoreTest, TransactionRollsBackUnlessCommitted)
{
    Database raw = Database::open(db(), Database::ReadWrite | Database::Create);
    raw.exec("CREATE TABLE t (x INTEGER)");
    {
        Transaction tx(raw);
        raw.exec("INSERT INTO t VALUES (1)");
        EXPECT_TRUE(raw.in_transaction());
    }
    EXPECT_FALSE(raw.in_transaction());
    EXPECT_EQ(raw.query_int64("SELECT count(*) FROM t"), 0);
    {
        Transaction tx(raw);
        raw.exec("INSERT INTO t VALUES (1)");
        {
            Transaction inner(raw);
            raw.exec("INSERT INTO t VALUES (2)");
        }
        {
            Transaction inner(raw);
            raw.exec("INSERT INTO t VALUES (3)");
            inner.commit();
        }
        tx.commit();
        EXPECT_EQ(error_kind([&] { tx.commit(); }), Kind::Invalid);
    }
    EXPECT_EQ(raw.query_text("SELECT group_concat(x) FROM t"), "1,3");
}

// ---- a full filesystem ----

namespace {

// A small tmpfs, unmounted however the test ends.
struct TinyFs {
    TinyFs()
    {
        char tmpl[] = "/var/tmp/layerd-tinyfs.XXXXXX";
        path = mkdtemp(tmpl);
        if (::geteuid() != 0) {
            why_not = "needs root to mount a tmpfs";
            return;
        }
        if (::mount("tmpfs", path.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, "size=2m,mode=0700") != 0) {
            why_not = std::string("cannot mount a tmpfs: ") + std::strerror(errno);
            return;
        }
        mounted = true;
    }
    ~TinyFs()
    {
        if (mounted)
            ::umount2(path.c_str(), MNT_DETACH);
        ::rmdir(path.c_str());
    }
    TinyFs(const TinyFs&) = delete;
    TinyFs& operator=(const TinyFs&) = delete;

    // Writes FILE until the filesystem is full; returns the bytes written.
    size_t fill(const std::string& file) const
    {
        int fd = ::open((path + "/" + file).c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
        if (fd < 0)
            return 0;
        std::string block(4096, 'f');
        size_t total = 0;
        for (;;) {
            ssize_t n = ::write(fd, block.data(), block.size());
            if (n <= 0)
                break;
            total += static_cast<size_t>(n);
        }
        // Fill the last partial block too.
        while (::write(fd, block.data(), 1) == 1)
            ++total;
        ::close(fd);
        return total;
    }

    std::string path;
    std::string why_not;
    bool mounted = false;
};

} // namespace

TEST(SnapshotStoreFullDisk, WriteFailsCleanlyAndTheDatabaseStaysIntact)
{
    TinyFs fs;
    if (!fs.mounted)
        GTEST_SKIP() << fs.why_not;
    const std::string db = fs.path + "/layerd.db";
    {
        SnapshotStore store = SnapshotStore::open(db);
        make_stack(store, "etc");
        take_snapshot(store, "etc", {{"k", "before"}});
        take_snapshot(store, "etc", {{"k", "before"}});
        ASSERT_GT(fs.fill("filler"), 0u);

        // A grouped step with a big value needs new pages: it must fail as a
        // whole with a StoreError, not crash or half-apply.
        std::string message;
        auto kind = error_kind([&] { take_snapshot(store, "etc", {{"big", std::string(256 * 1024, 'b')}}); },
                               &message);
        ASSERT_TRUE(kind.has_value()) << "the write should not fit";
        EXPECT_EQ(*kind, Kind::Full) << message;
        EXPECT_NE(message.find("full"), std::string::npos) << message;
        std::cout << "[          ] the full disk said: " << message << '\n';

        // Still readable and whole, on the same connection and on a new one.
        EXPECT_EQ(check_whole_steps(store, "etc", 1), "");
        EXPECT_EQ(store.list_snapshots("etc").size(), 2u);
        EXPECT_TRUE(store.integrity_problems().empty());
        {
            SnapshotStore other = SnapshotStore::open(db);
            EXPECT_EQ(other.list_snapshots("etc").size(), 2u);
            EXPECT_EQ(check_whole_steps(other, "etc", 1), "");
        }

        // With space again, writing works on the same connection.
        ASSERT_EQ(::unlink((fs.path + "/filler").c_str()), 0);
        EXPECT_EQ(take_snapshot(store, "etc", {{"k", "after"}}), 3u);
    }
    SnapshotStore store = SnapshotStore::open(db);
    EXPECT_EQ(check_whole_steps(store, "etc", 1), "");
    EXPECT_EQ(store.list_snapshots("etc").size(), 3u);
    EXPECT_TRUE(store.integrity_problems().empty());
}
