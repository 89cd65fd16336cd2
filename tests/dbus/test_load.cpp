// SPDX-License-Identifier: LGPL-2.1-or-later
// Load on the daemon (DESIGN §6, §10): 8 clients, each on its own bus
// connection, call CreateSnapshot, ListSnapshots, GetSnapshot, Diff (the fd
// read fully), live Rollback and DeleteSnapshots of their own older
// snapshots in a seeded random mix for 30 s (LAYERD_LOAD_SECONDS; 15 s under
// sanitizers) while a writer writes, appends, renames and unlinks files
// through the mount. No call may fail but with Busy (NoSuchSnapshot only for
// a snapshot its owner deleted), none may time out, nothing may hang; then
// the daemon still answers, every listed snapshot reads and diffs, the mount
// walks, the numbers add up, and SIGTERM ends layerd with 0 and no mount.
// Counts and the slowest call per method are printed, never judged.
// Needs root and /dev/fuse (exits 77 otherwise). LAYERD_LOAD_SEED sets the
// seed.
#include "bus_env.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <sdbus-c++/sdbus-c++.h>

#ifndef LAYERD_LOAD_SANITIZED
#define LAYERD_LOAD_SANITIZED 0
#endif

namespace layerd::test {
namespace {

constexpr const char* stack_path = "/org/layerd1/stack/demo";
constexpr const char* stack_iface = "org.layerd1.Stack";
constexpr auto call_timeout = std::chrono::seconds(60);
// An operation (a call or a writer's syscall) running this long is a hang.
constexpr auto hang_after = std::chrono::seconds(90);
constexpr int max_clients = 8;
// A client deletes its own older snapshots once it holds more than this.
constexpr size_t keep_per_client = 5;

using Clock = std::chrono::steady_clock;
using Userdata = std::map<std::string, std::string>;
using SnapshotStruct =
    sdbus::Struct<uint32_t, std::string, uint32_t, int64_t, uint32_t, std::string, std::string, bool, Userdata>;

const std::string err_busy = "org.layerd1.Error.Busy";
const std::string err_nosuch = "org.layerd1.Error.NoSuchSnapshot";

int run_seconds()
{
    if (const char* s = std::getenv("LAYERD_LOAD_SECONDS"); s && *s)
        return std::max(1, std::atoi(s));
    return LAYERD_LOAD_SANITIZED ? 15 : 30;
}

unsigned seed()
{
    if (const char* s = std::getenv("LAYERD_LOAD_SEED"); s && *s)
        return static_cast<unsigned>(std::strtoul(s, nullptr, 10));
    return 20261202;
}

long long ms(Clock::duration d)
{
    return static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(d).count());
}

// What every thread shares: failures, per-method counts, snapshot ownership.
class Shared {
public:
    void fail(const std::string& what)
    {
        std::lock_guard lock(mutex_);
        if (failures_.size() < 50)
            failures_.push_back(what);
        failed_ = true;
    }
    bool failed() const { return failed_; }
    std::vector<std::string> failures()
    {
        std::lock_guard lock(mutex_);
        return failures_;
    }

    struct MethodStats {
        unsigned long ok = 0, busy = 0, gone = 0;
        Clock::duration max{};
    };
    void count(const std::string& method, Clock::duration took, int outcome) // 0 ok, 1 busy, 2 gone
    {
        std::lock_guard lock(mutex_);
        auto& s = stats_[method];
        (outcome == 0 ? s.ok : outcome == 1 ? s.busy : s.gone)++;
        s.max = std::max(s.max, took);
    }
    std::map<std::string, MethodStats> stats()
    {
        std::lock_guard lock(mutex_);
        return stats_;
    }

    // A number the daemon handed out (snapshot or rollback backup), owned
    // by CLIENT; false when it was handed out before.
    bool created(uint32_t n, int client)
    {
        std::lock_guard lock(mutex_);
        return owner_.emplace(n, client).second;
    }
    void deleting(const std::vector<uint32_t>& ns, bool on)
    {
        std::lock_guard lock(mutex_);
        for (uint32_t n : ns)
            on ? (void)deleting_.insert(n) : (void)deleting_.erase(n);
    }
    void deleted(const std::vector<uint32_t>& ns)
    {
        std::lock_guard lock(mutex_);
        for (uint32_t n : ns) {
            deleting_.erase(n);
            deleted_.insert(n);
        }
    }
    // Whether a NoSuchSnapshot for N is explained by its owner deleting it.
    bool gone_by_owner(uint32_t n)
    {
        std::lock_guard lock(mutex_);
        return deleting_.count(n) || deleted_.count(n);
    }
    // Live rollbacks started and running: they explain EROFS and ESTALE.
    std::atomic<unsigned long> rollbacks_started{0};
    std::atomic<int> rollbacks_running{0};

