// SPDX-License-Identifier: LGPL-2.1-or-later
// Snapshots of a mounted stack (DESIGN §2, §3 "Mapping safety"), through
// layerd::MountedStack: the layer tree in a real SQLite store, the layer dirs
// under a temp state dir, and the engine serving the live view in-process
// (StackEnv, stack_env.hpp).
//
// - a model-based property test: random operations through the mountpoint
//   and on the snapshots (cleanup among them), checked after every step
//   against an in-memory model of the live tree and of every snapshot's tree
//   (each snapshot read from disk with walk_view over its layer chain, not
//   through the mount);
// - swaps seen through the mount: fds and mappings opened before a rollback
//   or a snapshot, stale kernel dentries;
// - diff of known changes; SIGKILL at random moments (with merges and
//   cleanup among the operations) followed by recovery.
// Bad input and a full disk are snapshot-faults' (test_snapshot_faults.cpp).
//
// LAYERD_SNAPSHOT_SEED=N replays one seed of the random tests (and
// LAYERD_SNAPSHOT_STEPS=M sets its length); every failure prints its seed.
// A sanitizer build runs fewer seeds, steps and kills; each test prints the
// sizes it used.
#include "cleanup.hpp"
#include "layer_diff.hpp"
#include "mounted_stack.hpp"
#include "snapshot_store.hpp"
#include "stack_env.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <iterator>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace layerd::test {
namespace {

using Clock = std::chrono::steady_clock;

// A mapping unmapped on scope exit.
struct Mapping {
    Mapping(void* a, size_t l) : addr(a), len(l) {}
    Mapping(const Mapping&) = delete;
    Mapping& operator=(const Mapping&) = delete;
    ~Mapping()
    {
        if (addr != MAP_FAILED && addr != nullptr)
            ::munmap(addr, len);
    }
    std::string str(size_t n) const { return std::string(static_cast<const char*>(addr), n); }
    void* addr;
    size_t len;
};

// One fresh stack per test (stack_env.hpp).
class SnapshotTest : public StackEnvTest {};

// ------------------------------------------------------------------ model

std::optional<uint64_t> env_seed()
{
    const char* s = std::getenv("LAYERD_SNAPSHOT_SEED");
    if (!s || !*s)
        return std::nullopt;
    return std::strtoull(s, nullptr, 0);
}

int env_steps(int fallback)
{
    const char* s = std::getenv("LAYERD_SNAPSHOT_STEPS");
    return s && *s ? std::atoi(s) : fallback;
}

struct ModelOptions {
    int steps = 120;
    bool dir_renames = false; // also rename directories (redirects in the layers)
    bool check_diffs = false; // also compare diff() of random pairs with the model
    // Also run cleanup() (the stack's config: number only, limit 3, min_age
    // 0; half the snapshots are taken with cleanup "number").
    bool cleanup = true;
};

// The cleanup the random tests give their stacks: number only, keep 3, no
// minimum age.
CleanupConfig model_cleanup_config()
{
    CleanupConfig c;
    c.number = NumberCleanup{.limit = 3, .limit_important = 0, .min_age = 0};
    return c;
}

// The expected diff of two model trees: path → snapper flags.
std::map<std::string, std::string> model_diff(const Tree& a, const Tree& b)
{
    std::map<std::string, std::string> out;
    for (const auto& [path, ea] : a) {
        auto it = b.find(path);
        if (it == b.end())
            out[path] = "-.....";
        else if (ea.type != it->second.type)
            out[path] = "tp...."; // files are 0644 and dirs 0755 in the model
        else if (ea.data != it->second.data)
            out[path] = "c.....";
    }
    for (const auto& [path, eb] : b)
        if (!a.count(path))
            out[path] = "+.....";
    return out;
}

std::string show_diff(const std::map<std::string, std::string>& d)
{
    std::string out;
    for (const auto& [path, flags] : d)
        out += "\n    " + flags + " " + path;
    return out.empty() ? " (none)" : out;
}

class ModelRun {
public:
    ModelRun(StackEnv& env, uint64_t seed, ModelOptions options)
        : env_(env), rng_(seed), seed_(seed), options_(options)
    {
        live_ = StackEnv::initial_tree();
    }

    // "" when every step checked out, else what went wrong with the recent steps.
    std::string run()
    {
        if (std::string err = check(); !err.empty())
            return failure(0, "initial state: " + err);
        for (int i = 1; i <= options_.steps; ++i) {
            step_ = i;
            std::string err;
            try {
                err = step();
            } catch (const std::exception& e) {
                err = describe(e);
            }
            if (err.empty())
                err = check();
            if (!err.empty())
                return failure(i, err);
        }
        return "";
    }

    int snapshots_created = 0, rollbacks = 0, remounts = 0, deletes = 0, diffs = 0, cleanups = 0, cleaned = 0;
    std::string contract_notes; // a contract deviation that does not stop the run

private:
    std::string failure(int step, const std::string& err)
    {
        std::ostringstream out;
        out << "seed " << seed_ << " (LAYERD_SNAPSHOT_SEED=" << seed_ << "), step " << step << ": " << err
            << "\n  recent steps:";
        size_t from = log_.size() > 30 ? log_.size() - 30 : 0;
        for (size_t i = from; i < log_.size(); ++i)
            out << "\n    " << log_[i];
        out << "\n  model snapshots:";
        for (const auto& [n, t] : snaps_)
            out << " " << n << "(" << t.size() << " entries)";
        return out.str();
    }

    void log(const std::string& what) { log_.push_back("#" + std::to_string(step_) + " " + what); }

    size_t uniform(size_t n) { return std::uniform_int_distribution<size_t>(0, n - 1)(rng_); }
    bool chance(double p) { return std::bernoulli_distribution(p)(rng_); }
    template <class C>
    auto pick(const C& c)
    {
        auto it = c.begin();
        std::advance(it, static_cast<long>(uniform(c.size())));
        return *it;
    }

    uint32_t pick_snapshot()
    {
        auto it = snaps_.begin();
        std::advance(it, static_cast<long>(uniform(snaps_.size())));
        return it->first;
    }

    std::vector<std::string> files() const
    {
        std::vector<std::string> out;
        for (const auto& [p, e] : live_)
            if (e.type == 'f')
                out.push_back(p);
        return out;
    }
    std::vector<std::string> dirs(bool with_root) const
    {
        std::vector<std::string> out;
        if (with_root)
            out.push_back("");
        for (const auto& [p, e] : live_)
            if (e.type == 'd')
                out.push_back(p);
        return out;
    }
    bool has_children(const std::string& dir) const
    {
        auto it = live_.upper_bound(dir + "/");
        return it != live_.end() && it->first.starts_with(dir + "/");
    }
    // A name from a small pool (so names come back as other types), not in DIR.
    std::optional<std::string> fresh_path(const std::string& dir)
    {
        static const char* pool[] = {"a", "b", "c", "d", "e", "f", "g", "h", "n1", "n2"};
        for (int tries = 0; tries < 20; ++tries) {
            std::string p = dir + "/" + pool[uniform(std::size(pool))];
            if (!live_.count(p))
                return p;
        }
        return std::nullopt;
    }
    std::string random_data()
    {
        size_t len;
        double r = std::uniform_real_distribution<double>(0, 1)(rng_);
        if (r < 0.7)
            len = uniform(33);
        else if (r < 0.95)
            len = 33 + uniform(3000);
        else
            len = 3000 + uniform(70000);
        std::string s(len, ' ');
        for (char& c : s)
            c = static_cast<char>('0' + uniform(75));
        return s;
    }
    bool fresh_number(uint32_t n, const char* what, std::string* err)
    {
        if (used_numbers_.count(n)) {
            *err = std::string(what) + " returned snapshot number " + std::to_string(n) + ", which was used before";
            return false;
        }
        used_numbers_.insert(n);
        return true;
    }

    enum Op {
        Write, Append, Unlink, Mkdir, Rmdir, Rename, RenameDir, Create, Rollback, RollbackNext, Delete, Diff, Cleanup,
    };

    std::string step()
    {
        double many = snaps_.size() >= 8 ? 4.0 : 1.0;
        std::vector<double> weights = {
            16, 7, 7, 7, 4, 7, options_.dir_renames ? 5.0 : 0.0, 12, 6, 2, 7 * many, options_.check_diffs ? 8.0 : 0.0,
            options_.cleanup ? 3.0 * many : 0.0,
        };
        std::discrete_distribution<int> dist(weights.begin(), weights.end());
        for (int tries = 0; tries < 50; ++tries) {
            std::string err;
            if (do_op(static_cast<Op>(dist(rng_)), &err))
                return err;
        }
        return "no operation was possible";
    }

