// SPDX-License-Identifier: LGPL-2.1-or-later
// Crash safety of copy-up (DESIGN.md §3): the copy is built in W/work and
// renamed into place, so a daemon killed with SIGKILL in the middle of a
// storm of copy-ups leaves every file either untouched (the lower content
// shows) or completely copied (the lower content is a prefix of it) — never
// an empty or half-copied upper file masking good lower data. The next mount
// cleans W/work.
#include "mount_fixture.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace layerd::test {
namespace {

constexpr int kSmallFiles = 200;
constexpr size_t kSmallSize = 16 * 1024;
constexpr int kLargeFiles = 4;
constexpr size_t kLargeSize = 32 * 1024 * 1024;
constexpr int kRounds = 12;

std::string pseudo_random(size_t n, uint64_t seed)
{
    std::string s(n, '\0');
    uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
    for (size_t i = 0; i < n; i += 8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        std::memcpy(s.data() + i, &x, std::min<size_t>(8, n - i));
    }
    return s;
}

std::string small_name(int i)
{
    char buf[32];
    std::snprintf(buf, sizeof buf, "s/f%03d", i);
    return buf;
}

std::string large_name(int i) { return "big/L" + std::to_string(i); }

// Reads a whole file; false if it cannot be opened/read.
bool slurp(const std::string& path, std::string& out)
{
    out.clear();
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    char buf[1 << 16];
    for (;;) {
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            ::close(fd);
            return false;
        }
        if (n == 0)
            break;
        out.append(buf, static_cast<size_t>(n));
    }
    ::close(fd);
    return true;
}

// Every entry below dir (relative paths), "" if dir does not exist.
std::vector<std::string> entries_below(const std::string& dir, const std::string& rel = "")
{
    std::vector<std::string> out;
    std::string path = rel.empty() ? dir : dir + "/" + rel;
    DIR* d = ::opendir(path.c_str());
    if (!d)
        return out;
    while (dirent* de = ::readdir(d)) {
        std::string n = de->d_name;
        if (n == "." || n == "..")
            continue;
        std::string r = rel.empty() ? n : rel + "/" + n;
        out.push_back(r);
        if (de->d_type == DT_DIR)
            for (auto& sub : entries_below(dir, r))
                out.push_back(sub);
    }
    ::closedir(d);
    return out;
}

std::string join(const std::vector<std::string>& v)
{
    std::string s;
    for (const auto& e : v)
        s += (s.empty() ? "" : ", ") + e;
    return s;
}

// Empty if content is the original, or the original followed by more bytes;
// else a description of what is wrong.
std::string check_content(const std::string& content, const std::string& original)
{
    if (content.size() < original.size())
        return "size " + std::to_string(content.size()) + " < lower size " + std::to_string(original.size())
            + " (truncated / half-copied)";
    for (size_t i = 0; i < original.size(); ++i)
        if (content[i] != original[i])
            return "differs from the lower content at byte " + std::to_string(i) + " of "
                + std::to_string(original.size()) + " (size " + std::to_string(content.size()) + ")";
    return "";
}

// Runs a cleanup once: explicitly or at scope exit (also on a failed ASSERT).
class ScopeExit {
public:
    explicit ScopeExit(std::function<void()> f) : f_(std::move(f)) {}
    ScopeExit(const ScopeExit&) = delete;
    ScopeExit& operator=(const ScopeExit&) = delete;
    ~ScopeExit() { run(); }
    void run()
    {
        if (f_)
            std::exchange(f_, nullptr)();
    }

private:
    std::function<void()> f_;
};

