// SPDX-License-Identifier: LGPL-2.1-or-later
#include "sqlite.hpp"

#include <sqlite3.h>

#include <climits>
#include <fmt/format.h>
#include <utility>

namespace layerd {

namespace detail {

struct Connection {
    Connection(sqlite3* handle, std::string file) : db(handle), path(std::move(file)) {}
    Connection(const Connection&) = delete;
    Connection& operator=(const Connection&) = delete;
    // close_v2 tolerates unfinalized statements, but there are none: every
    // Statement holds a reference to this object.
    ~Connection() { sqlite3_close_v2(db); }

    sqlite3* db;
    std::string path;
    int depth = 0;           // open Transactions on this connection
    bool writing = false;    // the outermost one is Mode::Write
};

} // namespace detail

namespace {

using detail::Connection;

StoreError::Kind kind_of(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return StoreError::Kind::Busy;
    case SQLITE_FULL:
        return StoreError::Kind::Full;
    case SQLITE_CONSTRAINT:
        return StoreError::Kind::Constraint;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
        return StoreError::Kind::Corrupt;
    case SQLITE_RANGE:
    case SQLITE_MISUSE:
    case SQLITE_TOOBIG:
        return StoreError::Kind::Invalid;
    default:
        return StoreError::Kind::Io;
    }
}

// SQL as one short line: messages end up in the journal, one line each.
std::string one_line(std::string_view sql)
{
    constexpr size_t max_chars = 300;
    std::string out;
    bool space = false;
    for (char c : sql) {
        if (c == ' ' || c == '\n' || c == '\t' || c == '\r') {
            space = !out.empty();
            continue;
        }
        if (space)
            out += ' ';
        space = false;
        out += c;
        if (out.size() >= max_chars) {
            out += "...";
            break;
        }
    }
    return out;
}

[[noreturn]] void fail(sqlite3* db, int rc, std::string_view sql)
{
    // sqlite3_errmsg describes the most recent failure on this connection,
    // which is this one: nothing else has run on it since.
    const char* msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    throw StoreError(kind_of(rc), fmt::format("{} (SQL: {})", msg, one_line(sql)), rc);
}

// Runs SQL with no parameters, for transaction control in destructors,
// where failing must not throw.
int exec_quietly(sqlite3* db, const char* sql) noexcept
{
    return sqlite3_exec(db, sql, nullptr, nullptr, nullptr);
}

void exec_on(const std::shared_ptr<Connection>& conn, std::string_view sql);

} // namespace

// ---- Statement ----

Statement::Statement(Statement&& other) noexcept
    : stmt_(std::exchange(other.stmt_, nullptr)), conn_(std::move(other.conn_))
{
}

Statement& Statement::operator=(Statement&& other) noexcept
{
    if (this != &other) {
        sqlite3_finalize(stmt_);
        stmt_ = std::exchange(other.stmt_, nullptr);
        conn_ = std::move(other.conn_);
    }
    return *this;
}

Statement::~Statement() { sqlite3_finalize(stmt_); }

void Statement::fail(int rc) const
{
    layerd::fail(sqlite3_db_handle(stmt_), rc, sqlite3_sql(stmt_) ? sqlite3_sql(stmt_) : "");
}

Statement& Statement::bind(int index, int64_t value)
{
    if (int rc = sqlite3_bind_int64(stmt_, index, value); rc != SQLITE_OK)
        fail(rc);
    return *this;
}

Statement& Statement::bind(int index, std::string_view value)
{
    if (value.size() > static_cast<size_t>(INT_MAX))
        throw StoreError(StoreError::Kind::Invalid,
                         fmt::format("text of {} bytes is too long to store", value.size()));
    // SQLITE_TRANSIENT: SQLite copies now, so VALUE need not outlive the step.
    // A zero-length view may have a null data(); SQLite would bind NULL then.
    const char* data = value.data() ? value.data() : "";
    int rc = sqlite3_bind_text(stmt_, index, data, static_cast<int>(value.size()), SQLITE_TRANSIENT);
    if (rc != SQLITE_OK)
        fail(rc);
    return *this;
}

Statement& Statement::bind(int index, std::nullopt_t)
{
    if (int rc = sqlite3_bind_null(stmt_, index); rc != SQLITE_OK)
        fail(rc);
    return *this;
}