    // False when the op cannot run in this state (pick another).
    bool do_op(Op op, std::string* err)
    {
        switch (op) {
        case Write: {
            auto fs = files();
            std::string path;
            if (!fs.empty() && chance(0.5)) {
                path = pick(fs);
            } else {
                auto p = fresh_path(pick(dirs(true)));
                if (!p)
                    return false;
                path = *p;
            }
            std::string data = random_data();
            log("write " + path + " " + std::to_string(data.size()) + " bytes" +
                (live_.count(path) ? "" : " (new)"));
            if (int r = write_path(env_.mnt(path), data); r < 0)
                *err = "writing " + path + ": " + errno_text(-r);
            else
                live_[path] = {'f', data};
            return true;
        }
        case Append: {
            auto fs = files();
            if (fs.empty())
                return false;
            std::string path = pick(fs);
            std::string data = random_data().substr(0, 1 + uniform(20));
            log("append " + path + " " + std::to_string(data.size()) + " bytes");
            if (int r = write_path(env_.mnt(path), data, O_WRONLY | O_APPEND); r < 0)
                *err = "appending to " + path + ": " + errno_text(-r);
            else
                live_[path].data += data;
            return true;
        }
        case Unlink: {
            auto fs = files();
            if (fs.empty())
                return false;
            std::string path = pick(fs);
            log("unlink " + path);
            if (::unlink(env_.mnt(path).c_str()) != 0)
                *err = "unlink " + path + ": " + errno_text(errno);
            else
                live_.erase(path);
            return true;
        }
        case Mkdir: {
            auto p = fresh_path(pick(dirs(true)));
            if (!p)
                return false;
            log("mkdir " + *p);
            if (::mkdir(env_.mnt(*p).c_str(), 0755) != 0)
                *err = "mkdir " + *p + ": " + errno_text(errno);
            else
                live_[*p] = {'d', ""};
            return true;
        }
        case Rmdir: {
            std::vector<std::string> empty;
            for (const std::string& d : dirs(false))
                if (!has_children(d))
                    empty.push_back(d);
            if (empty.empty())
                return false;
            std::string path = pick(empty);
            log("rmdir " + path);
            if (::rmdir(env_.mnt(path).c_str()) != 0)
                *err = "rmdir " + path + ": " + errno_text(errno);
            else
                live_.erase(path);
            return true;
        }
        case Rename: {
            auto fs = files();
            if (fs.empty())
                return false;
            std::string from = pick(fs);
            static const char* pool[] = {"a", "b", "c", "d", "e", "f", "g", "h", "n1", "n2"};
            std::string to = pick(dirs(true)) + "/" + pool[uniform(std::size(pool))];
            if (to == from || (live_.count(to) && live_[to].type != 'f'))
                return false;
            log("rename " + from + " -> " + to + (live_.count(to) ? " (replacing a file)" : ""));
            if (::rename(env_.mnt(from).c_str(), env_.mnt(to).c_str()) != 0) {
                *err = "rename " + from + " -> " + to + ": " + errno_text(errno);
            } else {
                live_[to] = live_[from];
                live_.erase(from);
            }
            return true;
        }
        case RenameDir: {
            auto ds = dirs(false);
            if (ds.empty())
                return false;
            std::string from = pick(ds);
            std::string parent = pick(dirs(true));
            if (parent == from || parent.starts_with(from + "/"))
                return false;
            auto to = fresh_path(parent);
            if (!to)
                return false;
            log("rename dir " + from + " -> " + *to);
            if (::rename(env_.mnt(from).c_str(), env_.mnt(*to).c_str()) != 0) {
                *err = "rename " + from + " -> " + *to + ": " + errno_text(errno);
            } else {
                Tree moved;
                for (auto it = live_.begin(); it != live_.end();) {
                    if (it->first == from || it->first.starts_with(from + "/")) {
                        moved[*to + it->first.substr(from.size())] = it->second;
                        it = live_.erase(it);
                    } else {
                        ++it;
                    }
                }
                live_.insert(moved.begin(), moved.end());
            }
            return true;
        }
        case Create: {
            MountedStack::NewSnapshot s;
            s.description = "step " + std::to_string(step_);
            if (options_.cleanup && chance(0.5))
                s.cleanup = "number";
            uint32_t n = env_.stack().create_snapshot(s);
            log("create_snapshot" + (s.cleanup.empty() ? std::string() : " (cleanup number)") + " -> " +
                std::to_string(n));
            if (fresh_number(n, "create_snapshot", err))
                snaps_[n] = live_;
            ++snapshots_created;
            return true;
        }
        case Rollback:
        case RollbackNext: {
            if (snaps_.empty())
                return false;
            uint32_t target = pick_snapshot();
            bool next = op == RollbackNext;
            uint32_t before = env_.stack().rollback(target, next, 0);
            log(std::string("rollback ") + std::to_string(target) + (next ? " next_mount" : "") + " -> saved as " +
                std::to_string(before));
            ++rollbacks;
            Tree before_tree = live_;
            if (next && before == 0) {
                // Contract (mounted_stack.hpp): the state before is kept as a
                // new snapshot first and its number returned. Noted once; the
                // run goes on with what the implementation does (the saved
                // snapshot appears at the next mount).
                if (contract_notes.empty())
                    contract_notes = "step " + std::to_string(step_) +
                                     ": rollback(" + std::to_string(target) +
                                     ", next_mount=true) returned 0, not the number of a snapshot of the state "
                                     "before; no such snapshot exists until the next mount";
                ++remounts;
                if (std::string e = env_.remount(); !e.empty()) {
                    *err = "remount: " + e;
                    return true;
                }
                std::vector<uint32_t> appeared;
                for (const SnapshotRecord& r : env_.stack().snapshots())
                    if (!snaps_.count(r.number))
                        appeared.push_back(r.number);
                log("  remounted; new snapshots:" + [&] {
                    std::string x;
                    for (uint32_t n : appeared)
                        x += " " + std::to_string(n);
                    return x;
                }());
                if (appeared.size() != 1) {
                    *err = "after the remount that applied a next_mount rollback, " + std::to_string(appeared.size()) +
                           " new snapshots instead of 1";
                    return true;
                }
                if (!fresh_number(appeared[0], "the next mount", err))
                    return true;
                snaps_[appeared[0]] = before_tree;
                live_ = snaps_[target];
                return true;
            }
            if (!fresh_number(before, "rollback", err))
                return true;
            snaps_[before] = live_;
            if (next) {
                // Nothing changes until the next mount.
                if (std::string e = check(); !e.empty()) {
                    *err = "after rollback with next_mount, before the remount: " + e;
                    return true;
                }
                ++remounts;
                if (std::string e = env_.remount(); !e.empty()) {
                    *err = "remount: " + e;
                    return true;
                }
                log("  remounted");
            }
            live_ = snaps_[target];
            return true;
        }
        case Delete: {
            if (snaps_.empty())
                return false;
            std::vector<uint32_t> which{pick_snapshot()};
            if (snaps_.size() > 3 && chance(0.2)) {
                uint32_t other = pick_snapshot();
                if (other != which[0])
                    which.push_back(other);
            }
            std::string names;
            for (uint32_t n : which)
                names += " " + std::to_string(n);
            log("delete_snapshots" + names);
            env_.stack().delete_snapshots(which);
            for (uint32_t n : which)
                snaps_.erase(n);
            ++deletes;
            if (std::getenv("LAYERD_SNAPSHOT_REMOUNT_AFTER_DELETE")) {
                // Diagnosis only: a fresh engine over what the deletes left on disk.
                if (std::string e = env_.remount(); !e.empty())
                    *err = "remount: " + e;
                log("  remounted (LAYERD_SNAPSHOT_REMOUNT_AFTER_DELETE)");
            }
            return true;
        }
        case Cleanup: {
            // With number's limit 3 and min_age 0, every number-marked
            // snapshot but the newest three goes (the marks as recorded:
            // the state kept before a rollback is marked by the stack).
            std::vector<uint32_t> marked;
            for (const SnapshotRecord& r : env_.stack().snapshots())
                if (r.cleanup == "number")
                    marked.push_back(r.number);
            std::vector<uint32_t> expected(marked.begin(), marked.end() - std::min<long>(3, std::ssize(marked)));
            bool all = chance(0.5);
            auto algorithm = all ? std::nullopt : std::optional(CleanupAlgorithm::number);
            CleanupResult r = env_.stack().cleanup(algorithm, static_cast<int64_t>(std::time(nullptr)) + 1);
            log(std::string("cleanup(") + (all ? "all" : "number") + ") -> deleted" + show_numbers(r.deleted) +
                ", " + std::to_string(r.layers_removed) + " layers removed");
            ++cleanups;
            cleaned += static_cast<int>(r.deleted.size());
            for (uint32_t n : r.deleted)
                snaps_.erase(n);
            if (!r.failures.empty())
                *err = "cleanup reported failures: " + r.failures.front();
            else if (r.deleted != expected)
                *err = "cleanup deleted" + show_numbers(r.deleted) + ", expected" + show_numbers(expected) +
                       " (of the number-marked" + show_numbers(marked) + ", all but the newest 3)";
            return true;
        }
        case Diff: {
            std::vector<uint32_t> candidates{0};
            for (const auto& [n, t] : snaps_)
                candidates.push_back(n);
            uint32_t a = pick(candidates), b = pick(candidates);
            log("diff " + std::to_string(a) + " " + std::to_string(b));
            const Tree& ta = a == 0 ? live_ : snaps_[a];
            const Tree& tb = b == 0 ? live_ : snaps_[b];
            auto expected = model_diff(ta, tb);
            std::map<std::string, std::string> got;
            std::string dup;
            env_.stack().diff(a, b, [&](const DiffEntry& e) {
                if (got.count(e.path))
                    dup = e.path;
                got[e.path] = e.flags();
            });
            ++diffs;
            if (!dup.empty())
                *err = "diff(" + std::to_string(a) + ", " + std::to_string(b) + ") reported " + dup + " twice";
            else if (got != expected)
                *err = "diff(" + std::to_string(a) + ", " + std::to_string(b) + "): expected" + show_diff(expected) +
                       "\n  got" + show_diff(got);
            return true;
        }
        }
        return false;
    }