    std::set<uint32_t> expected_live()
    {
        std::lock_guard lock(mutex_);
        std::set<uint32_t> out;
        for (const auto& [n, c] : owner_)
            if (!deleted_.count(n))
                out.insert(n);
        return out;
    }
    size_t created_count()
    {
        std::lock_guard lock(mutex_);
        return owner_.size();
    }
    size_t deleted_count()
    {
        std::lock_guard lock(mutex_);
        return deleted_.size();
    }

private:
    std::mutex mutex_;
    std::atomic<bool> failed_{false};
    std::vector<std::string> failures_;
    std::map<std::string, MethodStats> stats_;
    std::map<uint32_t, int> owner_;
    std::set<uint32_t> deleting_, deleted_;
};

// What a thread is doing, for the hang watchdog.
struct Activity {
    std::mutex mutex;
    std::string what = "starting";
    Clock::time_point since = Clock::now();
    std::atomic<bool> done{false};
    void set(std::string w)
    {
        std::lock_guard lock(mutex);
        what = std::move(w);
        since = Clock::now();
    }
    std::pair<std::string, Clock::duration> get()
    {
        std::lock_guard lock(mutex);
        return {what, Clock::now() - since};
    }
};

// --- Self-checking file content: every write is whole lines, each line
// carries its own checksum, so a torn or mixed write shows.

uint32_t fnv(const std::string& s)
{
    uint32_t h = 2166136261u;
    for (unsigned char c : s)
        h = (h ^ c) * 16777619u;
    return h;
}

std::string make_line(uint64_t seq, size_t len)
{
    std::string body = std::to_string(seq) + ":" + std::string(len, static_cast<char>('a' + seq % 26));
    char hex[16];
    std::snprintf(hex, sizeof hex, "%08x", fnv(body));
    return body + ":" + hex + "\n";
}

// "" when DATA is whole valid lines; else what is wrong.
std::string check_lines(const std::string& data)
{
    size_t pos = 0, line = 0;
    while (pos < data.size()) {
        size_t nl = data.find('\n', pos);
        if (nl == std::string::npos)
            return "a partial last line at byte " + std::to_string(pos);
        std::string l = data.substr(pos, nl - pos);
        size_t colon = l.rfind(':');
        char hex[16];
        if (colon == std::string::npos ||
            (std::snprintf(hex, sizeof hex, "%08x", fnv(l.substr(0, colon))), l.substr(colon + 1) != hex))
            return "line " + std::to_string(line) + " is corrupt: '" + l.substr(0, 80) + "'";
        pos = nl + 1;
        ++line;
    }
    return "";
}

// --- The writer.

class Writer {
public:
    Writer(std::string root, Shared& shared, Activity& activity, unsigned s)
        : root_(std::move(root)), shared_(shared), act_(activity), rng_(s)
    {
    }

    void run(const std::atomic<bool>& stop)
    {
        while (!stop && !shared_.failed())
            step();
        if (log_fd_ >= 0)
            ::close(log_fd_);
    }

    std::map<std::string, unsigned long> counts;
    std::map<std::string, unsigned long> tolerated; // "op errno" -> count

private:
    std::string dir(int d) const { return root_ + "/d" + std::to_string(d); }
    std::string file(int d, int f) const { return dir(d) + "/f" + std::to_string(f); }
    int pick(int n) { return std::uniform_int_distribution<int>(0, n - 1)(rng_); }
    std::string lines(size_t max_bytes)
    {
        std::string out;
        size_t want = 1 + static_cast<size_t>(pick(static_cast<int>(max_bytes)));
        while (out.size() < want)
            out += make_line(seq_++, static_cast<size_t>(pick(200)));
        return out;
    }