class CrashTest : public OverlayTest {
protected:
    void SetUp() override
    {
        OverlayTest::SetUp();
        ASSERT_FALSE(HasFatalFailure());
        // s/ is merged from both lowers; big/ is only in the bottom lower.
        for (const auto& d : {lower(0, "s"), lower(1, "s"), lower(1, "big")})
            ASSERT_EQ(::mkdir(d.c_str(), 0755), 0);
        for (int i = 0; i < kSmallFiles; ++i) {
            files_.push_back(small_name(i));
            originals_.push_back(pseudo_random(kSmallSize, static_cast<uint64_t>(i) + 1));
            write_file(lower(i % 2, files_.back()), originals_.back());
        }
        for (int i = 0; i < kLargeFiles; ++i) {
            files_.push_back(large_name(i));
            originals_.push_back(pseudo_random(kLargeSize, static_cast<uint64_t>(i) + 1000));
            write_file(lower(1, files_.back()), originals_.back());
        }
        ::sync();
    }

    // Checks every file's content, read from base (the mount or the upper dir).
    // In the upper dir a missing file is fine (it was never copied up).
    void check_all(const std::string& where, bool is_upper)
    {
        int bad = 0;
        for (size_t i = 0; i < files_.size(); ++i) {
            std::string path = (is_upper ? upper(files_[i]) : mnt(files_[i]));
            std::string content;
            if (!slurp(path, content)) {
                if (is_upper && errno == ENOENT)
                    continue;
                ADD_FAILURE() << where << ": cannot read " << path << ": " << strerror(errno);
                ++bad;
            } else if (std::string why = check_content(content, originals_[i]); !why.empty()) {
                struct stat st {};
                bool in_upper = ::lstat(upper(files_[i]).c_str(), &st) == 0;
                ADD_FAILURE() << where << ": " << files_[i] << ": " << why
                              << (in_upper ? " [upper file size " + std::to_string(st.st_size) + "]"
                                           : " [not in upper]");
                ++bad;
            }
            if (bad >= 10) {
                ADD_FAILURE() << where << ": stopping after 10 bad files";
                return;
            }
        }
    }

    int copied_up_count()
    {
        int n = 0;
        for (const auto& f : files_)
            n += exists(upper(f)) ? 1 : 0;
        return n;
    }

    std::vector<std::string> files_;
    std::vector<std::string> originals_;
};

// What the writers of one round did.
struct StormStats {
    std::atomic<long> appends{0};
    // Appends whose write(2), fsync(2) and close(2) all succeeded, per file:
    // the daemon had the data before the kill.
    std::map<std::string, std::atomic<int>> acked;
    std::atomic<long> errors_before_kill{0};
    std::mutex mu;
    std::string first_error;
};

void writer_loop(const std::string& mnt_root, const std::vector<std::string>& names, uint64_t seed, int id,
                 const std::atomic<bool>& stop, const std::atomic<bool>& killed, StormStats& stats)
{
    std::mt19937_64 rng(seed);
    std::vector<std::string> order = names;
    unsigned count = 0;
    while (!stop.load()) {
        std::shuffle(order.begin(), order.end(), rng);
        for (const auto& n : order) {
            if (stop.load())
                return;
            std::string path = mnt_root + "/" + n;
            int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
            std::string marker = "+writer" + std::to_string(id) + "\n";
            bool ok = fd >= 0 && ::write(fd, marker.data(), marker.size()) == static_cast<ssize_t>(marker.size());
            // Every 4th append is fsync'ed: once fsync returns 0 the daemon has
            // the data. (A close(2) alone is no proof with the writeback cache:
            // a failed writeback is reported to only one of the closers.)
            bool synced = ok && ++count % 4 == 0;
            if (synced && ::fsync(fd) != 0)
                ok = false;
            int err = errno;
            if (fd >= 0 && ::close(fd) != 0 && ok) {
                ok = false;
                err = errno;
            }
            if (ok) {
                stats.appends.fetch_add(1);
                if (synced)
                    stats.acked.at(n).fetch_add(1);
                continue;
            }
            if (killed.load())
                return; // the daemon is gone: ENOTCONN / ECONNABORTED is expected
            stats.errors_before_kill.fetch_add(1);
            std::lock_guard lock(stats.mu);
            if (stats.first_error.empty())
                stats.first_error = path + ": " + strerror(err);
        }
    }
}