    std::string check()
    {
        Tree t;
        if (std::string err = env_.live_tree(&t); !err.empty())
            return "walking the mountpoint: " + err;
        if (std::string m = tree_mismatch(live_, t); !m.empty())
            return "the live view (through the mountpoint) differs from the model:" + m;

        std::set<uint32_t> listed;
        for (const SnapshotRecord& s : env_.stack().snapshots())
            listed.insert(s.number);
        std::set<uint32_t> expected;
        for (const auto& [n, tree] : snaps_)
            expected.insert(n);
        if (listed != expected) {
            std::string a, b;
            for (uint32_t n : expected)
                a += " " + std::to_string(n);
            for (uint32_t n : listed)
                b += " " + std::to_string(n);
            return "snapshots(): expected {" + a + " }, got {" + b + " }";
        }

        for (const auto& [n, tree] : snaps_) {
            auto rec = env_.store().get_snapshot(kStack, n);
            if (!rec)
                return "snapshot " + std::to_string(n) + " is not in the store";
            auto layer = env_.store().get_layer(rec->layer);
            if (!layer || layer->state != LayerState::Frozen)
                return "snapshot " + std::to_string(n) + "'s layer " + std::to_string(rec->layer) + " is " +
                       (layer ? std::string(to_string(layer->state)) : std::string("missing")) + ", not frozen";
            Tree st;
            if (std::string err = env_.snapshot_tree(n, &st); !err.empty())
                return "reading snapshot " + std::to_string(n) + " from disk: " + err;
            if (std::string m = tree_mismatch(tree, st); !m.empty())
                return "snapshot " + std::to_string(n) + " (layer " + std::to_string(rec->layer) +
                       ", read from disk) differs from the model:" + m;
        }

        auto live_layer = env_.store().live_layer(kStack);
        if (!live_layer)
            return "the store has no live layer for the stack";
        std::vector<int64_t> chain;
        if (std::string err = env_.chain_of(*live_layer, &chain); !err.empty())
            return err;
        unsigned depth = env_.stack().depth();
        if (depth != chain.size() - 1)
            return "depth() is " + std::to_string(depth) + " but the live layer's chain has " +
                   std::to_string(chain.size() - 1) + " layers under it";
        return "";
    }

