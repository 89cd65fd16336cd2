// SPDX-License-Identifier: LGPL-2.1-or-later
// One stack with snapshots for a real-mount test, shared by the suites that
// drive layerd::MountedStack (snapshots, snapshot-faults, stack-cleanup,
// undo-change): a temp dir with a lower, a state dir (optionally on a small
// loop-mounted ext4, for full-disk tests) and a mountpoint; a real SQLite
// store; trees read through the mount and straight from the layer dirs.
#pragma once

#include "mount_fixture.hpp"
#include "mounted_stack.hpp"
#include "snapshot_store.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/types.h>
#include <unistd.h>

#include <cstdint>
#include <exception>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace layerd::test {

// The name of the stack every StackEnv mounts.
inline constexpr const char* kStack = "t";

// Built with -Db_sanitize=…: the random suites run shorter (meson passes it).
#if defined(LAYERD_TEST_SANITIZED) && LAYERD_TEST_SANITIZED
inline constexpr bool kSanitized = true;
#else
inline constexpr bool kSanitized = false;
#endif

std::string errno_text(int e);

// ---------------------------------------------------------------- trees

struct Entry {
    char type = 'f';  // 'f' regular file, 'd' directory, 'o' anything else
    std::string data; // a file's bytes (for 'o': its S_IFMT, in decimal)
    bool operator==(const Entry&) const = default;
};
// "/a/b" → entry; the root is not listed.
using Tree = std::map<std::string, Entry>;

// " [1 2 3]": snapshot numbers for messages.
std::string show_numbers(const std::vector<uint32_t>& numbers);
// DATA quoted and cut to 40 bytes, for messages.
std::string show_data(const std::string& data);
std::string show_entry(const Entry& e);
// What differs between two trees, for failure messages ("" when equal).
std::string tree_mismatch(const Tree& expected, const Tree& actual);

// ------------------------------------------------------- file helpers
// All return 0 or -errno.

int read_fd_all(int fd, std::string* out);
int read_path(const std::string& path, std::string* out); // O_NOFOLLOW
// write(2)s the whole of DATA and closes, reporting close errors.
int write_path(const std::string& path, const std::string& data, int flags = O_WRONLY | O_CREAT | O_TRUNC);
// The whole file from offset 0 through pread, or "<error>".
std::string pread_all(int fd);

// The names in directory PATH but "." and "..", sorted; empty if it cannot be read.
std::vector<std::string> dir_names(const std::string& path);
// Walks a directory tree through ordinary syscalls (a mountpoint); "" or
// what went wrong.
std::string walk_dir(const std::string& abs, const std::string& rel, Tree* out);
// What a view of layer dirs (top first) shows, read with the core library.
std::string walk_layers(const std::vector<std::string>& dirs, Tree* out);
// The byte-for-byte content of one layer dir as it is on disk (whiteouts,
// modes, owners, sizes, data, xattrs), to prove a frozen layer never changes.
std::string dump_layer(const std::string& dir);

// An fd closed on scope exit, so a failed assertion never leaves the mount
// busy (a busy mount would keep the engine's loop alive at teardown).
struct Fd {
    explicit Fd(int f = -1) : fd(f) {}
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    ~Fd() { reset(); }
    void reset()
    {
        if (fd >= 0)
            ::close(fd);
        fd = -1;
    }
    int fd;
};

// ------------------------------------------------------------ mount table

// mounted_connection(): mount_fixture.hpp.
bool is_mounted(const std::string& mountpoint);
// Tears down whatever is left at MOUNTPOINT: aborts the FUSE connection so
// nothing can hang on it, then detaches. Returns how many mounts were there.
int force_unmount(const std::string& mountpoint);
// ensure_fusectl() and kill_and_reap(): mount_fixture.hpp.

// "SnapshotError(Io): …", "StoreError: …", …: an exception for a message.
std::string describe(const std::exception& e);
const char* kind_name(SnapshotError::Kind kind);

// ------------------------------------------------------- a small disk

// A small ext4 filesystem on a loop device, for running out of space: an
// image in DIR, attached with losetup, mounted at DIR/fs. The destructor
// always unmounts (lazily if busy) and detaches, even after a failed test.
class LoopFs {
public:
    LoopFs() = default;
    LoopFs(const LoopFs&) = delete;
    LoopFs& operator=(const LoopFs&) = delete;
    ~LoopFs() { teardown(); }

    // "" when this machine can make one (mkfs.ext4, losetup, loop devices),
    // else why not: for a GTEST_SKIP.
    static std::string unavailable();

    // "" or what went wrong (everything set up so far is torn down again).
    std::string create(const std::string& dir, unsigned mebibytes);
    // Unmounts and detaches; "" or what went wrong. Safe to call twice.
    std::string teardown();