    // A point to tell whether a live rollback ran since.
    struct Since {
        unsigned long started;
        int running;
    };
    Since now() const { return {shared_.rollbacks_started.load(), shared_.rollbacks_running.load()}; }
    bool rolled_back_since(const Since& s) const
    {
        return s.running > 0 || shared_.rollbacks_running.load() > 0 || shared_.rollbacks_started.load() != s.started;
    }
    // The errors our own name changes explain (or a rollback that brought
    // back or took away names); EROFS and ESTALE (a node or fd of an old
    // view) only a live rollback during the operation (or since the fd was
    // opened) explains.
    bool explained(int err, const Since& since) const
    {
        if (err == ENOENT || err == EEXIST || err == ENOTEMPTY || err == ENOTDIR || err == EISDIR)
            return true;
        return (err == EROFS || err == ESTALE) && rolled_back_since(since);
    }
    // Records the result of OP, begun at SINCE; false when it failed.
    bool result(const char* op, int r, const Since& since)
    {
        if (r >= 0) {
            ++counts[op];
            return true;
        }
        int err = errno;
        if (explained(err, since)) {
            ++tolerated[std::string(op) + " " + std::strerror(err)];
        } else {
            shared_.fail(std::string("writer: ") + op + ": " + std::strerror(err) + " (" + act_.get().first + ")" +
                         (err == EROFS || err == ESTALE ? ", with no rollback during it" : ""));
        }
        return false;
    }
    bool write_all(const char* op, int fd, const std::string& data, const Since& since)
    {
        ssize_t n = ::write(fd, data.data(), data.size());
        if (n >= 0 && static_cast<size_t>(n) != data.size()) {
            shared_.fail(std::string("writer: ") + op + ": short write " + std::to_string(n) + " of " +
                         std::to_string(data.size()));
            return false;
        }
        return result(op, n < 0 ? -1 : 0, since);
    }
    void read_check(const std::string& path)
    {
        Since since = now();
        int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (!result("open-read", fd, since))
            return;
        std::string data = read_all(fd);
        ::close(fd);
        if (std::string bad = check_lines(data); !bad.empty())
            shared_.fail("writer: " + path + " read back wrong: " + bad);
        ++counts["read"];
    }

