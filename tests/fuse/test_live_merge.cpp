// SPDX-License-Identifier: LGPL-2.1-or-later
// Deleting a snapshot on a live mount merges its layer into its only child
// (DESIGN §2 "delete") while users read through the mount: no reader may
// ever see a step of the merge half done (a name missing, wrong content, a
// short listing), and the view after the merge is the view before it.
#include "stack_env.hpp"

#include <dirent.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <iterator>
#include <mutex>
#include <set>
#include <thread>

namespace layerd::test {
namespace {

class LiveMergeTest : public StackEnvTest {
protected:
    // A deep tree in the first snapshot's layer; the second snapshot's
    // layer changes a little of it in every directory, so the merge moves
    // the rest name by name (one step each) into directories of the child.
    // Returns the two snapshots' numbers.
    std::pair<uint32_t, uint32_t> two_snapshots(int dirs, int files)
    {
        for (int a = 0; a < dirs; ++a) {
            std::string top = "/t" + std::to_string(a);
            EXPECT_EQ(::mkdir(mnt(top).c_str(), 0755), 0);
            for (int b = 0; b < 3; ++b) {
                std::string d = top + "/s" + std::to_string(b);
                EXPECT_EQ(sh("mkdir -p '" + mnt(d + "/deep/er/still") + "'"), 0);
                EXPECT_EQ(write_path(mnt(d + "/deep/er/still/leaf"), "leaf " + d), 0);
                for (int f = 0; f < files; ++f)
                    EXPECT_EQ(write_path(mnt(d + "/f" + std::to_string(f)), d + " file " + std::to_string(f)), 0);
            }
        }
        uint32_t first = create("the deep tree");
        for (int a = 0; a < dirs; ++a) {
            std::string top = "/t" + std::to_string(a);
            for (int b = 0; b < 3; ++b) {
                std::string d = top + "/s" + std::to_string(b);
                EXPECT_EQ(write_path(mnt(d + "/new"), "new in " + d), 0); // d itself now in the child too
                EXPECT_EQ(write_path(mnt(d + "/f1"), "changed"), 0);
                EXPECT_EQ(::unlink(mnt(d + "/f2").c_str()), 0);
                EXPECT_EQ(write_path(mnt(d + "/deep/er/added"), "added"), 0);
            }
            EXPECT_EQ(sh("rm -rf '" + mnt(top + "/s2/deep/er/still") + "'"), 0);
        }
        sync_mount();
        uint32_t second = create("changes on top");
        return {first, second};
    }

    // Every path of the tree, in an order that visits each dir before its
    // entries (readers walk this list).
    static std::vector<std::string> paths_of(const Tree& tree)
    {
        std::vector<std::string> paths;
        for (const auto& [path, entry] : tree)
            paths.push_back(path);
        return paths;
    }

    // The names directly in DIR ("" for the root), as TREE has them.
    static std::set<std::string> children(const Tree& tree, const std::string& dir)
    {
        std::set<std::string> names;
        for (const auto& [path, entry] : tree) {
            if (path.size() > dir.size() + 1 && path.compare(0, dir.size(), dir) == 0 && path[dir.size()] == '/' &&
                path.find('/', dir.size() + 1) == std::string::npos)
                names.insert(path.substr(dir.size() + 1));
        }
        return names;
    }