bool Statement::step()
{
    // After SQLITE_FULL, IOERR, BUSY or NOMEM SQLite may roll back the whole
    // transaction on its own. Anything run after that would autocommit
    // piecemeal, outside the transaction the caller believes is open:
    // refuse, so the caller's step fails as a whole.
    if (conn_->depth > 0 && sqlite3_get_autocommit(conn_->db))
        throw StoreError(StoreError::Kind::Io,
                         fmt::format("the transaction was rolled back by SQLite after an earlier "
                                     "error; not running outside it (SQL: {})",
                                     one_line(sqlite3_sql(stmt_))));
    int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW)
        return true;
    if (rc == SQLITE_DONE)
        return false;
    fail(rc);
}

void Statement::run()
{
    while (step()) {
    }
}

void Statement::reset() noexcept
{
    // The return code repeats the last step's error, already reported.
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
}

namespace {

void check_column(sqlite3_stmt* stmt, int column)
{
    if (column < 0 || column >= sqlite3_column_count(stmt))
        throw StoreError(StoreError::Kind::Invalid,
                         fmt::format("column {} out of range (SQL: {})", column, one_line(sqlite3_sql(stmt))));
}

} // namespace

int64_t Statement::column_int64(int column) const
{
    check_column(stmt_, column);
    return sqlite3_column_int64(stmt_, column);
}

std::string Statement::column_text(int column) const
{
    check_column(stmt_, column);
    const unsigned char* text = sqlite3_column_text(stmt_, column);
    if (!text) {
        if (sqlite3_column_type(stmt_, column) == SQLITE_NULL)
            return {};
        fail(SQLITE_NOMEM);
    }
    // Length from column_bytes, not strlen: embedded NULs round-trip.
    int size = sqlite3_column_bytes(stmt_, column);
    return std::string(reinterpret_cast<const char*>(text), static_cast<size_t>(size));
}

bool Statement::column_is_null(int column) const
{
    check_column(stmt_, column);
    return sqlite3_column_type(stmt_, column) == SQLITE_NULL;
}

std::optional<int64_t> Statement::column_optional_int64(int column) const
{
    if (column_is_null(column))
        return std::nullopt;
    return sqlite3_column_int64(stmt_, column);
}

// ---- Database ----

Database Database::open(const std::string& path, unsigned flags, int busy_timeout_ms)
{
    bool ro = flags & ReadOnly, rw = flags & ReadWrite;
    if (ro == rw)
        throw StoreError(StoreError::Kind::Invalid,
                         fmt::format("opening '{}': exactly one of ReadOnly and ReadWrite is needed", path));
    if (path.empty() || path.find('\0') != std::string::npos)
        throw StoreError(StoreError::Kind::Invalid, "database path is empty or contains a NUL byte");

    int sqlite_flags = (ro ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE) | SQLITE_OPEN_EXRESCODE;
    if (rw && (flags & Create))
        sqlite_flags |= SQLITE_OPEN_CREATE;
    if (flags & NoFollow)
        sqlite_flags |= SQLITE_OPEN_NOFOLLOW;

    // Debian's SQLite is built with SQLITE_USE_URI: a relative name starting
    // with "file:" would be parsed as a URI with options. Anchor it.
    std::string name = path.front() == '/' ? path : "./" + path;

    sqlite3* raw = nullptr;
    int rc = sqlite3_open_v2(name.c_str(), &raw, sqlite_flags, nullptr);
    // The handle exists even when opening failed and must be closed then too.
    auto conn = std::make_shared<Connection>(raw, path);
    if (rc != SQLITE_OK)
        throw StoreError(kind_of(rc),
                         fmt::format("cannot open database '{}': {}", path,
                                     raw ? sqlite3_errmsg(raw) : sqlite3_errstr(rc)),
                         rc);
    sqlite3_extended_result_codes(raw, 1);
    sqlite3_busy_timeout(raw, busy_timeout_ms);
    return Database(std::move(conn));
}

Database::~Database() = default;

namespace {

void exec_on(const std::shared_ptr<Connection>& conn, std::string_view sql)
{
    while (!sql.empty()) {
        if (sql.size() > static_cast<size_t>(INT_MAX))
            throw StoreError(StoreError::Kind::Invalid, "SQL text too long");
        sqlite3_stmt* raw = nullptr;
        const char* tail = nullptr;
        int rc = sqlite3_prepare_v2(conn->db, sql.data(), static_cast<int>(sql.size()), &raw, &tail);
        if (rc != SQLITE_OK)
            fail(conn->db, rc, sql);
        sql.remove_prefix(static_cast<size_t>(tail - sql.data()));
        if (!raw)
            continue; // only whitespace or a comment was left
        struct Finalize {
            sqlite3_stmt* s;
            ~Finalize() { sqlite3_finalize(s); }
        } finalize_on_exit{raw};
        if (conn->depth > 0 && sqlite3_get_autocommit(conn->db))
            throw StoreError(StoreError::Kind::Io,
                             fmt::format("the transaction was rolled back by SQLite after an "
                                         "earlier error; not running outside it (SQL: {})",
                                         one_line(sqlite3_sql(raw))));
        while ((rc = sqlite3_step(raw)) == SQLITE_ROW) {
        }
        if (rc != SQLITE_DONE)
            fail(conn->db, rc, sqlite3_sql(raw));
    }
}

} // namespace

