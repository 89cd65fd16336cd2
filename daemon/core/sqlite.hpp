// SPDX-License-Identifier: LGPL-2.1-or-later
// Thin RAII wrappers over the SQLite C API. This header deliberately does not
// include <sqlite3.h>: only sqlite.cpp talks to SQLite directly, so nothing
// else can bypass bound parameters or forget to finalize a statement.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

struct sqlite3_stmt;

namespace layerd {

// Any failure of the state database. what() carries SQLite's message and the
// SQL that failed (the statement text, never the bound values: those may be
// user data). kind() lets the D-Bus layer pick a specific error name.
class StoreError : public std::runtime_error {
public:
    enum class Kind {
        Io,         // SQLite I/O, open or other errors not listed below
        Busy,       // the database stayed locked past the busy timeout
        Full,       // the filesystem (or a size limit) is full
        Constraint, // a schema constraint refused the change
        Corrupt,    // the file is damaged or not a database
        NotFound,   // no such stack, layer or snapshot
        Conflict,   // the change would break an invariant (e.g. layer in use)
        Schema,     // the schema version is newer than this build knows
        Invalid,    // an argument the store cannot accept
    };

    StoreError(Kind kind, const std::string& what, int sqlite_code = 0)
        : std::runtime_error(what), kind_(kind), sqlite_code_(sqlite_code)
    {
    }

    Kind kind() const noexcept { return kind_; }
    // The extended SQLite result code, or 0 when the error is the store's own.
    int sqlite_code() const noexcept { return sqlite_code_; }

private:
    Kind kind_;
    int sqlite_code_;
};

namespace detail {
// The open connection, shared by a Database and its Statements and
// Transactions: it closes when the last of them goes, and its address
// survives a move of the Database.
struct Connection;
} // namespace detail

// One prepared statement; finalized on destruction; keeps its connection
// open. Bind indexes start at 1, column indexes at 0, as in SQLite.
class Statement {
public:
    Statement(Statement&& other) noexcept;
    Statement& operator=(Statement&& other) noexcept;
    Statement(const Statement&) = delete;
    Statement& operator=(const Statement&) = delete;
    ~Statement();

    Statement& bind(int index, int64_t value);
    // Text is bound with its explicit length and copied, so any byte string
    // (quotes, SQL, embedded NULs, invalid UTF-8) is stored as given.
    Statement& bind(int index, std::string_view value);
    Statement& bind(int index, const char* value) { return bind(index, std::string_view(value)); }
    Statement& bind(int index, const std::string& value) { return bind(index, std::string_view(value)); }
    Statement& bind(int index, std::nullopt_t);
    template <class T>
    Statement& bind(int index, const std::optional<T>& value)
    {
        return value ? bind(index, *value) : bind(index, std::nullopt);
    }

    // Advances; true when a row is available, false when the statement is done.
    bool step();
    // Steps to completion, ignoring any rows (for statements run for effect).
    void run();
    // Makes the statement reusable and clears its bindings.
    void reset() noexcept;

    int64_t column_int64(int column) const;
    std::string column_text(int column) const;
    bool column_is_null(int column) const;
    std::optional<int64_t> column_optional_int64(int column) const;

private:
    friend class Database;
    Statement(sqlite3_stmt* stmt, std::shared_ptr<detail::Connection> conn) noexcept
        : stmt_(stmt), conn_(std::move(conn))
    {
    }
    [[noreturn]] void fail(int rc) const;

    sqlite3_stmt* stmt_ = nullptr;
    std::shared_ptr<detail::Connection> conn_;
};

// One connection. Not safe to use from several threads at once (transactions
// are per connection); callers serialise, as SnapshotStore does.
class Database {
public:
    enum OpenFlags : unsigned {
        ReadOnly = 1u << 0,
        ReadWrite = 1u << 1,
        Create = 1u << 2,   // with ReadWrite: create the file if missing
        NoFollow = 1u << 3, // refuse a path whose last component is a symlink
    };

    // Opens PATH with extended result codes and a busy timeout, so a short
    // lock held by another connection is waited for, not reported.
    static Database open(const std::string& path, unsigned flags, int busy_timeout_ms = 5000);

    Database(Database&&) noexcept = default;
    Database& operator=(Database&&) noexcept = default;
    Database(const Database&) = delete;
    Database& operator=(const Database&) = delete;
    ~Database();

    // Runs one or more ';'-separated statements, discarding rows. Each is
    // prepared on its own so an error names the statement that failed.
    void exec(std::string_view sql);
    Statement prepare(std::string_view sql);

    // For PRAGMAs and counts: the first column of the first row, if any.
    std::optional<int64_t> query_int64(std::string_view sql);
    std::optional<std::string> query_text(std::string_view sql);

    int64_t last_insert_rowid() const noexcept;
    int64_t changes() const noexcept;
    // True while a transaction is open on this connection.
    bool in_transaction() const noexcept;
    const std::string& path() const noexcept;

private:
    friend class Transaction;
    explicit Database(std::shared_ptr<detail::Connection> conn) noexcept : conn_(std::move(conn)) {}

    std::shared_ptr<detail::Connection> conn_;
};

// A transaction, rolled back on destruction unless committed. A Transaction
// opened while another is open on the same connection becomes a SAVEPOINT:
// a failed inner step undoes only itself, and only the outermost commit
// makes anything durable.
class Transaction {
public:
    enum class Mode {
        // BEGIN IMMEDIATE: take the write lock now. A deferred transaction
        // that reads and then writes can get SQLITE_BUSY without the busy
        // handler ever being called; taking the lock up front avoids that.
        Write,
        // BEGIN DEFERRED: a consistent read snapshot; in WAL mode it never
        // blocks a writer nor waits for one.
        Read,
    };

    explicit Transaction(Database& db, Mode mode = Mode::Write);
    Transaction(const Transaction&) = delete;
    Transaction& operator=(const Transaction&) = delete;
    ~Transaction();

    void commit();

private:
    void rollback() noexcept;

    std::shared_ptr<detail::Connection> conn_;
    std::string savepoint_; // empty for the outermost transaction
    std::string rollback_sql_;
    bool open_ = false;
};

} // namespace layerd