    const std::string& mountpoint() const { return mountpoint_; }
    uint64_t free_bytes() const;  // statvfs f_bavail × f_frsize
    uint64_t block_size() const;  // f_frsize
    // Grows a filler file (outside any stack dir) until only about BLOCKS
    // blocks stay free; "" or what went wrong. Writes what it reached into
    // *LEFT when given.
    std::string fill(uint64_t blocks, uint64_t* left = nullptr);
    // Removes the filler file.
    std::string unfill();

private:
    std::string image_, mountpoint_, device_;
    bool mounted_ = false;
};

// ------------------------------------------------------------- one stack

struct StackEnvOptions {
    // > 0: the state dir lives on a fresh ext4 of this many MiB (LoopFs).
    unsigned state_fs_mebibytes = 0;
};

// TMP/{lower/, state/, mnt/}, the store at STATE/layerd.db and stack "t"
// mounted at TMP/mnt; with a small state fs, STATE is TMP/disk/fs/state.
// The destructor tears everything down, also after a failed test (the temp
// dir is kept then, for a look). The lower holds initial_tree().
class StackEnv {
public:
    explicit StackEnv(StackEnvOptions options = {});
    StackEnv(const StackEnv&) = delete;
    StackEnv& operator=(const StackEnv&) = delete;
    ~StackEnv();

    // The lower dir's content, as the first live view shows it.
    static Tree initial_tree();

    void open_store();
    void close_store();

    // Constructs the MountedStack with `config`; "" or what went wrong.
    std::string mount();
    // Destroys the MountedStack; "" or what went wrong (the mount is always gone after).
    std::string unmount();
    std::string remount();

    SnapshotStore& store() { return *store_; }
    MountedStack& stack() { return *stack_; }
    bool mounted() const { return stack_ != nullptr; }
    LoopFs* disk() { return disk_.get(); }

    std::string mnt(const std::string& path) const { return config.mountpoint + path; }
    std::string layer_dir(int64_t id) const;
    std::string layers_root() const;

    // LAYER, its parent, … (ids, top first); "" or what went wrong.
    std::string chain_of(int64_t layer, std::vector<int64_t>* ids);

    // Snapshot NUMBER's view read from disk. Before recovery a layer being
    // merged may already be gone from disk, its entries in its child: with
    // MERGING_MAY_BE_GONE such a layer is left out of the chain.
    std::string snapshot_tree(uint32_t number, Tree* out, bool merging_may_be_gone = false);
    std::string layer_tree(int64_t layer, Tree* out, bool merging_may_be_gone = false);
    // The live view through the mountpoint.
    std::string live_tree(Tree* out) { return walk_dir(config.mountpoint, "", out); }

    // "" when the mount shows LIVE, snapshots() lists exactly the numbers of
    // SNAPSHOTS, each of them reads back from disk as its tree there, and
    // the database's integrity check is clean; else what differs. With
    // MERGING_MAY_BE_GONE, as snapshot_tree().
    std::string check_against(const Tree& live, const std::map<uint32_t, Tree>& snapshots,
                              bool merging_may_be_gone = false);

    // Everything a refused call must leave alone: snapshot and layer rows,
    // the live layer, pending rollback, merges, depth, the layer dirs on
    // disk and the live tree.
    std::string fingerprint();

    std::string root;
    StackConfig config;
    bool keep = false;

private:
    std::unique_ptr<LoopFs> disk_;
    std::optional<SnapshotStore> store_;
    std::unique_ptr<MountedStack> stack_;
};

// A fresh StackEnv per test, mounted; kept on disk after a failure.
class StackEnvTest : public ::testing::Test {
protected:
    void SetUp() override;
    void TearDown() override;

    // Replaces the env by a new one (mounted unless told not to).
    void fresh_env(bool mount = true, StackEnvOptions options = {});

    std::string mnt(const std::string& path) const { return env_->mnt(path); }
    MountedStack& stack() { return env_->stack(); }
    SnapshotStore& store() { return env_->store(); }

    Tree live();                // through the mount; a failure is recorded
    Tree snapshot(uint32_t n);  // from disk; a failure is recorded
    std::set<uint32_t> numbers();
    uint32_t create(const std::string& description = "", const std::string& cleanup = "");
    // Writes DATA at PATH through the mount and into MODEL; a failure is fatal.
    void put(Tree* model, const std::string& path, const std::string& data);
    void sync_mount();

    // Runs F, which must throw SnapshotError of KIND and change nothing
    // (fingerprint() before and after).
    template <class F>
    void expect_refused(SnapshotError::Kind kind, const std::string& what, F&& f)
    {
        std::string before = env_->fingerprint();
        try {
            f();
            ADD_FAILURE() << what << ": no error, expected SnapshotError(" << kind_name(kind) << ")";
        } catch (const SnapshotError& e) {
            EXPECT_EQ(e.kind(), kind) << what << ": " << describe(e);
        } catch (const std::exception& e) {
            ADD_FAILURE() << what << ": " << describe(e) << " instead of SnapshotError(" << kind_name(kind) << ")";
        }
        EXPECT_EQ(env_->fingerprint(), before) << what << " was refused but changed something";
    }

    std::unique_ptr<StackEnv> env_;
};

} // namespace layerd::test