    StackEnv& env_;
    std::mt19937_64 rng_;
    uint64_t seed_;
    ModelOptions options_;
    int step_ = 0;
    Tree live_;
    std::map<uint32_t, Tree> snaps_;
    std::set<uint32_t> used_numbers_;
    std::vector<std::string> log_;
};

class SnapshotModelTest : public SnapshotTest {
protected:
    // Runs the seeds (or $LAYERD_SNAPSHOT_SEED alone), each on a fresh stack.
    void run_seeds(std::vector<uint64_t> seeds, ModelOptions options)
    {
        if (auto s = env_seed()) {
            seeds = {*s};
            options.steps = env_steps(options.steps * 2);
        }
        std::printf("sizing: %zu seeds x %d operations%s\n", seeds.size(), options.steps,
                    env_seed() ? " (LAYERD_SNAPSHOT_SEED)" : kSanitized ? " (sanitizer build: shortened)" : "");
        int ops = 0;
        auto start = Clock::now();
        for (uint64_t seed : seeds) {
            SCOPED_TRACE("seed " + std::to_string(seed));
            fresh_env(false);
            ASSERT_FALSE(HasFatalFailure());
            env_->config.cleanup = model_cleanup_config();
            env_->config.free_limit = 0; // no free-space pass: the temp dir's free space is not the model's
            ASSERT_EQ(env_->mount(), "");
            auto t0 = Clock::now();
            ModelRun run(*env_, seed, options);
            std::string err = run.run();
            double secs = std::chrono::duration<double>(Clock::now() - t0).count();
            std::printf("seed %llu: %d steps, %d snapshots, %d rollbacks (%d remounts), %d deletes, %d diffs, "
                        "%d cleanups (%d snapshots deleted), %.1f s%s\n",
                        static_cast<unsigned long long>(seed), options.steps, run.snapshots_created, run.rollbacks,
                        run.remounts, run.deletes, run.diffs, run.cleanups, run.cleaned, secs,
                        err.empty() ? "" : " — FAILED");
            ops += options.steps;
            if (!err.empty())
                ADD_FAILURE() << err;
            if (!run.contract_notes.empty())
                ADD_FAILURE() << "seed " << seed << ", " << run.contract_notes;
        }
        std::printf("%d operations in %.1f s\n", ops,
                    std::chrono::duration<double>(Clock::now() - start).count());
    }
};

// 1. Every step through the mountpoint and on the snapshots, checked against
// the model: the live view, the list of snapshots, every remaining snapshot's
// view read from disk, the depth.
//
// Sizes: the issue asks for at least 500 operations per run over several
// seeds; a sanitizer build (several times slower) runs fewer and shorter.
TEST_F(SnapshotModelTest, RandomOperationsKeepEverySnapshotIntact)
{
    run_seeds(kSanitized ? std::vector<uint64_t>{1, 2, 3} : std::vector<uint64_t>{1, 2, 3, 4, 5},
              ModelOptions{.steps = kSanitized ? 200 : 500});
}

// The same with directory renames (redirects in the layers, merged on delete).
TEST_F(SnapshotModelTest, RandomOperationsWithDirectoryRenames)
{
    run_seeds(kSanitized ? std::vector<uint64_t>{11} : std::vector<uint64_t>{11, 12, 13},
              ModelOptions{.steps = kSanitized ? 200 : 500, .dir_renames = true});
}

// The same, also comparing diff() of random pairs (0 = live) with the model.
TEST_F(SnapshotModelTest, RandomDiffsMatchTheModel)
{
    run_seeds(kSanitized ? std::vector<uint64_t>{21} : std::vector<uint64_t>{21, 22, 23},
              ModelOptions{.steps = kSanitized ? 200 : 500, .check_diffs = true});
}

// ------------------------------------------------------------------ swaps

// 2a. An fd and a mapping opened before a rollback keep reading the old file;
// a new open sees the snapshot; writing through the old fd changes no layer
// of any snapshot.
TEST_F(SnapshotTest, FdOpenedBeforeRollbackKeepsOldDataNewOpenSeesSnapshot)
{
    ASSERT_EQ(write_path(mnt("/f"), "v1"), 0);
    uint32_t s = create("v1");
    ASSERT_EQ(write_path(mnt("/f"), "v2-after"), 0);
    ASSERT_EQ(write_path(mnt("/a"), "alpha changed"), 0);

    Fd ro(::open(mnt("/f").c_str(), O_RDONLY | O_CLOEXEC));
    Fd rw(::open(mnt("/f").c_str(), O_RDWR | O_CLOEXEC));
    Fd ra(::open(mnt("/a").c_str(), O_RDONLY | O_CLOEXEC));
    ASSERT_GE(ro.fd, 0);
    ASSERT_GE(rw.fd, 0);
    ASSERT_GE(ra.fd, 0);
    Mapping map(::mmap(nullptr, 8, PROT_READ, MAP_SHARED, ro.fd, 0), 8);
    ASSERT_NE(map.addr, MAP_FAILED);
    ASSERT_EQ(map.str(8), "v2-after");

    uint32_t saved = stack().rollback(s, false, 0);
    EXPECT_NE(saved, s);

    std::string now;
    EXPECT_EQ(read_path(mnt("/f"), &now), 0);
    EXPECT_EQ(now, "v1") << "a new open after the rollback must see the snapshot";
    EXPECT_EQ(read_path(mnt("/a"), &now), 0);
    EXPECT_EQ(now, "alpha\n");
    EXPECT_EQ(pread_all(ro.fd), "v2-after") << "an fd opened before the rollback must keep its data";
    EXPECT_EQ(pread_all(ra.fd), "alpha changed");
    EXPECT_EQ(map.str(8), "v2-after") << "a mapping made before the rollback must keep its data";

    Tree saved_before = snapshot(saved);
    std::string frozen_s = dump_layer(env_->layer_dir(store().get_snapshot(kStack, s)->layer));
    std::string frozen_saved = dump_layer(env_->layer_dir(store().get_snapshot(kStack, saved)->layer));

    // A write through an fd of the old view: whatever it returns, neither the
    // snapshot nor the saved state nor the new live view may change.
    // No fsync: the failed write-back is the kernel's to report, and it must
    // not make the next snapshot fail (its syncfs runs into it otherwise).
    ssize_t w = ::pwrite(rw.fd, "ZZ", 2, 0);
    int close_r = ::close(rw.fd);
    rw.fd = -1;
    std::printf("write through an fd of the old view: pwrite=%zd close=%d\n", w, close_r);
    uint32_t after = 0;
    try {
        after = create("after a write through an old fd");
    } catch (const std::exception& e) {
        ADD_FAILURE() << "create_snapshot after a write through an fd of the old view: " << describe(e);
        try {
            after = create("second try");
            std::printf("a second create_snapshot succeeded\n");
        } catch (const std::exception& e2) {
            ADD_FAILURE() << "and a second try: " << describe(e2);
        }
    }
    if (after) {
        EXPECT_EQ(snapshot(after).at("/f").data, "v1");
    }
    EXPECT_EQ(read_path(mnt("/f"), &now), 0);
    EXPECT_EQ(now, "v1");
    EXPECT_EQ(snapshot(s).at("/f").data, "v1");
    EXPECT_EQ(tree_mismatch(saved_before, snapshot(saved)), "");
    EXPECT_EQ(snapshot(saved).at("/f").data, "v2-after");
    EXPECT_EQ(dump_layer(env_->layer_dir(store().get_snapshot(kStack, s)->layer)), frozen_s);
    EXPECT_EQ(dump_layer(env_->layer_dir(store().get_snapshot(kStack, saved)->layer)), frozen_saved);
}

// 2b. Writes through fds and a shared mapping opened before create_snapshot
// (and before a second one) go to the new live layer; the frozen layers stay
// byte for byte what they were.
// A file of the live layer removed while open (unlinked, or replaced by a
// rename) is gone from the view; once a snapshot freezes its layer, a write
// through the open fd must go to a nameless copy. It once copied the file
// up under its old name: back from the dead, or EEXIST from the writeback
// (and every later syncfs) where the name was taken again.
TEST_F(SnapshotTest, FileRemovedWhileOpenStaysGoneAfterASnapshot)
{
    ASSERT_EQ(write_path(mnt("/gone"), "first"), 0);
    ASSERT_EQ(write_path(mnt("/target"), "old target"), 0);
    ASSERT_EQ(write_path(mnt("/source"), "new target"), 0);
    Fd unlinked(::open(mnt("/gone").c_str(), O_RDWR | O_CLOEXEC));
    Fd replaced(::open(mnt("/target").c_str(), O_RDWR | O_CLOEXEC));
    ASSERT_GE(unlinked.fd, 0);
    ASSERT_GE(replaced.fd, 0);
    ASSERT_EQ(::unlink(mnt("/gone").c_str()), 0);
    ASSERT_EQ(::rename(mnt("/source").c_str(), mnt("/target").c_str()), 0);
    uint32_t n = create("after the removals");

    ASSERT_EQ(::pwrite(unlinked.fd, "X", 1, 0), 1);
    ASSERT_EQ(::pwrite(replaced.fd, "Y", 1, 0), 1);
    EXPECT_EQ(::fsync(unlinked.fd), 0) << errno_text(errno);
    EXPECT_EQ(::fsync(replaced.fd), 0) << errno_text(errno);
    sync_mount();
    struct stat st;
    EXPECT_NE(::lstat(mnt("/gone").c_str(), &st), 0) << "a file unlinked while open came back";
    std::string target;
    EXPECT_EQ(read_path(mnt("/target"), &target), 0);
    EXPECT_EQ(target, "new target");
    EXPECT_EQ(pread_all(unlinked.fd), "Xirst");
    EXPECT_EQ(pread_all(replaced.fd), "Yld target");
    Tree frozen = snapshot(n);
    EXPECT_EQ(frozen.count("/gone"), 0u);
    EXPECT_EQ(frozen["/target"].data, "new target");
    // And the next snapshot's freeze sees no write-back error either.
    EXPECT_NO_THROW(create("the next one"));
}

TEST_F(SnapshotTest, WriteThroughFdOpenedBeforeSnapshotLeavesFrozenLayerUnchanged)
{
    ASSERT_EQ(write_path(mnt("/w"), "one"), 0);
    ASSERT_EQ(write_path(mnt("/m"), std::string(4096, 'm')), 0);
    Fd fw(::open(mnt("/w").c_str(), O_RDWR | O_CLOEXEC));
    Fd fa(::open(mnt("/a").c_str(), O_RDWR | O_CLOEXEC)); // a lower file
    Fd fb(::open(mnt("/d/b").c_str(), O_RDWR | O_CLOEXEC));
    Fd fm(::open(mnt("/m").c_str(), O_RDWR | O_CLOEXEC));
    ASSERT_GE(fw.fd, 0);
    ASSERT_GE(fa.fd, 0);
    ASSERT_GE(fb.fd, 0);
    ASSERT_GE(fm.fd, 0);
    Mapping map(::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fm.fd, 0), 4096);
    ASSERT_NE(map.addr, MAP_FAILED);

    uint32_t s1 = create("s1");
    Tree view1 = snapshot(s1);
    std::string layer1 = env_->layer_dir(store().get_snapshot(kStack, s1)->layer);
    std::string bytes1 = dump_layer(layer1);

    ASSERT_EQ(::pwrite(fw.fd, "TWO", 3, 0), 3) << strerror(errno);
    ASSERT_EQ(::pwrite(fa.fd, "ALPHA", 5, 0), 5) << strerror(errno);
    std::memcpy(map.addr, "MAPPED", 6);
    ASSERT_EQ(::msync(map.addr, 4096, MS_SYNC), 0) << strerror(errno);
    EXPECT_EQ(::fsync(fw.fd), 0) << strerror(errno);
    EXPECT_EQ(::fsync(fa.fd), 0) << strerror(errno);
    EXPECT_EQ(::fsync(fm.fd), 0) << strerror(errno);
    sync_mount();

    EXPECT_EQ(dump_layer(layer1), bytes1) << "snapshot " << s1 << "'s layer changed on disk";
    EXPECT_EQ(tree_mismatch(view1, snapshot(s1)), "");
    EXPECT_EQ(snapshot(s1).at("/w").data, "one");
    EXPECT_EQ(snapshot(s1).at("/a").data, "alpha\n");
    EXPECT_EQ(snapshot(s1).at("/m").data, std::string(4096, 'm'));

    std::string now;
    EXPECT_EQ(read_path(mnt("/w"), &now), 0);
    EXPECT_EQ(now, "TWO");
    EXPECT_EQ(read_path(mnt("/a"), &now), 0);
    EXPECT_EQ(now, "ALPHA\n");
    EXPECT_EQ(read_path(mnt("/m"), &now), 0);
    EXPECT_EQ(now, "MAPPED" + std::string(4090, 'm'));

    // A second snapshot under the same open fds: both frozen layers keep their bytes.
    uint32_t s2 = create("s2");
    std::string layer2 = env_->layer_dir(store().get_snapshot(kStack, s2)->layer);
    std::string bytes2 = dump_layer(layer2);
    ASSERT_EQ(::pwrite(fw.fd, "3", 1, 0), 1) << strerror(errno);
    ASSERT_EQ(::pwrite(fb.fd, "B", 1, 0), 1) << strerror(errno);
    std::memcpy(map.addr, "again", 5);
    ASSERT_EQ(::msync(map.addr, 4096, MS_SYNC), 0);
    EXPECT_EQ(::fsync(fw.fd), 0);
    EXPECT_EQ(::fsync(fb.fd), 0);
    EXPECT_EQ(::fsync(fm.fd), 0);
    sync_mount();
    EXPECT_EQ(dump_layer(layer1), bytes1);
    EXPECT_EQ(dump_layer(layer2), bytes2) << "snapshot " << s2 << "'s layer changed on disk";
    EXPECT_EQ(snapshot(s2).at("/w").data, "TWO");
    EXPECT_EQ(snapshot(s2).at("/d/b").data, "beta\n");
    EXPECT_EQ(snapshot(s2).at("/m").data, "MAPPED" + std::string(4090, 'm'));
    EXPECT_EQ(read_path(mnt("/w"), &now), 0);
    EXPECT_EQ(now, "3WO");
    EXPECT_EQ(read_path(mnt("/d/b"), &now), 0);
    EXPECT_EQ(now, "Beta\n");
    EXPECT_EQ(read_path(mnt("/m"), &now), 0);
    EXPECT_EQ(now, "againD" + std::string(4090, 'm'));
}