void Database::exec(std::string_view sql) { exec_on(conn_, sql); }

Statement Database::prepare(std::string_view sql)
{
    if (sql.size() > static_cast<size_t>(INT_MAX))
        throw StoreError(StoreError::Kind::Invalid, "SQL text too long");
    sqlite3_stmt* raw = nullptr;
    const char* tail = nullptr;
    int rc = sqlite3_prepare_v2(conn_->db, sql.data(), static_cast<int>(sql.size()), &raw, &tail);
    if (rc != SQLITE_OK)
        fail(conn_->db, rc, sql);
    if (!raw)
        throw StoreError(StoreError::Kind::Invalid, fmt::format("no SQL statement in '{}'", one_line(sql)));
    Statement st(raw, conn_);
    // A second statement after the first would be silently ignored.
    for (const char* p = tail; p < sql.data() + sql.size(); ++p)
        if (*p != ' ' && *p != '\n' && *p != '\t' && *p != '\r' && *p != ';')
            throw StoreError(StoreError::Kind::Invalid,
                             fmt::format("more than one SQL statement in '{}'", one_line(sql)));
    return st;
}

std::optional<int64_t> Database::query_int64(std::string_view sql)
{
    Statement st = prepare(sql);
    if (!st.step())
        return std::nullopt;
    return st.column_optional_int64(0);
}

std::optional<std::string> Database::query_text(std::string_view sql)
{
    Statement st = prepare(sql);
    if (!st.step() || st.column_is_null(0))
        return std::nullopt;
    return st.column_text(0);
}

int64_t Database::last_insert_rowid() const noexcept { return sqlite3_last_insert_rowid(conn_->db); }

int64_t Database::changes() const noexcept { return sqlite3_changes64(conn_->db); }

bool Database::in_transaction() const noexcept { return !sqlite3_get_autocommit(conn_->db); }

const std::string& Database::path() const noexcept { return conn_->path; }

// ---- Transaction ----

Transaction::Transaction(Database& db, Mode mode) : conn_(db.conn_)
{
    if (!conn_)
        throw StoreError(StoreError::Kind::Invalid, "transaction on a moved-from Database");
    if (conn_->depth == 0) {
        // A transaction left open by a ROLLBACK that itself failed holds
        // writes nobody will ever commit: discard them before starting.
        if (!sqlite3_get_autocommit(conn_->db))
            exec_quietly(conn_->db, "ROLLBACK");
        exec_on(conn_, mode == Mode::Write ? "BEGIN IMMEDIATE" : "BEGIN DEFERRED");
        conn_->writing = mode == Mode::Write;
    } else {
        // Upgrading a read snapshot to a writer can fail with BUSY_SNAPSHOT
        // at any point, without the busy handler: a bug, not a race to retry.
        if (mode == Mode::Write && !conn_->writing)
            throw StoreError(StoreError::Kind::Invalid, "a write transaction nested in a read transaction");
        savepoint_ = fmt::format("layerd_sp{}", conn_->depth);
        // Built now: the destructor must not allocate.
        rollback_sql_ = fmt::format("ROLLBACK TO {0}; RELEASE {0}", savepoint_);
        exec_on(conn_, "SAVEPOINT " + savepoint_);
    }
    ++conn_->depth;
    open_ = true;
}

Transaction::~Transaction() { rollback(); }

void Transaction::commit()
{
    if (!open_)
        throw StoreError(StoreError::Kind::Invalid, "commit of a transaction that is not open");
    // On failure the transaction stays open and the destructor rolls it back.
    exec_on(conn_, savepoint_.empty() ? std::string("COMMIT") : "RELEASE " + savepoint_);
    open_ = false;
    --conn_->depth;
}

void Transaction::rollback() noexcept
{
    if (!open_)
        return;
    open_ = false;
    --conn_->depth;
    // Errors are ignored: SQLite may already have rolled back on its own
    // (after FULL or IOERR), and then there is nothing left to undo.
    // For a savepoint, ROLLBACK TO undoes its writes but keeps it open;
    // the RELEASE after it closes it.
    exec_quietly(conn_->db, savepoint_.empty() ? "ROLLBACK" : rollback_sql_.c_str());
}

} // namespace layerd