// Each round: mount on an empty upper, start the storm (threads and a process
// appending, a thread changing metadata), SIGKILL the daemon after a seeded
// random delay, check the upper on disk, remount, check the view and W/work.
TEST_F(CrashTest, KillDuringCopyUpStormNeverLeavesHalfCopiedFiles)
{
    uint64_t seed = 0;
    if (const char* s = std::getenv("LAYERD_CRASH_SEED"))
        seed = std::strtoull(s, nullptr, 10);
    else
        seed = std::random_device{}();
    std::printf("crash seed: %llu (rerun with LAYERD_CRASH_SEED=%llu)\n", static_cast<unsigned long long>(seed),
                static_cast<unsigned long long>(seed));
    std::fflush(stdout);
    RecordProperty("crash_seed", std::to_string(seed));
    std::mt19937_64 rng(seed);

    std::vector<std::string> small(files_.begin(), files_.begin() + kSmallFiles);
    std::vector<std::string> large(files_.begin() + kSmallFiles, files_.end());
    auto started = std::chrono::steady_clock::now();

    for (int round = 0; round < kRounds; ++round) {
        // Even rounds kill early (inside the first big copy-ups), odd rounds later.
        int delay_ms = round % 2 == 0 ? std::uniform_int_distribution<int>(2, 80)(rng)
                                      : std::uniform_int_distribution<int>(80, 500)(rng);
        SCOPED_TRACE("round " + std::to_string(round) + ", kill after " + std::to_string(delay_ms) + " ms, seed "
                     + std::to_string(seed));
        // Fresh upper and work for each round, so every round copies up again.
        ASSERT_EQ(sh("rm -rf '" + upper() + "' '" + work() + "' && mkdir '" + upper() + "' '" + work() + "'"), 0);
        mount();
        ASSERT_FALSE(HasFatalFailure());

        std::atomic<bool> stop{false}, killed{false};
        StormStats stats;
        for (const auto& f : files_)
            stats.acked[f] = 0;
        std::vector<std::thread> threads;
        pid_t child = -1;
        // Whatever happens below, the daemon dies, the mount goes, the child
        // is reaped and the threads are joined before this round's scope ends.
        ScopeExit end_storm([&] {
            killed = true;
            fs_.kill_hard();
            stop = true;
            if (child > 0) {
                ::kill(child, SIGKILL);
                ::waitpid(child, nullptr, 0);
                child = -1;
            }
            for (auto& t : threads)
                if (t.joinable())
                    t.join();
        });
        for (int t = 0; t < 6; ++t)
            threads.emplace_back(writer_loop, mnt(), std::cref(small), rng(), t, std::cref(stop), std::cref(killed),
                                 std::ref(stats));
        for (int t = 0; t < 2; ++t)
            threads.emplace_back(writer_loop, mnt(), std::cref(large), rng(), 100 + t, std::cref(stop),
                                 std::cref(killed), std::ref(stats));
        // One thread copies up by metadata changes (chmod, setxattr) instead.
        threads.emplace_back(
            [&stop, &killed, &stats](std::string root, std::vector<std::string> names, uint64_t tseed) {
                std::mt19937_64 trng(tseed);
                while (!stop.load()) {
                    const std::string& n = names[trng() % names.size()];
                    std::string path = root + "/" + n;
                    int r = trng() % 2 ? ::chmod(path.c_str(), trng() % 2 ? 0600 : 0644)
                                       : ::setxattr(path.c_str(), "user.crash", "1", 1, 0);
                    if (r != 0 && !killed.load()) {
                        stats.errors_before_kill.fetch_add(1);
                        std::lock_guard lock(stats.mu);
                        if (stats.first_error.empty())
                            stats.first_error = "chmod/setxattr " + path + ": " + strerror(errno);
                    }
                    if (r != 0 && killed.load())
                        return;
                }
            },
            mnt(), files_, rng());
        // And one other process, appending to the small files in its own
        // order (everything it needs is allocated before the fork).
        std::vector<std::string> child_paths;
        for (const auto& n : small)
            child_paths.push_back(mnt(n));
        std::mt19937_64 crng(rng());
        child = ::fork();
        ASSERT_GE(child, 0) << strerror(errno);
        if (child == 0) {
            for (;;) {
                std::shuffle(child_paths.begin(), child_paths.end(), crng);
                for (const auto& path : child_paths) {
                    int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
                    if (fd < 0 || ::write(fd, "+child\n", 7) != 7)
                        ::_exit(0);
                    ::close(fd);
                }
            }
        }

        std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
        killed = true;
        pid_t daemon = fs_.pid();
        ASSERT_GT(daemon, 0);
        ASSERT_EQ(::kill(daemon, SIGKILL), 0) << strerror(errno);
        end_storm.run(); // reaps it, aborts the connection, detaches the mount, joins the writers

        int copied = copied_up_count();
        std::printf("round %d: killed after %d ms, %ld appends done, %d/%zu files in the upper, W/work: [%s]\n",
                    round, delay_ms, stats.appends.load(), copied, files_.size(),
                    join(entries_below(work("work"))).c_str());
        std::fflush(stdout);
        EXPECT_EQ(stats.errors_before_kill.load(), 0) << "operations failed before the kill, first: " << stats.first_error;

        // On disk, right after the crash: every upper file is a complete copy.
        check_all("upper after SIGKILL", true);

        mount();
        ASSERT_FALSE(HasFatalFailure());
        // Cleaning may run in the background right after the mount: allow 2 s.
        std::vector<std::string> left = entries_below(work("work"));
        for (int i = 0; i < 100 && !left.empty(); ++i) {
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
            left = entries_below(work("work"));
        }
        EXPECT_TRUE(left.empty()) << "W/work not cleaned at mount: " << join(left);
        check_all("view after remount", false);
        // Appends acknowledged before the kill (write, fsync and close returned
        // 0, so the daemon had replied to the WRITE and FSYNC) survive it.
        {
            int lost_files = 0;
            long lost = 0;
            std::string example;
            for (size_t i = 0; i < files_.size(); ++i) {
                std::string content;
                if (!slurp(mnt(files_[i]), content) || content.size() < originals_[i].size())
                    continue; // reported by check_all
                std::string tail = content.substr(originals_[i].size());
                int found = 0;
                for (size_t pos = 0; (pos = tail.find("+writer", pos)) != std::string::npos; ++pos)
                    ++found;
                int want = stats.acked.at(files_[i]).load();
                if (found < want) {
                    ++lost_files;
                    lost += want - found;
                    if (example.empty())
                        example = files_[i] + ": " + std::to_string(want) + " acknowledged, " + std::to_string(found)
                            + " present" + (exists(upper(files_[i])) ? "" : " (not in the upper)");
                }
            }
            EXPECT_EQ(lost, 0) << "acknowledged appends lost in " << lost_files << " files, e.g. " << example;
        }

        // The stack is usable again: an append lands after the original data.
        {
            std::string p = mnt(small.front());
            std::string before;
            ASSERT_TRUE(slurp(p, before));
            int fd = ::open(p.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
            ASSERT_GE(fd, 0) << p << ": " << strerror(errno);
            EXPECT_EQ(::write(fd, "+after\n", 7), 7);
            ::close(fd);
            std::string after;
            ASSERT_TRUE(slurp(p, after));
            EXPECT_EQ(after, before + "+after\n");
        }
        unmount();
        if (HasFailure())
            break; // keep the layers of the failing round for inspection
        double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
        if (elapsed > 60) {
            std::printf("stopping after %d rounds (%.0f s)\n", round + 1, elapsed);
            break;
        }
    }
}

} // namespace
} // namespace layerd::test