// 2c. After a rollback the kernel shows the snapshot, with no dentry or
// attribute cached from before: what was created after the snapshot is gone,
// what was deleted is back, modes and contents are the snapshot's. And the
// same when the rollback is undone.
TEST_F(SnapshotTest, NoStaleDentryAfterRollback)
{
    uint32_t s = create();
    Tree at_s = live();

    ASSERT_EQ(write_path(mnt("/new"), "n"), 0);
    ASSERT_EQ(::mkdir(mnt("/nd").c_str(), 0755), 0);
    ASSERT_EQ(::unlink(mnt("/a").c_str()), 0);
    ASSERT_EQ(::unlink(mnt("/d/sub/c").c_str()), 0);
    ASSERT_EQ(::rmdir(mnt("/d/sub").c_str()), 0);
    ASSERT_EQ(::rmdir(mnt("/e").c_str()), 0);
    ASSERT_EQ(write_path(mnt("/d/b"), "changed"), 0);
    ASSERT_EQ(::chmod(mnt("/x").c_str(), 0600), 0);
    ASSERT_EQ(::rename(mnt("/g").c_str(), mnt("/g2").c_str()), 0);
    // Let the kernel cache all of it: positive and negative dentries, attrs, pages.
    struct stat st;
    EXPECT_EQ(::stat(mnt("/new").c_str(), &st), 0);
    EXPECT_EQ(::stat(mnt("/nd").c_str(), &st), 0);
    EXPECT_NE(::stat(mnt("/a").c_str(), &st), 0);
    EXPECT_NE(::stat(mnt("/d/sub").c_str(), &st), 0);
    EXPECT_NE(::stat(mnt("/d/sub/c").c_str(), &st), 0);
    EXPECT_NE(::stat(mnt("/e").c_str(), &st), 0);
    EXPECT_NE(::stat(mnt("/g").c_str(), &st), 0);
    EXPECT_EQ(::stat(mnt("/x").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0600u);
    std::string data;
    EXPECT_EQ(read_path(mnt("/d/b"), &data), 0);
    Tree changed = live();

    uint32_t saved = stack().rollback(s, false, 0);

    EXPECT_NE(::stat(mnt("/new").c_str(), &st), 0) << "/new, created after the snapshot, is still visible";
    EXPECT_NE(::stat(mnt("/nd").c_str(), &st), 0) << "/nd, created after the snapshot, is still visible";
    EXPECT_NE(::stat(mnt("/g2").c_str(), &st), 0);
    EXPECT_EQ(::stat(mnt("/a").c_str(), &st), 0) << "/a, deleted after the snapshot, is not back";
    EXPECT_EQ(::stat(mnt("/d/sub/c").c_str(), &st), 0) << "/d/sub/c, deleted after the snapshot, is not back";
    EXPECT_EQ(::stat(mnt("/e").c_str(), &st), 0) << "/e, deleted after the snapshot, is not back";
    EXPECT_EQ(::stat(mnt("/g").c_str(), &st), 0);
    EXPECT_EQ(::stat(mnt("/x").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0644u) << "/x shows the mode cached from before the rollback";
    EXPECT_EQ(read_path(mnt("/d/b"), &data), 0);
    EXPECT_EQ(data, "beta\n");
    EXPECT_EQ(tree_mismatch(at_s, live()), "");

    // Undo: back to the saved state, through the same cached dentries.
    uint32_t saved2 = stack().rollback(saved, false, 0);
    EXPECT_NE(saved2, saved);
    EXPECT_EQ(::stat(mnt("/new").c_str(), &st), 0);
    EXPECT_NE(::stat(mnt("/a").c_str(), &st), 0);
    EXPECT_NE(::stat(mnt("/e").c_str(), &st), 0);
    EXPECT_EQ(::stat(mnt("/x").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0600u);
    EXPECT_EQ(tree_mismatch(changed, live()), "");
    EXPECT_EQ(tree_mismatch(at_s, snapshot(saved2)), "");
}

// A rollback with next_mount changes nothing until the stack is mounted again.
TEST_F(SnapshotTest, NextMountRollbackAppliesAtTheNextMount)
{
    ASSERT_EQ(write_path(mnt("/f"), "old"), 0);
    uint32_t s = create();
    Tree at_s = live();
    ASSERT_EQ(write_path(mnt("/f"), "new"), 0);
    ASSERT_EQ(::unlink(mnt("/a").c_str()), 0);
    Tree before = live();

    uint32_t saved = stack().rollback(s, true, 0);
    EXPECT_EQ(tree_mismatch(before, live()), "") << "next_mount rollback changed the live view now";
    // The contract: the state before is kept as a snapshot first, its number returned.
    EXPECT_NE(saved, 0u) << "rollback(next_mount) returned no snapshot number";
    EXPECT_EQ(numbers(), (std::set<uint32_t>{s, saved}));
    if (saved != 0) {
        EXPECT_EQ(tree_mismatch(before, snapshot(saved)), "");
    }

    ASSERT_EQ(env_->remount(), "");
    EXPECT_EQ(tree_mismatch(at_s, live()), "") << "the next mount did not apply the rollback";
    if (saved == 0) { // what the implementation does instead: a snapshot made at the mount
        std::set<uint32_t> appeared = numbers();
        appeared.erase(s);
        ASSERT_EQ(appeared.size(), 1u);
        saved = *appeared.begin();
    }
    EXPECT_EQ(tree_mismatch(before, snapshot(saved)), "");
    EXPECT_EQ(tree_mismatch(at_s, snapshot(s)), "");
    EXPECT_FALSE(store().pending_rollback(kStack).has_value());

    // Applied once: a second remount keeps what is live now.
    ASSERT_EQ(write_path(mnt("/after"), "x"), 0);
    Tree now = live();
    ASSERT_EQ(env_->remount(), "");
    EXPECT_EQ(tree_mismatch(now, live()), "");
}

// ------------------------------------------------------------------- diff

using DiffList = std::vector<std::pair<std::string, std::string>>;

std::string show(const DiffList& d)
{
    std::string out;
    for (const auto& [path, flags] : d)
        out += "\n  " + flags + " " + path;
    return out.empty() ? "(none)" : out;
}

class SnapshotDiffTest : public SnapshotTest {
protected:
    DiffList diff(uint32_t a, uint32_t b)
    {
        DiffList out;
        try {
            stack().diff(a, b, [&](const DiffEntry& e) { out.emplace_back(e.path, e.flags()); });
        } catch (const std::exception& e) {
            ADD_FAILURE() << "diff(" << a << ", " << b << "): " << describe(e);
        }
        return out;
    }
    // Compares as sets, then checks the documented order (parents first,
    // siblings by bytes).
    void expect_diff(uint32_t a, uint32_t b, DiffList expected)
    {
        DiffList got = diff(a, b);
        DiffList sorted_got = got;
        std::sort(sorted_got.begin(), sorted_got.end());
        std::sort(expected.begin(), expected.end());
        EXPECT_EQ(sorted_got, expected) << "diff(" << a << ", " << b << ")\nexpected:" << show(expected)
                                        << "\ngot:" << show(got);
        for (size_t i = 1; i < got.size(); ++i)
            EXPECT_TRUE(path_less(got[i - 1].first, got[i].first))
                << "diff(" << a << ", " << b << ") is not in path order: " << got[i - 1].first << " before "
                << got[i].first;
    }
    static DiffList reversed(const DiffList& d)
    {
        DiffList out;
        for (auto [path, flags] : d) {
            if (flags[0] == '+')
                flags[0] = '-';
            else if (flags[0] == '-')
                flags[0] = '+';
            out.emplace_back(path, flags);
        }
        return out;
    }
};

// 3. Known changes between A and B, then between B and the live view.
TEST_F(SnapshotDiffTest, DiffListsExactlyTheChangedPathsWithTheirFlags)
{
    uint32_t a = create("A");
    ASSERT_EQ(write_path(mnt("/new"), "n"), 0);                       // created
    ASSERT_EQ(::mkdir(mnt("/nd").c_str(), 0755), 0);                  // created dir…
    ASSERT_EQ(write_path(mnt("/nd/f"), "f"), 0);                      // …with a file
    ASSERT_EQ(::unlink(mnt("/x").c_str()), 0);                        // deleted (lower)
    ASSERT_EQ(::unlink(mnt("/d/sub/c").c_str()), 0);                  // deleted dir…
    ASSERT_EQ(::rmdir(mnt("/d/sub").c_str()), 0);                     // …with its file
    ASSERT_EQ(write_path(mnt("/d/b"), "BETA!"), 0);                   // content
    ASSERT_EQ(::chmod(mnt("/p").c_str(), 0600), 0);                   // permissions
    ASSERT_EQ(::chown(mnt("/o").c_str(), 1234, static_cast<gid_t>(-1)), 0); // owner
    ASSERT_EQ(::chown(mnt("/g").c_str(), static_cast<uid_t>(-1), 4321), 0); // group
    ASSERT_EQ(write_path(mnt("/a"), "ALPHA"), 0);                     // content + mode
    ASSERT_EQ(::chmod(mnt("/a").c_str(), 0640), 0);
    ASSERT_EQ(::rmdir(mnt("/e").c_str()), 0);                         // deleted empty dir
    ASSERT_EQ(::mkdir(mnt("/e").c_str(), 0700), 0);                   // … and a new one: mode only
    uint32_t b = create("B");

    DiffList ab = {
        {"/a", "cp...."},   {"/d/b", "c....."},     {"/d/sub", "-....."}, {"/d/sub/c", "-....."},
        {"/e", ".p...."},   {"/g", "...g.."},       {"/new", "+....."},   {"/nd", "+....."},
        {"/nd/f", "+....."}, {"/o", "..u..."},      {"/p", ".p...."},     {"/x", "-....."},
    };
    expect_diff(a, b, ab);
    expect_diff(b, a, reversed(ab));
    expect_diff(a, a, {});
    expect_diff(b, 0, {});

    // Further changes, against the live view.
    ASSERT_EQ(write_path(mnt("/new2"), "2"), 0);
    ASSERT_EQ(::unlink(mnt("/new").c_str()), 0);
    ASSERT_EQ(write_path(mnt("/nd/f"), "F"), 0);
    ASSERT_EQ(write_path(mnt("/o"), "own"), 0); // same bytes written again: no change
    ASSERT_EQ(::unlink(mnt("/p").c_str()), 0);
    ASSERT_EQ(::mkdir(mnt("/p").c_str(), 0600), 0); // file → dir
    bool xattr = ::setxattr(mnt("/d/b").c_str(), "user.k", "v", 1, 0) == 0;
    if (!xattr)
        std::printf("user xattrs not settable through the mount (%s): no 'x' check\n", strerror(errno));
    DiffList b0 = {
        {"/new", "-....."}, {"/new2", "+....."}, {"/nd/f", "c....."}, {"/p", "t....."},
    };
    if (xattr)
        b0.emplace_back("/d/b", "....x.");
    expect_diff(b, 0, b0);
    expect_diff(0, b, reversed(b0));

    // After a rollback to A the live view descends from A: diffs across branches.
    uint32_t saved = stack().rollback(a, false, 0);
    expect_diff(a, 0, {});
    expect_diff(b, 0, reversed(ab));
    expect_diff(saved, b, reversed(b0));
    ASSERT_EQ(write_path(mnt("/c-only"), "c"), 0);
    uint32_t c = create("C");
    DiffList bc = reversed(ab);
    bc.emplace_back("/c-only", "+.....");
    expect_diff(b, c, bc);
    expect_diff(c, b, reversed(bc));
}

// /etc over /etc: the stack's mountpoint is its own lower. Diffs and live
// rollbacks must reach the lower through what the stack opened before it
// mounted, never by its path, which now leads into the mount itself.
TEST_F(SnapshotDiffTest, AStackMountedOverItsOwnLowerDiffsAndRollsBackOverTheRealLower)
{
    ASSERT_EQ(env_->unmount(), "");
    env_->config.mountpoint = env_->config.lowers.front();
    Fd real_lower(::open(env_->config.lowers.front().c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    ASSERT_GE(real_lower.fd, 0) << errno_text(errno);
    ASSERT_EQ(env_->mount(), "");

    uint32_t a = create("A");
    ASSERT_EQ(write_path(mnt("/new"), "n"), 0);
    ASSERT_EQ(write_path(mnt("/a"), "ALPHA"), 0);
    uint32_t b = create("B");
    expect_diff(a, b, {{"/a", "c....."}, {"/new", "+....."}});
    expect_diff(b, 0, {});

    try {
        stack().rollback(a, false, 0);
    } catch (const std::exception& e) {
        FAIL() << "live rollback to " << a << ": " << describe(e);
    }
    EXPECT_EQ(tree_mismatch(StackEnv::initial_tree(), live()), "");
    expect_diff(b, 0, {{"/a", "c....."}, {"/new", "-....."}});
    // The writes went to the upper: the lower under the mount is as it was.
    struct stat st;
    EXPECT_NE(::fstatat(real_lower.fd, "new", &st, AT_SYMLINK_NOFOLLOW), 0) << "/new reached the real lower";
    std::string data;
    ASSERT_EQ(read_path("/proc/self/fd/" + std::to_string(real_lower.fd) + "/a", &data), 0);
    EXPECT_EQ(data, "alpha\n");
}

// Deleting the newest snapshot merges its layer into the live upper (its
// only child) while the mount serves it: the live view must go on working
// (the model tests' EEXIST failures, reduced).
TEST_F(SnapshotTest, DeletingTheNewestSnapshotKeepsTheLiveMountWorking)
{
    ASSERT_EQ(write_path(mnt("/d/new"), "x"), 0); // /d copied up into the live layer
    ASSERT_EQ(::unlink(mnt("/x").c_str()), 0);   // a whiteout in it
    uint32_t s = create("newest");
    stack().delete_snapshots({s});
    EXPECT_EQ(write_path(mnt("/d/other"), "y"), 0) << "creating a file in a dir the merged layer held";
    EXPECT_EQ(write_path(mnt("/x"), "back"), 0) << "re-creating a file the merged layer had whited out";
    EXPECT_EQ(write_path(mnt("/d/b"), "B", O_WRONLY | O_APPEND), 0) << "changing a lower file";
    Tree expected = StackEnv::initial_tree();
    expected["/d/new"] = {'f', "x"};
    expected["/d/other"] = {'f', "y"};
    expected["/x"] = {'f', "back"};
    expected["/d/b"] = {'f', "beta\nB"};
    EXPECT_EQ(tree_mismatch(expected, live()), "");
    ASSERT_EQ(env_->remount(), "");
    EXPECT_EQ(tree_mismatch(expected, live()), "") << "after a remount";
}

// A directory renamed twice across snapshots: the second rename's redirect
// must lead through the layer that holds the dir under its middle name (the
// dir-rename model failures, reduced; the engine writes the redirect).
TEST_F(SnapshotTest, DirectoryRenamedAgainAfterASnapshotKeepsItsContent)
{
    ASSERT_EQ(::rename(mnt("/d/sub").c_str(), mnt("/c").c_str()), 0); // redirect "/d/sub"
    create("first rename");
    ASSERT_EQ(write_path(mnt("/c/new"), "n"), 0); // in the next layer, under "c"
    create("file added");
    ASSERT_EQ(::rename(mnt("/c").c_str(), mnt("/n2").c_str()), 0);
    uint32_t s = create("second rename");
    Tree expected = StackEnv::initial_tree();
    expected.erase("/d/sub");
    expected.erase("/d/sub/c");
    expected["/n2"] = {'d', ""};
    expected["/n2/c"] = {'f', "gamma\n"};
    expected["/n2/new"] = {'f', "n"};
    EXPECT_EQ(tree_mismatch(expected, live()), "") << "through the mount";
    EXPECT_EQ(tree_mismatch(expected, snapshot(s)), "") << "snapshot " << s << " read from disk";
    ASSERT_EQ(env_->remount(), "");
    EXPECT_EQ(tree_mismatch(expected, live()), "") << "after a remount";
}

// A crash between removing a leaf layer's files and its database row (what
// the SIGKILL test hits at random) made deterministic: the row is left
// Removing and the dir gone. Recovery must finish it, and deleting its parent
// later must not try to merge into it.
TEST_F(SnapshotTest, InterruptedLayerRemovalIsFinishedByRecovery)
{
    ASSERT_EQ(write_path(mnt("/f"), "one"), 0);
    uint32_t s1 = create("s1");
    ASSERT_EQ(write_path(mnt("/f"), "two"), 0);
    uint32_t s2 = create("s2");
    ASSERT_EQ(write_path(mnt("/f"), "three"), 0);
    uint32_t s3 = stack().rollback(s1, false, 0); // s3's layer is a leaf under s2's
    int64_t leaf = store().get_snapshot(kStack, s3)->layer;
    ASSERT_EQ(env_->unmount(), "");

    // delete_snapshots({s3}) killed after remove_tree, before delete_layer:
    ASSERT_TRUE(store().delete_snapshot_row(kStack, s3));
    store().set_layer_state(leaf, LayerState::Removing);
    ASSERT_EQ(sh("rm -rf '" + env_->layer_dir(leaf) + "'"), 0);

    ASSERT_EQ(env_->mount(), "") << "recovery";
    auto rec = store().get_layer(leaf);
    EXPECT_FALSE(rec && rec->state == LayerState::Removing) << "layer " << leaf << " is still Removing after recovery";

    try {
        stack().delete_snapshots({s2});
    } catch (const std::exception& e) {
        ADD_FAILURE() << "delete_snapshots({s2}) after the interrupted removal: " << describe(e);
    }
    EXPECT_EQ(env_->remount(), "") << "the stack can no longer be mounted";
    if (env_->mounted()) {
        EXPECT_EQ(numbers(), (std::set<uint32_t>{s1}));
        EXPECT_EQ(snapshot(s1).at("/f").data, "one");
        std::string data;
        EXPECT_EQ(read_path(mnt("/f"), &data), 0);
        EXPECT_EQ(data, "one");
    }
}

// ------------------------------------------------------------------ crash

// What the crash child writes before each operation: the churn files, then
// f1 and d/f2 derived from the token, then the marker (last). A snapshot
// holds a complete set: marker T, f1 "T:1", d/f2 "T:2", churn tokens ≤ T.
struct Token {
    long run = 0, i = 0;
    std::string str() const { return "tok-" + std::to_string(run) + "-" + std::to_string(i); }
    static std::optional<Token> parse(const std::string& s)
    {
        Token t;
        if (std::sscanf(s.c_str(), "tok-%ld-%ld", &t.run, &t.i) != 2 || t.str() != s)
            return std::nullopt;
        return t;
    }
    bool operator<=(const Token& o) const { return run < o.run || (run == o.run && i <= o.i); }
};

// Logs every mount's FUSE connection to CONNECTIONS as soon as it is there
// (log_connection()), so the parent can abort all it may hang on after the kill.
[[noreturn]] void crash_child(const StackConfig& config, const std::string& db, const std::string& connections,
                              uint64_t seed, long run)
{
    auto die = [](const std::string& what) {
        std::fprintf(stderr, "child: %s\n", what.c_str());
        std::fflush(stderr);
        ::_exit(3);
    };
    try {
        std::mt19937_64 rng(seed);
        auto uniform = [&](size_t n) { return std::uniform_int_distribution<size_t>(0, n - 1)(rng); };
        SnapshotStore store = SnapshotStore::open(db);
        std::string m = config.mountpoint;
        auto stack = std::make_unique<MountedStack>(store, config);
        int connection = log_connection(connections, m);
        // ~MountedStack unmounts (aborting a busy connection) and ends the
        // server loop: the old connection can no longer hold the child.
        auto mount_afresh = [&] {
            stack.reset();
            log_connection_gone(connections, connection);
            stack = std::make_unique<MountedStack>(store, config);
            connection = log_connection(connections, m);
        };
        std::fprintf(stderr, "child %ld: mounted\n", run);
        int op_failures = 0;
        for (long i = 0;; ++i) {
            std::string tok = Token{run, i}.str();
            // The token files. A write refused by the live mount (the engine
            // not told of a merge into its upper: see the model tests) gets
            // one fresh mount and a second try, so the loop goes on to crash.
            bool remounted = false;
            for (int attempt = 0; attempt < 2; ++attempt) {
                std::string failed;
                ::mkdir((m + "/churn").c_str(), 0755);
                for (int k = 0; k < 3 && failed.empty(); ++k) {
                    std::string p = m + "/churn/" + std::to_string(uniform(8));
                    if (uniform(4) == 0)
                        ::unlink(p.c_str());
                    else if (int r = write_path(p, tok + std::string(uniform(3000), '.')); r < 0)
                        failed = "write " + p + ": " + errno_text(-r);
                }
                for (const auto& [p, data] : {std::pair{m + "/f1", tok + ":1"}, std::pair{m + "/d/f2", tok + ":2"},
                                              std::pair{m + "/marker", tok}})
                    if (failed.empty())
                        if (int r = write_path(p, data); r < 0)
                            failed = "write " + p + ": " + errno_text(-r);
                if (failed.empty())
                    break;
                if (remounted)
                    die(failed + " (also after a fresh mount)");
                std::fprintf(stderr, "child %ld: %s; mounting afresh\n", run, failed.c_str());
                mount_afresh();
                remounted = true;
            }
            // A syncfs that fails on a write-back the engine refused (the
            // same stale-engine problem) gets one fresh mount, then the loop
            // goes on; two failures in a row end the child.
            try {
                auto snaps = stack->snapshots();
                size_t op = snaps.size() > 10 ? 99 : uniform(100);
                if (op < 40 || snaps.empty()) {
                    MountedStack::NewSnapshot s;
                    s.description = tok;
                    if (uniform(2) == 0)
                        s.cleanup = "number";
                    stack->create_snapshot(s);
                } else if (op < 58) {
                    stack->rollback(snaps[uniform(snaps.size())].number, false, 0);
                } else if (op < 65) {
                    stack->rollback(snaps[uniform(snaps.size())].number, true, 0);
                    mount_afresh();
                } else if (op < 78) {
                    // Deletes (merges), abandoned layers and leftovers.
                    auto algorithm = uniform(2) == 0 ? std::nullopt : std::optional(CleanupAlgorithm::number);
                    std::fprintf(stderr, "op cleanup\n");
                    auto r = stack->cleanup(algorithm, static_cast<int64_t>(std::time(nullptr)) + 1);
                    std::fprintf(stderr, "op cleanup done: %zu deleted\n", r.deleted.size());
                } else if (op < 86 && snaps.size() > 1) {
                    // The oldest snapshot: its layer usually has a child to merge into.
                    std::fprintf(stderr, "op delete oldest\n");
                    stack->delete_snapshots({snaps.front().number});
                } else if (snaps.size() > 2) {
                    std::vector<uint32_t> which{snaps[uniform(snaps.size())].number};
                    if (snaps.size() > 10)
                        which.push_back(snaps[uniform(snaps.size())].number);
                    if (which.size() == 2 && which[0] == which[1])
                        which.pop_back();
                    stack->delete_snapshots(which);
                }
                op_failures = 0;
            } catch (const SnapshotError& e) {
                if (e.kind() != SnapshotError::Kind::Io || ++op_failures > 1)
                    throw;
                std::fprintf(stderr, "child %ld: %s; mounting afresh\n", run, describe(e).c_str());
                mount_afresh();
            }
        }
    } catch (const std::exception& e) {
        die(describe(e));
    }
    ::_exit(4);
}

// 5. A process running snapshot operations in a loop is SIGKILLed at random
// moments; after each kill every snapshot in the database reads back whole
// from disk, before and after recovery, and recovery leaves nothing half-done.
TEST_F(SnapshotTest, SigkillAtRandomMomentsLeavesEverySnapshotWhole)
{
    uint64_t seed = env_seed().value_or(4242);
    // The issue asks for at least 50 kills; a sanitizer build runs fewer.
    int runs = env_seed() ? env_steps(50) : kSanitized ? 20 : 50;
    std::mt19937_64 rng(seed);
    std::printf("crash test seed %llu (LAYERD_SNAPSHOT_SEED=%llu), sizing: %d kill runs%s\n",
                static_cast<unsigned long long>(seed), static_cast<unsigned long long>(seed), runs,
                env_seed() ? " (LAYERD_SNAPSHOT_STEPS)" : kSanitized ? " (sanitizer build: shortened)" : "");
    ASSERT_EQ(env_->unmount(), "");
    env_->close_store(); // no SQLite connection across fork()
    // The children's cleanup (and the parent's after each recovery).
    env_->config.cleanup = model_cleanup_config();
    env_->config.free_limit = 0;
    const std::string db = env_->config.state_dir + "/layerd.db";
    int checked = 0, total_snapshots = 0, orphan_dirs = 0, stuck_after_kill = 0;
    int child_cleanups = 0, child_oldest_deletes = 0; // started in the children (the kill may cut them short)
    std::vector<std::string> leftovers; // half-done layer states recovery did not finish
    std::set<int64_t> leftover_ids;

    // Every snapshot's view complete; "" or what is wrong.
    auto check_snapshots = [&](const char* when) -> std::string {
        std::string problems;
        for (const SnapshotRecord& s : store().list_snapshots(kStack)) {
            ++total_snapshots;
            std::string name = std::string(when) + ": snapshot " + std::to_string(s.number) + " (layer " +
                               std::to_string(s.layer) + ", '" + s.description + "')";
            Tree t;
            bool before = std::strcmp(when, "before recovery") == 0;
            if (std::string err = env_->snapshot_tree(s.number, &t, before); !err.empty()) {
                problems += "\n" + name + ": " + err;
                continue;
            }
            auto get = [&](const std::string& p) { return t.count(p) ? t[p].data : std::string("<missing>"); };
            std::string marker = get("/marker");
            auto tok = Token::parse(marker);
            if (!tok) {
                problems += "\n" + name + ": marker is " + show_data(marker);
                continue;
            }
            if (s.description.starts_with("tok-") && s.description != marker)
                problems += "\n" + name + ": holds marker " + marker + ", taken at " + s.description;
            if (get("/f1") != marker + ":1" || get("/d/f2") != marker + ":2")
                problems += "\n" + name + ": marker " + marker + " but f1 " + show_data(get("/f1")) + ", d/f2 " +
                            show_data(get("/d/f2"));
            // A churn file a killed child had truncated but not yet written
            // stays empty in the live layer, and so in later snapshots.
            for (const auto& [p, e] : t)
                if (p.starts_with("/churn/") && !e.data.empty()) {
                    auto ct = Token::parse(e.data.substr(0, e.data.find('.')));
                    if (!ct)
                        problems += "\n" + name + ": " + p + " holds " + show_data(e.data);
                    else if (!(*ct <= *tok))
                        problems += "\n" + name + ": " + p + " holds " + show_data(e.data) + ", newer than marker " +
                                    marker;
                }
            auto layer = store().get_layer(s.layer);
            if (!layer || layer->state != LayerState::Frozen)
                problems += "\n" + name + ": its layer is " +
                            (layer ? std::string(to_string(layer->state)) : std::string("missing"));
        }
        return problems;
    };

    for (int run = 0; run < runs; ++run) {
        SCOPED_TRACE("crash run " + std::to_string(run) + ", seed " + std::to_string(seed));
        uint64_t child_seed = rng();
        int delay_ms = std::uniform_int_distribution<int>(5, 1200)(rng);
        std::string log = env_->root + "/child-" + std::to_string(run) + ".log";
        std::string connections = env_->root + "/child-" + std::to_string(run) + ".connections";
        std::fflush(nullptr);
        pid_t pid = ::fork();
        ASSERT_GE(pid, 0);
        if (pid == 0) {
            int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
            if (fd >= 0)
                ::dup2(fd, 2);
            crash_child(env_->config, db, connections, child_seed, run);
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
        // The child is its own FUSE server: a thread of it waiting on a
        // request its dead server thread had already read waits
        // uninterruptibly, so SIGKILL alone may not end it. Aborting the
        // connections it may wait on does (what a supervisor has to do for
        // layerd too): every one it logged, also those it detached or
        // replaced meanwhile, and whatever is mounted at the mountpoint.
        ReapOptions reap;
        reap.connection_log = connections;
        reap.mountpoints = {env_->config.mountpoint};
        Reaped k = kill_and_reap(pid, reap);
        ASSERT_TRUE(k.reaped) << "the child did not die within " << k.seconds << " s of SIGKILL although "
                              << k.aborted.size() << " FUSE connections were aborted (it logged "
                              << logged_connections(connections).size()
                              << " as live); left unreaped; its threads:" << k.stacks << k.problems;
        EXPECT_EQ(k.problems, "") << "tearing the killed child's mounts down";
        if (!k.aborted.empty()) {
            ++stuck_after_kill;
            std::string numbers;
            for (unsigned n : k.aborted)
                numbers += " " + std::to_string(n);
            std::printf("run %d: the child still lived %d ms after SIGKILL (%s); aborted FUSE connections%s; "
                        "reaped after %.2f s\n",
                        run, static_cast<int>(reap.grace.count()), k.waits.c_str(), numbers.c_str(), k.seconds);
        }
        int status = k.status;
        std::string child_log = read_file(log);
        for (size_t at = 0; (at = child_log.find("op cleanup\n", at)) != std::string::npos; ++at)
            ++child_cleanups;
        for (size_t at = 0; (at = child_log.find("op delete oldest\n", at)) != std::string::npos; ++at)
            ++child_oldest_deletes;
        bool killed = WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
        EXPECT_TRUE(killed) << "the child ended by itself (status " << status << ") after " << delay_ms
                            << " ms:\n" << child_log;
        force_unmount(env_->config.mountpoint);

        // Some runs leave the crash to the next child's recovery.
        bool verify = run == runs - 1 || !killed || std::uniform_int_distribution<int>(0, 2)(rng) != 0;
        if (!verify)
            continue;
        ++checked;
        env_->open_store();
        EXPECT_EQ(store().integrity_problems(), std::vector<std::string>{});
        // Before recovery: what the database records must already read whole.
        std::string problems = check_snapshots("before recovery");
        EXPECT_EQ(problems, "") << "killed after " << delay_ms << " ms";
        bool serious = !problems.empty();
        std::string mounted = env_->mount();
        EXPECT_EQ(mounted, "") << "recovery after a kill at " << delay_ms << " ms";
        serious |= !mounted.empty();
        if (mounted.empty()) {
            problems = check_snapshots("after recovery");
            EXPECT_EQ(problems, "") << "killed after " << delay_ms << " ms";
            serious |= !problems.empty();
            EXPECT_FALSE(store().pending_rollback(kStack).has_value()) << "a pending rollback survived a mount";
            EXPECT_TRUE(store().merges_in_progress().empty()) << "a merge was left unfinished by recovery";
            // The database and the layer dirs agree.
            std::set<std::string> db_dirs, disk_dirs;
            for (const LayerRecord& l : store().list_layers(kStack)) {
                if ((l.state == LayerState::Removing || l.state == LayerState::Merging) &&
                    !leftover_ids.count(l.id) && leftover_ids.insert(l.id).second)
                    leftovers.push_back("run " + std::to_string(run) + " (killed after " + std::to_string(delay_ms) +
                                        " ms): layer " + std::to_string(l.id) + " still " +
                                        std::string(to_string(l.state)) + " after recovery");
                db_dirs.insert(std::to_string(l.id));
            }
            for (const std::string& name : dir_names(env_->layers_root()))
                disk_dirs.insert(name);
            for (const std::string& id : db_dirs)
                EXPECT_TRUE(disk_dirs.count(id)) << "layer " << id << " is in the database but has no dir";
            for (const std::string& id : disk_dirs) {
                if (db_dirs.count(id))
                    continue;
                // An empty dir of a create that died before its commit is
                // tolerated: the implementation reuses it for the next layer
                // (SQLite gives the same id again). Anything in it is not.
                std::vector<std::string> inside = dir_names(env_->layers_root() + "/" + id);
                ++orphan_dirs;
                EXPECT_TRUE(inside.empty()) << "layer dir " << id << " is not in the database and holds "
                                            << inside.size() << " entries (left by the crash)";
            }
            // Cleanup takes what the crash left (abandoned layers, the empty
            // dir of a create that died before its commit, merge leftovers)
            // and keeps every snapshot it does not delete whole.
            try {
                CleanupResult cr = stack().cleanup(std::nullopt, static_cast<int64_t>(std::time(nullptr)) + 1);
                std::string failures;
                for (const std::string& f : cr.failures)
                    failures += "\n  " + f;
                EXPECT_EQ(failures, "") << "cleanup after recovery";
                problems = check_snapshots("after recovery and cleanup");
                EXPECT_EQ(problems, "") << "killed after " << delay_ms << " ms";
                serious |= !problems.empty();
                std::set<std::string> known;
                for (const LayerRecord& l : store().list_layers(kStack))
                    known.insert(std::to_string(l.id));
                for (const std::string& name : dir_names(env_->layers_root()))
                    EXPECT_TRUE(known.count(name))
                        << "layer dir " << name << " is still there after cleanup, unknown to the database";
            } catch (const std::exception& e) {
                ADD_FAILURE() << "cleanup after recovery: " << describe(e);
                serious = true;
            }
            // The live view is readable, and the stack still works.
            Tree t;
            EXPECT_EQ(env_->live_tree(&t), "");
            try {
                ASSERT_EQ(write_path(mnt("/after-recovery"), "r"), 0);
                uint32_t n = create("after recovery");
                EXPECT_EQ(snapshot(n).count("/after-recovery"), 1u);
                stack().delete_snapshots({n});
            } catch (const std::exception& e) {
                ADD_FAILURE() << "after recovery: " << describe(e);
            }
            ::unlink(mnt("/after-recovery").c_str());
        }
        EXPECT_EQ(env_->unmount(), "");
        env_->close_store();
        if (serious) {
            std::printf("stopping after run %d; child log:\n%s\n", run, child_log.c_str());
            break;
        }
    }
    std::printf("%d runs, %d checked in the parent, %d snapshot views read, %d empty layer dirs found outside the "
                "database after recovery, %d children needed their FUSE connections aborted to die (alive %d ms after "
                "SIGKILL)\n",
                runs, checked, total_snapshots, orphan_dirs, stuck_after_kill,
                static_cast<int>(ReapOptions{}.grace.count()));
    std::printf("the children started %d cleanups and %d deletes of their oldest snapshot\n", child_cleanups,
                child_oldest_deletes);
    std::string all;
    for (const std::string& l : leftovers)
        all += "\n  " + l;
    EXPECT_TRUE(leftovers.empty()) << "recovery left half-done layers (DESIGN §5: finished or rolled back):" << all;
}

} // namespace
} // namespace layerd::test