    void step()
    {
        int d = pick(4), f = pick(12);
        Since since = now();
        switch (pick(11)) {
        case 0: // create a new file (several whole-line writes)
        case 1: {
            act_.set("create " + file(d, f));
            int fd = ::open(file(d, f).c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
            if (!result("create", fd, since))
                break;
            for (int i = pick(4); i >= 0; --i)
                if (!write_all("write", fd, lines(16384), since))
                    break;
            result("close", ::close(fd), since);
            break;
        }
        case 2:
        case 3: { // append
            act_.set("append " + file(d, f));
            int fd = ::open(file(d, f).c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
            if (!result("open-append", fd, since))
                break;
            write_all("append", fd, lines(4096), since);
            result("close", ::close(fd), since);
            break;
        }
        case 4: { // a log kept open across snapshots and rollbacks
            act_.set("log append");
            if (log_fd_ < 0) {
                log_since_ = since;
                log_fd_ = ::open((root_ + "/log").c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
                if (!result("open-log", log_fd_, since))
                    break;
            }
            if (!write_all("log", log_fd_, lines(512), log_since_)) {
                result("close-log", ::close(log_fd_), log_since_);
                log_fd_ = -1;
            }
            break;
        }
        case 5: { // rename a file, maybe over another, maybe across dirs
            std::string to = file(pick(4), pick(12));
            act_.set("rename " + file(d, f) + " " + to);
            result("rename", ::rename(file(d, f).c_str(), to.c_str()), since);
            break;
        }
        case 6: {
            act_.set("unlink " + file(d, f));
            result("unlink", ::unlink(file(d, f).c_str()), since);
            break;
        }
        case 7: { // a directory: made, renamed for real, or removed
            int e = pick(4);
            if (e != d && pick(3) == 0) {
                act_.set("rename dir " + dir(d) + " " + dir(e));
                result("rename-dir", ::rename(dir(d).c_str(), dir(e).c_str()), since);
            } else if (pick(4) == 0) {
                act_.set("rmdir " + dir(d));
                result("rmdir", ::rmdir(dir(d).c_str()), since);
            } else {
                act_.set("mkdir " + dir(d));
                result("mkdir", ::mkdir(dir(d).c_str(), 0755), since);
            }
            break;
        }
        case 8:
        case 9:
            act_.set("read " + file(d, f));
            read_check(file(d, f));
            break;
        default: {
            act_.set("readdir " + dir(d));
            DIR* dp = ::opendir(dir(d).c_str());
            if (!result("opendir", dp ? 0 : -1, since))
                break;
            while (::readdir(dp)) {
            }
            ::closedir(dp);
            ++counts["readdir"];
            break;
        }
        }
        if (diag_fd_ >= 0 && ::syncfs(diag_fd_) != 0) {
            int err = errno;
            std::fprintf(stderr, "diag: syncfs after writer op '%s' (op %lu): %s\n", act_.get().first.c_str(), ops_,
                         std::strerror(err));
        }
        ++ops_;
        act_.set("idle");
    }

    std::string root_;
    // LAYERD_LOAD_DIAG=1: syncfs of the mount after every writer operation,
    // to tell which one left a writeback error.
    int diag_fd_ = std::getenv("LAYERD_LOAD_DIAG") ? ::open(root_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
    unsigned long ops_ = 0;
    Shared& shared_;
    Activity& act_;
    std::mt19937 rng_;
    uint64_t seq_ = 0;
    int log_fd_ = -1;
    Since log_since_{};
};

// --- A client.

// "" when DIFF is "FLAGS PATH" lines as the XML says.
std::string check_diff(const std::string& diff)
{
    size_t pos = 0;
    while (pos < diff.size()) {
        size_t nl = diff.find('\n', pos);
        if (nl == std::string::npos)
            return "no newline after '" + diff.substr(pos, 80) + "'";
        std::string l = diff.substr(pos, nl - pos);
        if (l.size() < 9 || l[6] != ' ' || l[7] != '/' || l.find_first_not_of("+-ctpugxa.") < 6)
            return "a malformed line '" + l.substr(0, 80) + "'";
        pos = nl + 1;
    }
    return "";
}

class Client {
public:
    Client(int id, const std::string& address, Shared& shared, Activity& activity, unsigned s)
        : id_(id), shared_(shared), act_(activity), rng_(s)
    {
        bus_ = sdbus::createSessionBusConnectionWithAddress(address);
        proxy_ = sdbus::createProxy(*bus_, "org.layerd1", stack_path);
    }

    void run(const std::atomic<bool>& stop)
    {
        while (!stop && !shared_.failed())
            step();
        act_.set("done");
    }

private:
    int pick(int n) { return std::uniform_int_distribution<int>(0, n - 1)(rng_); }
    std::string tag() const { return "client " + std::to_string(id_); }

    // Runs one call of METHOD (ARGS for the report); 0 ok, 1 Busy, 2 a
    // NoSuchSnapshot for GONE that its owner explains, -1 failed.
    int call(const std::string& method, const std::string& args, const std::function<void(sdbus::IProxy&)>& f,
             std::vector<uint32_t> gone = {})
    {
        act_.set(method + "(" + args + ")");
        auto start = Clock::now();
        int outcome = 0;
        try {
            f(*proxy_);
        } catch (const sdbus::Error& e) {
            if (e.getName() == err_busy) {
                outcome = 1;
            } else if (e.getName() == err_nosuch &&
                       std::any_of(gone.begin(), gone.end(), [&](uint32_t n) { return n && shared_.gone_by_owner(n); })) {
                outcome = 2;
            } else {
                shared_.fail(tag() + ": " + method + "(" + args + ") after " + std::to_string(ms(Clock::now() - start)) +
                             " ms: " + e.getName() + ": " + e.getMessage());
                outcome = -1;
            }
        } catch (const std::exception& e) {
            shared_.fail(tag() + ": " + method + "(" + args + "): " + e.what());
            outcome = -1;
        }
        if (outcome >= 0)
            shared_.count(method, Clock::now() - start, outcome);
        act_.set("idle");
        return outcome;
    }

    // A snapshot to read: mostly one of ours, else one the list shows.
    uint32_t some_snapshot()
    {
        if ((!own_.empty() && pick(3) != 0) || seen_.empty())
            return own_.empty() ? 0 : own_[static_cast<size_t>(pick(static_cast<int>(own_.size())))];
        return seen_[static_cast<size_t>(pick(static_cast<int>(seen_.size())))];
    }

    void create()
    {
        uint32_t n = 0;
        std::string desc = tag() + " #" + std::to_string(ops_);
        std::string cleanup = pick(2) ? "number" : "";
        if (call("CreateSnapshot", desc, [&](sdbus::IProxy& p) {
                p.callMethod("CreateSnapshot")
                    .onInterface(stack_iface)
                    .withTimeout(call_timeout)
                    .withArguments(desc, cleanup, Userdata{{"client", std::to_string(id_)}})
                    .storeResultsTo(n);
            }) == 0)
            own(n, "CreateSnapshot");
    }
    void own(uint32_t n, const char* how)
    {
        if (n == 0 || !shared_.created(n, id_))
            shared_.fail(tag() + ": " + how + " returned " + std::to_string(n) + ", a number seen before");
        own_.push_back(n);
    }
    void list()
    {
        std::vector<SnapshotStruct> l;
        if (call("ListSnapshots", "", [&](sdbus::IProxy& p) {
                p.callMethod("ListSnapshots").onInterface(stack_iface).withTimeout(call_timeout).storeResultsTo(l);
            }) != 0)
            return;
        seen_.clear();
        for (size_t i = 0; i < l.size(); ++i) {
            uint32_t n = l[i].get<0>();
            if (i && n <= seen_.back())
                shared_.fail(tag() + ": ListSnapshots is not oldest first: " + std::to_string(seen_.back()) +
                             " before " + std::to_string(n));
            seen_.push_back(n);
        }
        // Ours that are not deleted must all be there.
        for (uint32_t n : own_)
            if (!std::binary_search(seen_.begin(), seen_.end(), n))
                shared_.fail(tag() + ": ListSnapshots lacks our snapshot " + std::to_string(n));
    }
    void get()
    {
        uint32_t n = some_snapshot();
        if (!n)
            return create();
        SnapshotStruct s;
        if (call("GetSnapshot", std::to_string(n), [&](sdbus::IProxy& p) {
                p.callMethod("GetSnapshot").onInterface(stack_iface).withTimeout(call_timeout).withArguments(n).storeResultsTo(s);
            }, {n}) == 0 && s.get<0>() != n)
            shared_.fail(tag() + ": GetSnapshot(" + std::to_string(n) + ") answered snapshot " + std::to_string(s.get<0>()));
    }
    void diff()
    {
        uint32_t a = pick(4) ? some_snapshot() : 0, b = pick(2) ? 0 : some_snapshot();
        std::string args = std::to_string(a) + ", " + std::to_string(b);
        std::string text;
        call("Diff", args, [&](sdbus::IProxy& p) {
            sdbus::UnixFd fd;
            p.callMethod("Diff").onInterface(stack_iface).withTimeout(call_timeout).withArguments(a, b).storeResultsTo(fd);
            ::lseek(fd.get(), 0, SEEK_SET);
            text = read_all(fd.get());
        }, {a, b});
        if (std::string bad = check_diff(text); !bad.empty())
            shared_.fail(tag() + ": Diff(" + args + "): " + bad);
    }
    void rollback()
    {
        uint32_t n = some_snapshot();
        if (!n)
            return create();
        uint32_t backup = 0;
        ++shared_.rollbacks_running;
        ++shared_.rollbacks_started;
        struct Done {
            Shared& s;
            ~Done() { --s.rollbacks_running; }
        } done{shared_};
        if (call("Rollback", std::to_string(n), [&](sdbus::IProxy& p) {
                p.callMethod("Rollback")
                    .onInterface(stack_iface)
                    .withTimeout(call_timeout)
                    .withArguments(n, false)
                    .storeResultsTo(backup);
            }, {n}) == 0)
            own(backup, "Rollback");
    }
    void remove()
    {
        if (own_.size() < 2)
            return create();
        // Some of the older ones, never the newest.
        std::vector<uint32_t> victims;
        size_t count = 1 + static_cast<size_t>(pick(static_cast<int>(std::min<size_t>(3, own_.size() - 1))));
        std::vector<uint32_t> older(own_.begin(), own_.end() - 1);
        std::shuffle(older.begin(), older.end(), rng_);
        victims.assign(older.begin(), older.begin() + static_cast<long>(count));
        std::sort(victims.begin(), victims.end());
        std::string args;
        for (uint32_t n : victims)
            args += (args.empty() ? "" : " ") + std::to_string(n);
        shared_.deleting(victims, true);
        int r = call("DeleteSnapshots", args, [&](sdbus::IProxy& p) {
            p.callMethod("DeleteSnapshots").onInterface(stack_iface).withTimeout(call_timeout).withArguments(victims);
        });
        if (r == 0) {
            shared_.deleted(victims);
            for (uint32_t n : victims)
                own_.erase(std::find(own_.begin(), own_.end(), n));
        } else {
            shared_.deleting(victims, false);
        }
    }

    void step()
    {
        ++ops_;
        if (own_.size() > keep_per_client && pick(2) == 0)
            return remove();
        int w = pick(100);
        if (w < 22)
            create();
        else if (w < 40)
            list();
        else if (w < 55)
            get();
        else if (w < 75)
            diff();
        else if (w < 85)
            no_rollback_ ? create() : rollback();
        else
            remove();
    }

    int id_;
    Shared& shared_;
    Activity& act_;
    std::mt19937 rng_;
    std::unique_ptr<sdbus::IConnection> bus_;
    std::unique_ptr<sdbus::IProxy> proxy_;
    std::vector<uint32_t> own_;  // ours, not deleted, oldest first
    std::vector<uint32_t> seen_; // the last list, ascending
    unsigned long ops_ = 0;
    // LAYERD_LOAD_NO_ROLLBACK: snapshots instead of rollbacks, to narrow a
    // failure down.
    bool no_rollback_ = std::getenv("LAYERD_LOAD_NO_ROLLBACK") != nullptr;
};

// Every file under PATH read (a directory listed); what went wrong, or "".
std::string walk(const std::string& path, unsigned long* files, bool check_content)
{
    struct stat st;
    if (::lstat(path.c_str(), &st) != 0)
        return "lstat " + path + ": " + std::strerror(errno);
    if (S_ISDIR(st.st_mode)) {
        DIR* dp = ::opendir(path.c_str());
        if (!dp)
            return "opendir " + path + ": " + std::strerror(errno);
        std::vector<std::string> names;
        errno = 0;
        while (dirent* e = ::readdir(dp))
            if (std::strcmp(e->d_name, ".") && std::strcmp(e->d_name, ".."))
                names.push_back(e->d_name);
        int err = errno;
        ::closedir(dp);
        if (err)
            return "readdir " + path + ": " + std::strerror(err);
        std::string out;
        for (const auto& n : names)
            out += walk(path + "/" + n, files, check_content);
        return out;
    }
    if (S_ISREG(st.st_mode)) {
        int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            return "open " + path + ": " + std::strerror(errno) + "\n";
        std::string data = read_all(fd);
        ::close(fd);
        ++*files;
        if (data.size() != static_cast<size_t>(st.st_size))
            return path + ": read " + std::to_string(data.size()) + " bytes, stat says " + std::to_string(st.st_size) + "\n";
        if (check_content)
            if (std::string bad = check_lines(data); !bad.empty())
                return path + ": " + bad + "\n";
    }
    return "";
}

std::string layerd_threads(pid_t pid)
{
    return run_shell("for t in /proc/" + std::to_string(pid) + "/task/*; do echo \"$t $(cat $t/comm) $(cat $t/wchan)\"; "
                     "cat $t/stack 2>/dev/null | head -8; done 2>&1; "
                     "timeout 60 gdb -batch -p " + std::to_string(pid) + " -ex 'thread apply all bt' 2>&1 | tail -200");
}

void abort_fuse(const std::string& mnt)
{
    std::ifstream in("/proc/self/mountinfo");
    std::string line;
    while (std::getline(in, line)) {
        std::istringstream ls(line);
        std::string id, parent, dev, root, mp;
        ls >> id >> parent >> dev >> root >> mp;
        if (mp == mnt && dev.find(':') != std::string::npos)
            std::ofstream("/sys/fs/fuse/connections/" + dev.substr(dev.find(':') + 1) + "/abort") << "1";
    }
}

TEST(DaemonLoad, EightClientsAndAWriterFor30Seconds)
{
    BusEnv env;
    // The depth limit is not what is tested here: each client keeps few
    // snapshots, but the layers of branches left by rollbacks count too.
    env.write_stack({}, "max_depth: 1024\n");
    env.start_layerd();
    ASSERT_EQ(::mkdir(env.mnt("w").c_str(), 0755), 0) << std::strerror(errno);

    const int seconds = run_seconds();
    // LAYERD_LOAD_CLIENTS: fewer clients (0 to 8), to narrow a failure down.
    const int clients = std::getenv("LAYERD_LOAD_CLIENTS") ? std::clamp(std::atoi(std::getenv("LAYERD_LOAD_CLIENTS")), 0, max_clients)
                                                           : max_clients;
    const unsigned base = seed();
    std::printf("load: %d s, %d clients and a writer, seed %u%s\n", seconds, clients, base,
                LAYERD_LOAD_SANITIZED ? " (sanitized build)" : "");
    Shared shared;
    std::atomic<bool> stop{false};
    std::vector<Activity> acts(clients + 1);
    std::vector<std::thread> threads;
    Writer writer(env.mnt("w"), shared, acts[clients], base);
    std::vector<std::unique_ptr<Client>> cs;
    for (int i = 0; i < clients; ++i)
        cs.push_back(std::make_unique<Client>(i, env.address(), shared, acts[static_cast<size_t>(i)],
                                              base + 1 + static_cast<unsigned>(i)));
    auto start = Clock::now();
    threads.emplace_back([&] {
        writer.run(stop);
        acts[clients].done = true;
    });
    for (int i = 0; i < clients; ++i)
        threads.emplace_back([&, i] {
            cs[static_cast<size_t>(i)]->run(stop);
            acts[static_cast<size_t>(i)].done = true;
        });

    // Watch: the end of the run, a failure, or an operation that hangs.
    std::string hang;
    auto all_done = [&] {
        return std::all_of(acts.begin(), acts.end(), [](Activity& a) { return a.done.load(); });
    };
    for (;;) {
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
        if (Clock::now() - start >= std::chrono::seconds(seconds) || shared.failed())
            stop = true;
        if (all_done())
            break;
        for (size_t i = 0; i < acts.size() && hang.empty(); ++i) {
            auto [what, for_how_long] = acts[i].get();
            if (!acts[i].done && for_how_long > hang_after)
                hang = (i == static_cast<size_t>(clients) ? std::string("writer") : "client " + std::to_string(i)) + " stuck in " + what +
                       " for " + std::to_string(ms(for_how_long)) + " ms";
        }
        if (!hang.empty())
            break;
    }
    auto run_time = Clock::now() - start;
    if (!hang.empty()) {
        std::string report = hang + "\n";
        for (size_t i = 0; i < acts.size(); ++i) {
            auto [what, for_how_long] = acts[i].get();
            report += "  thread " + std::to_string(i) + ": " + what + " (" + std::to_string(ms(for_how_long)) + " ms)\n";
        }
        report += "layerd threads:\n" + layerd_threads(env.layerd_pid());
        std::fprintf(stderr, "HANG: %s\nlayerd log:\n%s\n", report.c_str(), env.layerd_log().c_str());
        // Let the stuck threads return, then fail.
        stop = true;
        abort_fuse(env.mnt());
        ::kill(env.layerd_pid(), SIGKILL);
        for (int i = 0; i < 100 && !all_done(); ++i)
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
        if (!all_done()) {
            std::fprintf(stderr, "threads still stuck after abort; exiting\n");
            std::fflush(nullptr);
            ::_exit(1);
        }
        for (auto& t : threads)
            t.join();
        FAIL() << hang;
    }
    for (auto& t : threads)
        t.join();
    cs.clear();

    // The report.
    std::printf("ran %lld ms\n%-16s %8s %6s %6s %10s\n", ms(run_time), "method", "ok", "busy", "gone", "max ms");
    unsigned long calls = 0, busy = 0;
    for (const auto& [m, s] : shared.stats()) {
        std::printf("%-16s %8lu %6lu %6lu %10lld\n", m.c_str(), s.ok, s.busy, s.gone, ms(s.max));
        calls += s.ok + s.busy + s.gone;
        busy += s.busy;
    }
    std::printf("%lu calls, %lu Busy; snapshots created (with backups) %zu, deleted %zu\nwriter:", calls, busy,
                shared.created_count(), shared.deleted_count());
    for (const auto& [op, n] : writer.counts)
        std::printf(" %s %lu", op.c_str(), n);
    std::printf("\nwriter errors a view change explains:");
    for (const auto& [op, n] : writer.tolerated)
        std::printf(" [%s] %lu", op.c_str(), n);
    std::printf("\n");
    std::fflush(stdout);
    for (const auto& f : shared.failures())
        ADD_FAILURE() << f;
    ASSERT_FALSE(shared.failed()) << "layerd log:\n" << env.layerd_log();

    // Still answering, and the state adds up.
    auto bus = sdbus::createSessionBusConnectionWithAddress(env.address());
    auto proxy = sdbus::createProxy(*bus, "org.layerd1", stack_path);
    auto manager = sdbus::createProxy(*bus, "org.layerd1", "/org/layerd1");
    std::vector<sdbus::Struct<std::string, sdbus::ObjectPath>> stacks;
    manager->callMethod("ListStacks").onInterface("org.layerd1.Manager").withTimeout(call_timeout).storeResultsTo(stacks);
    EXPECT_EQ(stacks.size(), 1u);
    std::vector<SnapshotStruct> list;
    proxy->callMethod("ListSnapshots").onInterface(stack_iface).withTimeout(call_timeout).storeResultsTo(list);
    std::set<uint32_t> listed;
    for (const auto& s : list)
        listed.insert(s.get<0>());
    std::set<uint32_t> expected = shared.expected_live();
    EXPECT_EQ(listed.size(), list.size()) << "a number listed twice";
    EXPECT_EQ(listed.size(), shared.created_count() - shared.deleted_count());
    EXPECT_EQ(listed, expected);
    unsigned long diff_lines = 0;
    for (uint32_t n : listed) {
        SCOPED_TRACE("snapshot " + std::to_string(n));
        SnapshotStruct s;
        EXPECT_NO_THROW(proxy->callMethod("GetSnapshot")
                            .onInterface(stack_iface)
                            .withTimeout(call_timeout)
                            .withArguments(n)
                            .storeResultsTo(s));
        EXPECT_EQ(s.get<0>(), n);
        try {
            sdbus::UnixFd fd;
            proxy->callMethod("Diff")
                .onInterface(stack_iface)
                .withTimeout(call_timeout)
                .withArguments(n, uint32_t{0})
                .storeResultsTo(fd);
            ::lseek(fd.get(), 0, SEEK_SET);
            std::string text = read_all(fd.get());
            EXPECT_EQ(check_diff(text), "");
            diff_lines += static_cast<unsigned long>(std::count(text.begin(), text.end(), '\n'));
        } catch (const sdbus::Error& e) {
            ADD_FAILURE() << "Diff(" << n << ", 0): " << e.getName() << ": " << e.getMessage();
        }
    }
    sdbus::Variant depth;
    proxy->callMethod("Get")
        .onInterface("org.freedesktop.DBus.Properties")
        .withTimeout(call_timeout)
        .withArguments(std::string(stack_iface), std::string("Depth"))
        .storeResultsTo(depth);
    unsigned long files = 0;
    std::string walked = walk(env.mnt(), &files, false);
    EXPECT_EQ(walked, "");
    unsigned long wfiles = 0;
    if (::access(env.mnt("w").c_str(), F_OK) == 0) {
        EXPECT_EQ(walk(env.mnt("w"), &wfiles, true), "");
    }
    std::printf("at the end: %zu snapshots listed, Depth %u, %lu diff lines against live, %lu files in the mount\n",
                listed.size(), depth.get<uint32_t>(), diff_lines, files);

    int status = env.stop_layerd();
    ASSERT_NE(status, -1) << "layerd did not exit on SIGTERM\n" << env.layerd_log();
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status << "\n" << env.layerd_log();
    EXPECT_FALSE(is_mounted(env.mnt()));
    std::string log = env.layerd_log();
    EXPECT_EQ(log.find("runtime error"), std::string::npos) << log;
    EXPECT_EQ(log.find("Sanitizer"), std::string::npos) << log;
    // Errors and warnings layerd logged, for the report.
    std::istringstream ls(log);
    std::string line;
    unsigned shown = 0;
    while (std::getline(ls, line))
        if ((line.rfind("<3>", 0) == 0 || line.rfind("<4>", 0) == 0 || line.rfind("<2>", 0) == 0) && shown++ < 20)
            std::printf("layerd: %s\n", line.c_str());
    if (HasFailure())
        std::fprintf(stderr, "layerd log:\n%s\n", log.c_str());
}

} // namespace
} // namespace layerd::test

int main(int argc, char** argv)
{
    if (int skip = layerd::test::skip_unless_daemon_runs("the D-Bus load tests", {"dbus-daemon"}); skip != 0)
        return skip;
    ::testing::InitGoogleTest(&argc, argv);
    return RUN_ALL_TESTS();
}