    // "" or what one look at PATH through the mount got wrong.
    std::string check_path(const Tree& tree, const std::string& path)
    {
        const Entry& want = tree.at(path);
        std::string abs = mnt(path);
        struct stat st;
        if (::lstat(abs.c_str(), &st) != 0)
            return path + ": lstat: " + errno_text(errno);
        if (want.type == 'd') {
            if (!S_ISDIR(st.st_mode))
                return path + ": not a directory any more";
            DIR* d = ::opendir(abs.c_str());
            if (!d)
                return path + ": opendir: " + errno_text(errno);
            std::set<std::string> names;
            errno = 0;
            while (dirent* e = ::readdir(d)) {
                if (std::string n = e->d_name; n != "." && n != "..")
                    names.insert(n);
                errno = 0;
            }
            int err = errno;
            ::closedir(d);
            if (err != 0)
                return path + ": readdir: " + errno_text(err);
            std::set<std::string> want_names = children(tree, path), missing, extra;
            std::set_difference(want_names.begin(), want_names.end(), names.begin(), names.end(),
                                std::inserter(missing, missing.end()));
            std::set_difference(names.begin(), names.end(), want_names.begin(), want_names.end(),
                                std::inserter(extra, extra.end()));
            if (!missing.empty())
                return path + ": readdir misses " + std::to_string(missing.size()) + " names, e.g. " +
                       *missing.begin();
            if (!extra.empty())
                return path + ": readdir lists " + *extra.begin() + ", which is not there";
            return "";
        }
        std::string data;
        if (int r = read_path(abs, &data); r < 0)
            return path + ": read: " + errno_text(-r);
        if (data != want.data)
            return path + ": read " + show_data(data) + ", expected " + show_data(want.data);
        return "";
    }
};

// Drops the kernel's dentries and inodes over and over, so the readers'
// lookups and listings reach the engine instead of the kernel's caches
// (the mount's entry timeouts are a day long).
class CacheDropper {
public:
    CacheDropper()
        : thread_([this] {
              while (!stop_) {
                  Fd fd(::open("/proc/sys/vm/drop_caches", O_WRONLY | O_CLOEXEC));
                  if (fd.fd < 0 || ::write(fd.fd, "2", 1) != 1)
                      return;
                  std::this_thread::sleep_for(std::chrono::milliseconds(2));
              }
          })
    {
    }
    CacheDropper(const CacheDropper&) = delete;
    CacheDropper& operator=(const CacheDropper&) = delete;
    ~CacheDropper()
    {
        stop_ = true;
        thread_.join();
    }

private:
    std::atomic<bool> stop_{false};
    std::thread thread_;
};

TEST_F(LiveMergeTest, ReadersNeverSeeAMergeHalfDone)
{
    // Big directories: a listing through readdirplus spans many requests,
    // during which the merge moves names out of the dir it lists.
    const int dirs = 2, files = kSanitized ? 150 : 300;
    auto [first, second] = two_snapshots(dirs, files);
    ASSERT_FALSE(HasFailure());
    const Tree before = live();
    ASSERT_EQ(tree_mismatch(snapshot(second), before), "");
    const std::vector<std::string> paths = paths_of(before);
    std::vector<std::string> dir_paths;
    for (const auto& p : paths)
        if (before.at(p).type == 'd')
            dir_paths.push_back(p);

    std::atomic<bool> merging{true};
    std::mutex failures_mutex;
    std::vector<std::string> failures;
    // Each reader starts elsewhere in its list (every path, or only the
    // directories); all of them go on until the merge is over, then make
    // one more round.
    auto reader = [&](const std::vector<std::string>* list, size_t start) {
        for (bool last = false; !last;) {
            last = !merging;
            for (size_t i = 0; i < list->size(); ++i) {
                std::string err = check_path(before, (*list)[(start + i) % list->size()]);
                if (!err.empty()) {
                    std::lock_guard lock(failures_mutex);
                    if (failures.size() < 20)
                        failures.push_back(err);
                }
            }
        }
    };
    {
        CacheDropper dropper;
        std::vector<std::thread> readers;
        for (size_t r = 0; r < 2; ++r) {
            readers.emplace_back(reader, &paths, r * paths.size() / 2);
            readers.emplace_back(reader, &dir_paths, r * dir_paths.size() / 2);
        }
        std::string error;
        try {
            stack().delete_snapshots({first});
        } catch (const std::exception& e) {
            error = describe(e);
        }
        merging = false;
        for (auto& t : readers)
            t.join();
        EXPECT_EQ(error, "") << "deleting snapshot " << first;
    }
    for (const auto& f : failures)
        ADD_FAILURE() << "a reader during the merge: " << f;

    // The merge happened: the layer is gone from disk and the database.
    EXPECT_EQ(numbers(), std::set<uint32_t>({second}));
    EXPECT_EQ(store().merges_in_progress().size(), 0u);
    EXPECT_EQ(tree_mismatch(before, live()), "") << "through the mount after the merge";
    EXPECT_EQ(tree_mismatch(before, snapshot(second)), "") << "the merged snapshot, from disk";
    {
        CacheDropper dropper; // every lookup again, in the engine's new view
        EXPECT_EQ(tree_mismatch(before, live()), "") << "through the mount, caches dropped";
    }

    // The mount goes on: changes to moved files, snapshots and a rollback.
    ASSERT_EQ(write_path(mnt("/t0/s0/f3"), "after the merge"), 0);
    ASSERT_EQ(write_path(mnt("/t0/s0/deep/er/still/leaf"), "leaf changed"), 0);
    sync_mount();
    uint32_t third = create("after the merge");
    Tree changed = live();
    stack().rollback(second, false, 0);
    EXPECT_EQ(tree_mismatch(before, live()), "") << "after a rollback to the merged snapshot";
    EXPECT_EQ(tree_mismatch(changed, snapshot(third)), "");
    ASSERT_EQ(env_->remount(), "");
    EXPECT_EQ(tree_mismatch(before, live()), "") << "after a remount";
}

// After the merge the engine's nodes still name the deleted layer's objects:
// directories it merged into the child's (now gone) and objects it moved up
// whole (now the child's). With few fds to spare, those are reopened by
// file handle: the gone ones must read as empty, the moved ones as they are.
TEST_F(LiveMergeTest, NodesKnownBeforeTheMergeWorkAfterIt)
{
    struct rlimit saved;
    ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &saved), 0);
    struct rlimit low = saved;
    low.rlim_cur = std::min<rlim_t>(saved.rlim_cur, 256); // the engine keeps 128 layer fds open
    ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &low), 0);
    struct Restore {
        rlimit limit;
        ~Restore() { ::setrlimit(RLIMIT_NOFILE, &limit); }
    } restore{saved};
    ASSERT_EQ(env_->remount(), "");

    auto [first, second] = two_snapshots(4, 60);
    ASSERT_FALSE(HasFailure());
    const Tree before = live(); // the kernel now knows every node
    // Only in the deleted snapshot's layer (moved up whole), and in both
    // (the deleted one's merged into the child's).
    Fd moved_dir(::open(mnt("/t1/s0/deep/er/still").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    Fd merged_dir(::open(mnt("/t1/s0").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    Fd file(::open(mnt("/t1/s0/f7").c_str(), O_RDONLY | O_CLOEXEC));
    ASSERT_GE(moved_dir.fd, 0);
    ASSERT_GE(merged_dir.fd, 0);
    ASSERT_GE(file.fd, 0);

    stack().delete_snapshots({first});
    EXPECT_EQ(numbers(), std::set<uint32_t>({second}));

    // Through the nodes the kernel kept: lookups in them go to the engine
    // for names it never looked up.
    struct stat st;
    EXPECT_EQ(::fstatat(merged_dir.fd, "f9", &st, 0), 0) << errno_text(errno);
    EXPECT_NE(::fstatat(merged_dir.fd, "f2", &st, 0), 0) << "a deleted name is back";
    EXPECT_EQ(::fstatat(merged_dir.fd, "nothing-here", &st, 0), -1);
    EXPECT_EQ(errno, ENOENT);
    EXPECT_EQ(::fstatat(moved_dir.fd, "leaf", &st, 0), 0) << errno_text(errno);
    EXPECT_EQ(pread_all(file.fd), "/t1/s0 file 7");
    EXPECT_EQ(tree_mismatch(before, live()), "");
    {
        CacheDropper dropper;
        EXPECT_EQ(tree_mismatch(before, live()), "") << "caches dropped";
    }
    // A write copies a moved file up from the layer it moved into.
    ASSERT_EQ(write_path(mnt("/t1/s0/f7"), "written"), 0);
    EXPECT_EQ(pread_all(file.fd), "written");
    ASSERT_EQ(write_path(mnt("/t1/s0/deep/er/still/x"), "x"), 0);
    EXPECT_EQ(::fstatat(moved_dir.fd, "x", &st, 0), 0) << errno_text(errno);
}

} // namespace
} // namespace layerd::test
