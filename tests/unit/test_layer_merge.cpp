// SPDX-License-Identifier: LGPL-2.1-or-later
// merge_layer checked against the real kernel overlayfs. Layers are made the
// way a stack makes them: a base tree L0, then for each k a kernel overlay
// session (lowerdir=L(k-1):…:L0, upperdir=Lk, redirect_dir=on) running a
// seeded batch of random operations. A view is read through a read-only
// kernel overlay mount (redirect_dir=follow) and compared entry by entry
// (type, mode, owner, size, content, symlink target, user xattrs, and the
// inode number of every non-directory: nothing may be copied).
// Needs root and overlayfs; skips otherwise.
#include "layer_merge.hpp"

#include "overlay_format.hpp"
#include "unique_fd.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

using namespace layerd;

namespace {

// ---------------------------------------------------------------- views

struct Entry {
    mode_t mode = 0;
    uid_t uid = 0;
    gid_t gid = 0;
    long long size = -1;                        // regular files and symlinks
    std::string data;                           // content or symlink target
    std::map<std::string, std::string> xattrs;  // user.* only
    ino_t ino = 0;                              // non-directories
    bool operator==(const Entry&) const = default;
};
using View = std::map<std::string, Entry>;

std::string slurp(const std::string& path)
{
    std::string out;
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return "<open failed: " + std::string(std::strerror(errno)) + ">";
    char buf[8192];
    ssize_t n;
    while ((n = ::read(fd, buf, sizeof buf)) > 0)
        out.append(buf, static_cast<size_t>(n));
    ::close(fd);
    return out;
}

std::map<std::string, std::string> user_xattrs(const std::string& path)
{
    std::map<std::string, std::string> out;
    char names[8192];
    ssize_t n = ::llistxattr(path.c_str(), names, sizeof names);
    for (ssize_t i = 0; i < n;) {
        std::string name(names + i);
        i += static_cast<ssize_t>(name.size()) + 1;
        if (name.rfind("user.", 0) != 0 || name.rfind("user.overlay.", 0) == 0)
            continue;
        char val[4096];
        ssize_t v = ::lgetxattr(path.c_str(), name.c_str(), val, sizeof val);
        out[name] = v >= 0 ? std::string(val, static_cast<size_t>(v)) : "<error>";
    }
    return out;
}

void read_tree(const std::string& base, const std::string& rel, View* view)
{
    std::string full = rel.empty() ? base : base + "/" + rel;
    struct stat st;
    if (::lstat(full.c_str(), &st) != 0) {
        (*view)[rel].data = "<lstat failed>";
        return;
    }
    Entry e;
    e.mode = st.st_mode;
    e.uid = st.st_uid;
    e.gid = st.st_gid;
    e.xattrs = user_xattrs(full);
    if (!S_ISDIR(st.st_mode))
        e.ino = st.st_ino;
    if (S_ISREG(st.st_mode)) {
        e.size = st.st_size;
        e.data = slurp(full);
    } else if (S_ISLNK(st.st_mode)) {
        e.size = st.st_size;
        char buf[4096];
        ssize_t n = ::readlink(full.c_str(), buf, sizeof buf);
        e.data = n >= 0 ? std::string(buf, static_cast<size_t>(n)) : "<readlink failed>";
    }
    (*view)[rel] = e;
    if (!S_ISDIR(st.st_mode))
        return;
    DIR* d = ::opendir(full.c_str());
    if (!d) {
        (*view)[rel].data = "<opendir failed>";
        return;
    }
    std::vector<std::string> names;
    while (struct dirent* de = ::readdir(d)) {
        std::string n = de->d_name;
        if (n != "." && n != "..")
            names.push_back(n);
    }
    ::closedir(d);
    std::sort(names.begin(), names.end());
    for (const auto& n : names)
        read_tree(base, rel.empty() ? n : rel + "/" + n, view);
}

std::string describe(const Entry& e)
{
    char buf[128];
    std::snprintf(buf, sizeof buf, "mode=%o uid=%u gid=%u size=%lld ino=%lu", unsigned(e.mode), unsigned(e.uid),
                  unsigned(e.gid), e.size, static_cast<unsigned long>(e.ino));
    std::string s = buf;
    if (S_ISLNK(e.mode))
        s += " -> " + e.data;
    else if (S_ISREG(e.mode))
        s += " data#" + std::to_string(std::hash<std::string>{}(e.data) % 100000);
    for (const auto& [k, v] : e.xattrs)
        s += " " + k + "=" + v;
    return s;
}

// Empty when equal; else the first differences, one a line.
std::string diff_views(const View& want, const View& got)
{
    std::string out;
    int shown = 0;
    auto note = [&](const std::string& line) {
        if (shown++ < 12)
            out += "  " + line + "\n";
    };
    for (const auto& [path, e] : want) {
        auto it = got.find(path);
        if (it == got.end())
            note("missing /" + path + " (" + describe(e) + ")");
        else if (!(it->second == e))
            note("changed /" + path + ": want " + describe(e) + "; got " + describe(it->second));
    }
    for (const auto& [path, e] : got)
        if (!want.count(path))
            note("extra   /" + path + " (" + describe(e) + ")");
    if (shown > 12)
        out += "  … " + std::to_string(shown - 12) + " more\n";
    return out;
}

// ---------------------------------------------------------------- fs helpers

std::string join(const std::string& a, const std::string& b)
{
    return a.empty() ? b : a + "/" + b;
}

void remove_all(const std::string& path)
{
    struct stat st;
    if (::lstat(path.c_str(), &st) != 0)
        return;
    if (S_ISDIR(st.st_mode)) {
        if (DIR* d = ::opendir(path.c_str())) {
            std::vector<std::string> names;
            while (struct dirent* de = ::readdir(d)) {
                std::string n = de->d_name;
                if (n != "." && n != "..")
                    names.push_back(n);
            }
            ::closedir(d);
            for (const auto& n : names)
                remove_all(path + "/" + n);
        }
        ::rmdir(path.c_str());
    } else {
        ::unlink(path.c_str());
    }
}

bool write_file(const std::string& path, const std::string& data, int flags)
{
    int fd = ::open(path.c_str(), flags | O_WRONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0644);
    if (fd < 0)
        return false;
    bool ok = ::write(fd, data.data(), data.size()) == static_cast<ssize_t>(data.size());
    ::close(fd);
    return ok;
}

int run_cmd(const std::string& cmd)
{
    int r = std::system(cmd.c_str());
    return WIFEXITED(r) ? WEXITSTATUS(r) : -1;
}

// All entries below root (relative paths), with their lstat mode.
void list_all(const std::string& root, const std::string& rel, std::vector<std::pair<std::string, mode_t>>* out)
{
    std::string full = rel.empty() ? root : root + "/" + rel;
    DIR* d = ::opendir(full.c_str());
    if (!d)
        return;
    std::vector<std::string> names;
    while (struct dirent* de = ::readdir(d)) {
        std::string n = de->d_name;
        if (n != "." && n != "..")
            names.push_back(n);
    }
    ::closedir(d);
    std::sort(names.begin(), names.end());
    for (const auto& n : names) {
        std::string r = join(rel, n);
        struct stat st;
        if (::lstat((root + "/" + r).c_str(), &st) != 0)
            continue;
        out->emplace_back(r, st.st_mode);
        if (S_ISDIR(st.st_mode))
            list_all(root, r, out);
    }
}

// ---------------------------------------------------------------- random operations

class Mutator {
public:
    Mutator(std::mt19937_64& rng, std::string root) : rng_(rng), root_(std::move(root)) {}

    void run(int count)
    {
        for (int i = 0; i < count; ++i)
            one();
    }

    void make_base(const std::string& rel, int depth)
    {
        int n = depth == 0 ? 9 : 3 + static_cast<int>(pick(4));
        for (int i = 0; i < n; ++i) {
            std::string r = join(rel, name());
            std::string full = root_ + "/" + r;
            struct stat st;
            if (::lstat(full.c_str(), &st) == 0)
                continue;
            unsigned what = pick(20);
            if (what < 9 && depth < 3) {
                ::mkdir(full.c_str(), 0755);
                if (pick(3) == 0)
                    ::lsetxattr(full.c_str(), "user.base", "d", 1, 0);
                make_base(r, depth + 1);
            } else if (what < 18) {
                write_file(full, content(), O_CREAT | O_TRUNC);
                if (pick(3) == 0)
                    ::lsetxattr(full.c_str(), "user.base", "f", 1, 0);
                if (pick(4) == 0)
                    ::chmod(full.c_str(), 0600);
            } else if (what < 19) {
                ::symlink(("../" + name()).c_str(), full.c_str());
            } else {
                refresh();
                if (!files_.empty())
                    ::link(this->full(any_of(files_)).c_str(), full.c_str());
            }
        }
    }

private:
    unsigned pick(unsigned n) { return static_cast<unsigned>(rng_() % n); }

    std::string name()
    {
        static const char* names[] = {"a", "b", "c", "d", "e", "f", "g", "h", "ii", "jj"};
        if (pick(40) == 0)
            return std::string(40 + pick(20), 'n') + std::to_string(pick(3));
        return names[pick(10)];
    }

    std::string content()
    {
        std::string s(pick(1500), 'x');
        for (auto& c : s)
            c = static_cast<char>('a' + pick(26));
        return s;
    }

    void refresh()
    {
        all_.clear();
        list_all(root_, "", &all_);
        dirs_ = {""};
        files_.clear();
        nondirs_.clear();
        for (const auto& [p, m] : all_) {
            if (S_ISDIR(m))
                dirs_.push_back(p);
            else
                nondirs_.push_back(p);
            if (S_ISREG(m))
                files_.push_back(p);
        }
    }

    std::string any_of(const std::vector<std::string>& v) { return v.empty() ? "" : v[pick(unsigned(v.size()))]; }
    std::string full(const std::string& rel) { return rel.empty() ? root_ : root_ + "/" + rel; }
    std::string new_path() { return join(any_of(dirs_), name()); }

    void populate(const std::string& dir)
    {
        for (unsigned i = pick(3); i > 0; --i)
            write_file(dir + "/" + name(), content(), O_CREAT | O_TRUNC);
    }

    std::string some_dir() { return dirs_.size() > 1 ? dirs_[1 + pick(unsigned(dirs_.size() - 1))] : ""; }
    std::string some_entry() { return all_.empty() ? "" : all_[pick(unsigned(all_.size()))].first; }

    void one()
    {
        refresh();
        unsigned op = pick(100);
        if (op < 10) { // create / overwrite a file
            write_file(full(new_path()), content(), O_CREAT | O_TRUNC);
        } else if (op < 15) { // write in the middle
            if (files_.empty())
                return;
            std::string c = content();
            int fd = ::open(full(any_of(files_)).c_str(), O_WRONLY | O_CLOEXEC | O_NONBLOCK);
            if (fd >= 0) {
                [[maybe_unused]] ssize_t w = ::pwrite(fd, c.data(), c.size(), off_t(pick(800)));
                ::close(fd);
            }
        } else if (op < 18) { // append
            if (!files_.empty())
                write_file(full(any_of(files_)), content(), O_APPEND);
        } else if (op < 20) { // truncate
            if (!files_.empty())
                if (::truncate(full(any_of(files_)).c_str(), off_t(pick(2000))) != 0) {
                }
        } else if (op < 26) { // unlink
            if (!nondirs_.empty())
                ::unlink(full(any_of(nondirs_)).c_str());
        } else if (op < 35) { // mkdir (plain, or opaque over a deleted name), with a few files
            std::string d = full(new_path());
            if (::mkdir(d.c_str(), 0755) == 0)
                populate(d);
        } else if (op < 38) { // rmdir, or rm -rf
            if (dirs_.size() > 1) {
                std::string d = full(some_dir());
                if (pick(2))
                    ::rmdir(d.c_str());
                else
                    remove_all(d);
            }
        } else if (op < 46) { // rename anything, across dirs
            if (!all_.empty())
                ::rename(full(some_entry()).c_str(), full(new_path()).c_str());
        } else if (op < 68) { // rename a directory: redirects (same dir: relative; else absolute)
            if (dirs_.size() > 1) {
                std::string d = some_dir();
                auto slash = d.rfind('/');
                std::string to;
                for (int tries = 0; tries < 4; ++tries) { // mostly a free name: fewer failed renames
                    to = pick(2) ? join(slash == std::string::npos ? "" : d.substr(0, slash), name()) : new_path();
                    struct stat st;
                    if (::lstat(full(to).c_str(), &st) != 0)
                        break;
                }
                ::rename(full(d).c_str(), full(to).c_str());
            }
        } else if (op < 73) { // exchange two entries: swaps make redirect cycles
            if (all_.size() > 1)
                ::renameat2(AT_FDCWD, full(some_entry()).c_str(), AT_FDCWD, full(some_entry()).c_str(),
                            RENAME_EXCHANGE);
        } else if (op < 76) { // chmod
            static const mode_t modes[] = {0644, 0600, 0755, 0700, 0444, 0750};
            if (!all_.empty()) {
                auto [p, m] = all_[pick(unsigned(all_.size()))];
                if (!S_ISLNK(m))
                    ::chmod(full(p).c_str(), modes[pick(6)]);
            }
        } else if (op < 79) { // chown
            static const uid_t ids[] = {0, 1, 1000, 65534};
            if (!all_.empty())
                ::lchown(full(some_entry()).c_str(), ids[pick(4)], ids[pick(4)]);
        } else if (op < 83) { // set a user xattr
            if (!all_.empty()) {
                std::string k = "user.k" + std::to_string(pick(3));
                std::string v = content().substr(0, 20);
                ::lsetxattr(full(some_entry()).c_str(), k.c_str(), v.data(), v.size(), 0);
            }
        } else if (op < 85) { // remove one
            if (!all_.empty())
                ::lremovexattr(full(some_entry()).c_str(), ("user.k" + std::to_string(pick(3))).c_str());
        } else if (op < 88) { // symlink
            ::symlink(("../" + name() + "/" + name()).c_str(), full(new_path()).c_str());
        } else if (op < 93) { // hard link
            if (!files_.empty())
                ::link(full(any_of(files_)).c_str(), full(new_path()).c_str());
        } else if (op < 97) { // remove a dir and make it again: opaque
            if (dirs_.size() > 1) {
                std::string d = full(some_dir());
                remove_all(d);
                if (::mkdir(d.c_str(), 0755) == 0)
                    populate(d);
            }
        } else { // fifo
            ::mkfifo(full(new_path()).c_str(), 0644);
        }
    }

    std::mt19937_64& rng_;
    std::string root_;
    std::vector<std::pair<std::string, mode_t>> all_;
    std::vector<std::string> dirs_, files_, nondirs_;
};

// ---------------------------------------------------------------- fixture

const MergeStepRunner run_directly = [](const MergeStep& step) { step(); };

class LayerMergeTest : public ::testing::Test {
protected:
    void SetUp() override
    {
        if (::geteuid() != 0)
            GTEST_SKIP() << "needs root (kernel overlay mounts, trusted xattrs)";
        char tmpl[] = "/var/tmp/layerd-merge.XXXXXX";
        ASSERT_NE(::mkdtemp(tmpl), nullptr);
        root_ = tmpl;
        for (auto d : {"layers", "sess", "mwork", "mnt", "empty"})
            ASSERT_EQ(::mkdir((root_ + "/" + d).c_str(), 0755), 0);
        // Probe: a tiny read-only overlay.
        ::mkdir((root_ + "/layers/probe").c_str(), 0755);
        if (mount_view({"probe"}, XattrFormat::trusted) != 0)
            GTEST_SKIP() << "kernel overlayfs not available: " << std::strerror(errno);
        unmount();
        ::rmdir((root_ + "/layers/probe").c_str());
    }

    void TearDown() override
    {
        if (root_.empty())
            return;
        unmount();
        if (std::getenv("LAYERD_TEST_KEEP"))
            std::printf("[ kept     ] %s\n", root_.c_str());
        else
            run_cmd("rm -rf '" + root_ + "'"); // copes with trees deeper than PATH_MAX
    }

    std::string layers() const { return root_ + "/layers"; }
    std::string mnt() const { return root_ + "/mnt"; }

    void unmount()
    {
        while (::umount2(mnt().c_str(), MNT_DETACH) == 0) {
        }
    }

    // Read-only kernel view of layers (top first), with an empty bottom layer
    // (the kernel wants two lowers without an upper; an empty bottom changes
    // nothing). Returns 0 or -1 with errno.
    int mount_view(const std::vector<std::string>& stack, XattrFormat fmt)
    {
        std::string opts = "lowerdir=";
        for (const auto& l : stack)
            opts += layers() + "/" + l + ":";
        opts += root_ + "/empty";
        opts += fmt == XattrFormat::user ? ",userxattr" : ",redirect_dir=follow";
        return ::mount("overlay", mnt().c_str(), "overlay", MS_RDONLY, opts.c_str());
    }

    View view_of(const std::vector<std::string>& stack, XattrFormat fmt = XattrFormat::trusted)
    {
        View v;
        if (mount_view(stack, fmt) != 0) {
            ADD_FAILURE() << "mount of the view failed: " << std::strerror(errno);
            return v;
        }
        read_tree(mnt(), "", &v);
        unmount();
        return v;
    }

    // The stack with P left out once merge_layer has removed it.
    std::vector<std::string> live_stack(const std::vector<std::string>& stack, const std::string& parent)
    {
        struct stat st;
        if (::lstat((layers() + "/" + parent).c_str(), &st) == 0)
            return stack;
        std::vector<std::string> s;
        for (const auto& l : stack)
            if (l != parent)
                s.push_back(l);
        return s;
    }

    // L0 (random base), then n kernel sessions of `ops` random operations.
    // Returns the stack, top first.
    std::vector<std::string> build_chain(uint64_t seed, int n, int ops, XattrFormat fmt = XattrFormat::trusted)
    {
        std::mt19937_64 rng(seed);
        std::string l0 = layers() + "/L0";
        EXPECT_EQ(::mkdir(l0.c_str(), 0755), 0);
        Mutator(rng, l0).make_base("", 0);
        std::vector<std::string> stack = {"L0"};
        for (int k = 1; k <= n; ++k) {
            std::string name = "L" + std::to_string(k);
            std::string up = layers() + "/" + name, wk = root_ + "/sess/W" + std::to_string(k);
            EXPECT_EQ(::mkdir(up.c_str(), 0755), 0);
            EXPECT_EQ(::mkdir(wk.c_str(), 0755), 0);
            std::string opts = "lowerdir=";
            for (size_t i = 0; i < stack.size(); ++i)
                opts += (i ? ":" : "") + layers() + "/" + stack[i];
            opts += ",upperdir=" + up + ",workdir=" + wk;
            opts += fmt == XattrFormat::user ? ",userxattr" : ",redirect_dir=on";
            if (::mount("overlay", mnt().c_str(), "overlay", 0, opts.c_str()) != 0) {
                ADD_FAILURE() << "session mount failed: " << std::strerror(errno) << " " << opts;
                return stack;
            }
            Mutator(rng, mnt()).run(ops);
            unmount();
            stack.insert(stack.begin(), name);
        }
        return stack;
    }

    // Runs a scripted session: `script` gets the mount path.
    void session(const std::string& upper, const std::vector<std::string>& lowers,
                 const std::function<void(const std::string&)>& script)
    {
        static int count = 0;
        std::string up = layers() + "/" + upper, wk = root_ + "/sess/S" + std::to_string(++count);
        ASSERT_EQ(::mkdir(up.c_str(), 0755), 0);
        ASSERT_EQ(::mkdir(wk.c_str(), 0755), 0);
        std::string opts = "lowerdir=";
        for (size_t i = 0; i < lowers.size(); ++i)
            opts += (i ? ":" : "") + layers() + "/" + lowers[i];
        opts += ",upperdir=" + up + ",workdir=" + wk + ",redirect_dir=on";
        ASSERT_EQ(::mount("overlay", mnt().c_str(), "overlay", 0, opts.c_str()), 0) << std::strerror(errno);
        script(mnt());
        unmount();
    }

    int merge(const std::string& parent, const std::string& child, const MergeStepRunner& run = run_directly,
              const MergeChangeHook& hook = {}, MergeStats* stats = nullptr,
              XattrFormat fmt = XattrFormat::trusted)
    {
        UniqueFd dir(::open(layers().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        UniqueFd c(::open((layers() + "/" + child).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        UniqueFd w(::open((root_ + "/mwork").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        if (!dir || !c || !w)
            return -errno;
        OverlayXattrs x(fmt);
        return merge_layer(dir.get(), parent.c_str(), c.get(), w.get(), x, run, hook, stats);
    }

    // Non-directory inode numbers of a layer directory (whiteouts excluded).
    std::set<ino_t> inodes_of(const std::string& layer)
    {
        std::vector<std::pair<std::string, mode_t>> all;
        list_all(layers() + "/" + layer, "", &all);
        std::set<ino_t> out;
        for (const auto& [p, m] : all) {
            struct stat st;
            if (S_ISDIR(m) || ::lstat((layers() + "/" + layer + "/" + p).c_str(), &st) != 0)
                continue;
            if (!(S_ISCHR(st.st_mode) && st.st_rdev == 0))
                out.insert(st.st_ino);
        }
        return out;
    }

    bool exists(const std::string& path)
    {
        struct stat st;
        return ::lstat(path.c_str(), &st) == 0;
    }

    bool work_is_empty()
    {
        std::vector<std::pair<std::string, mode_t>> all;
        list_all(root_ + "/mwork", "", &all);
        return all.empty();
    }

    // Merges stack[i] into stack[i-1] and checks the view and the inodes.
    void merge_and_check(std::vector<std::string>* stack, size_t i, View* view, const std::string& what,
                         MergeStats* total)
    {
        const std::string parent = (*stack)[i], child = (*stack)[i - 1];
        SCOPED_TRACE(what + ": merging " + parent + " into " + child);
        // Non-dirs of P that the view shows must end up in C, same inode.
        std::set<ino_t> shown;
        for (const auto& [p, e] : *view)
            if (e.ino)
                shown.insert(e.ino);
        std::set<ino_t> from_p;
        for (ino_t ino : inodes_of(parent))
            if (shown.count(ino))
                from_p.insert(ino);
        MergeStats st;
        ASSERT_EQ(merge(parent, child, run_directly, {}, &st), 0) << what;
        EXPECT_FALSE(exists(layers() + "/" + parent)) << what;
        EXPECT_TRUE(work_is_empty()) << what;
        stack->erase(stack->begin() + static_cast<long>(i));
        View after = view_of(*stack);
        std::string d = diff_views(*view, after);
        EXPECT_TRUE(d.empty()) << what << ": view changed merging " << parent << " into " << child << "\n" << d;
        std::set<ino_t> in_c = inodes_of(child);
        size_t lost = 0;
        for (ino_t ino : from_p)
            lost += !in_c.count(ino);
        EXPECT_EQ(lost, 0u) << what << ": objects of " << parent << " not moved into " << child;
        total->steps += st.steps;
        total->moved += st.moved;
        total->dropped += st.dropped;
        total->switched += st.switched;
        total->grouped += st.grouped;
        total->passes += st.passes;
        *view = std::move(after);
    }

    std::string root_;
};

std::string seed_text(uint64_t seed)
{
    return "seed " + std::to_string(seed);
}

// The seeds a test runs: its defaults, or LAYERD_TEST_<NAME>_SEEDS=first:last.
std::vector<uint64_t> seeds(const char* env_name, std::vector<uint64_t> defaults)
{
    unsigned long first, last;
    if (const char* env = std::getenv(env_name); env && std::sscanf(env, "%lu:%lu", &first, &last) == 2) {
        defaults.clear();
        for (unsigned long s = first; s <= last; ++s)
            defaults.push_back(s);
    }
    return defaults;
}

void print_stats(const char* what, const MergeStats& s)
{
    std::printf("[ stats    ] %s: %zu steps, %zu moved, %zu dropped, %zu switched, %zu grouped, %zu passes\n", what,
                s.steps, s.moved, s.dropped, s.switched, s.grouped, s.passes);
}

} // namespace

// ---------------------------------------------------------------- random chains

// Six kernel sessions of 60 random operations per seed (360 per seed), then
// merges at random places until one layer is left; every merge must keep the
// view, and every non-directory P showed must be in C with its inode.
TEST_F(LayerMergeTest, RandomChainsKeepTheViewAcrossEveryMerge)
{
    MergeStats total;
    for (uint64_t seed : seeds("LAYERD_TEST_CHAIN_SEEDS", {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12})) {
        if (HasFailure())
            break;
        SCOPED_TRACE(seed_text(seed));
        remove_all(layers());
        remove_all(root_ + "/sess");
        ASSERT_EQ(::mkdir(layers().c_str(), 0755), 0);
        ASSERT_EQ(::mkdir((root_ + "/sess").c_str(), 0755), 0);
        std::vector<std::string> stack = build_chain(seed, 6, 60);
        ASSERT_EQ(stack.size(), 7u);
        View view = view_of(stack);
        ASSERT_FALSE(view.empty());
        std::mt19937_64 rng(seed * 7919);
        while (stack.size() > 1 && !HasFailure()) {
            size_t i = 1 + rng() % (stack.size() - 1);
            merge_and_check(&stack, i, &view, seed_text(seed), &total);
        }
    }
    print_stats("random chains", total);
}

// The same with user.overlay.* xattrs (kernel `userxattr`: no redirects).
// Not a check: builds one chain and keeps it (LAYERD_TEST_KEEP=1) to look at.
TEST_F(LayerMergeTest, DISABLED_BuildChainOnly)
{
    const char* seed = std::getenv("LAYERD_TEST_SEED");
    build_chain(seed ? std::strtoull(seed, nullptr, 10) : 1, 6, 60);
}

TEST_F(LayerMergeTest, UserXattrFormat)
{
    std::vector<std::string> stack = build_chain(99, 4, 60, XattrFormat::user);
    View view = view_of(stack, XattrFormat::user);
    ASSERT_FALSE(view.empty());
    while (stack.size() > 1 && !HasFailure()) {
        std::string parent = stack[1], child = stack[0];
        ASSERT_EQ(merge(parent, child, run_directly, {}, nullptr, XattrFormat::user), 0);
        stack.erase(stack.begin() + 1);
        View after = view_of(stack, XattrFormat::user);
        std::string d = diff_views(view, after);
        EXPECT_TRUE(d.empty()) << "seed 99 (user format), merging " << parent << "\n" << d;
        view = std::move(after);
    }
}

// ---------------------------------------------------------------- scripted corner cases

namespace {

void mkfile(const std::string& path, const std::string& data)
{
    ASSERT_TRUE(write_file(path, data, O_CREAT | O_TRUNC)) << path << ": " << std::strerror(errno);
}

void mv(const std::string& from, const std::string& to)
{
    ASSERT_EQ(::rename(from.c_str(), to.c_str()), 0) << from << " -> " << to << ": " << std::strerror(errno);
}

} // namespace

class LayerMergeScenario : public LayerMergeTest {
protected:
    // Builds base + P + C with the scripts, merges P into C checking the view
    // after EVERY change that claims to keep it and after every step.
    MergeStats check(const std::function<void(const std::string&)>& base,
                     const std::function<void(const std::string&)>& parent,
                     const std::function<void(const std::string&)>& child)
    {
        MergeStats st;
        EXPECT_EQ(::mkdir((layers() + "/A").c_str(), 0755), 0);
        base(layers() + "/A");
        session("P", {"A"}, parent);
        session("C", {"P", "A"}, child);
        if (HasFailure())
            return st;
        std::vector<std::string> stack = {"C", "P", "A"};
        View want = view_of(stack);
        int checks = 0;
        auto check_now = [&](const char* when) {
            View got = view_of(live_stack(stack, "P"));
            ++checks;
            std::string d = diff_views(want, got);
            EXPECT_TRUE(d.empty()) << "view changed " << when << " (check " << checks << ")\n" << d;
        };
        int r = merge("P", "C", [&](const MergeStep& step) {
            step();
            check_now("after a step");
        }, [&](bool consistent) {
            if (consistent)
                check_now("after a change");
        }, &st);
        EXPECT_EQ(r, 0);
        EXPECT_FALSE(exists(layers() + "/P"));
        EXPECT_TRUE(work_is_empty());
        check_now("at the end");
        return st;
    }
};

// C renamed a dir P had renamed, moved a subdir P had moved (absolute
// redirects through a renamed parent), and P recreated a dir C copied up.
TEST_F(LayerMergeScenario, RedirectChainsAcrossBothLayers)
{
    MergeStats st = check(
        [](const std::string& a) {
            ::mkdir((a + "/a").c_str(), 0755);
            ::mkdir((a + "/a/sub").c_str(), 0755);
            ::mkdir((a + "/b").c_str(), 0755);
            ::mkdir((a + "/c").c_str(), 0755);
            mkfile(a + "/a/f", "f");
            mkfile(a + "/a/sub/g", "g");
            mkfile(a + "/c/h", "h");
        },
        [](const std::string& m) {
            mv(m + "/a", m + "/x");
            mv(m + "/x/sub", m + "/b/sub2");
            ::mkdir((m + "/a").c_str(), 0755);
            mkfile(m + "/a/new", "new");
            mv(m + "/c", m + "/c2");
            mkfile(m + "/c2/p", "p");
        },
        [](const std::string& m) {
            mv(m + "/b/sub2", m + "/c2/s3");
            mv(m + "/x", m + "/a/x2");
            mkfile(m + "/c2/s3/gg", "gg");
        });
    EXPECT_EQ(st.grouped, 0u);
    EXPECT_GT(st.switched, 0u);
}

// Absolute redirects of C walked through P: a parent P renamed (the walk's
// name is rewritten on the way), a parent P recreated (opaque: the walk
// stops), and relative redirects of both layers chained.
TEST_F(LayerMergeScenario, AbsoluteWalksThroughRenamedAndOpaqueParents)
{
    MergeStats st = check(
        [](const std::string& a) {
            for (auto d : {"/d", "/d/sub", "/o", "/o/s", "/m", "/top"})
                ::mkdir((a + d).c_str(), 0755);
            mkfile(a + "/d/sub/f", "f");
            mkfile(a + "/o/s/old", "old");
            mkfile(a + "/m/g", "g");
        },
        [](const std::string& m) {
            mv(m + "/d", m + "/d2");
            remove_all(m + "/o");
            ::mkdir((m + "/o").c_str(), 0755);
            ::mkdir((m + "/o/s").c_str(), 0755);
            mkfile(m + "/o/s/new", "new");
            mv(m + "/m", m + "/n");
        },
        [](const std::string& m) {
            mv(m + "/d2/sub", m + "/top/sub");
            mv(m + "/o/s", m + "/top/s");
            mv(m + "/n", m + "/q");
            mkfile(m + "/q/h", "h");
        });
    EXPECT_EQ(st.grouped, 0u);
    EXPECT_GE(st.switched, 3u);
}

// P swapped two dirs, C changed both: no order of single switches keeps the
// view, so the merge ends with one grouped step.
TEST_F(LayerMergeScenario, SwappedDirsNeedOneGroupedStep)
{
    MergeStats st = check(
        [](const std::string& a) {
            ::mkdir((a + "/m").c_str(), 0755);
            ::mkdir((a + "/w").c_str(), 0755);
            mkfile(a + "/m/fm", "m");
            mkfile(a + "/w/fw", "w");
            mkfile(a + "/keep", "k");
        },
        [](const std::string& m) {
            ASSERT_EQ(::renameat2(AT_FDCWD, (m + "/m").c_str(), AT_FDCWD, (m + "/w").c_str(), RENAME_EXCHANGE), 0)
                << std::strerror(errno);
            mkfile(m + "/m/pm", "pm");
            mkfile(m + "/w/pw", "pw");
        },
        [](const std::string& m) {
            mkfile(m + "/m/cm", "cm");
            mkfile(m + "/w/cw", "cw");
        });
    EXPECT_EQ(st.grouped, 1u);
}

// A name deleted in P and made again in C: the kernel makes C's dir plain
// (the whiteout is in a lower layer), so merging must make it opaque. And a
// dir P deleted and made again (opaque) that C then changed.
TEST_F(LayerMergeScenario, WhiteoutsAndOpaqueDirsUnderPlainChildDirs)
{
    check(
        [](const std::string& a) {
            ::mkdir((a + "/d").c_str(), 0755);
            ::mkdir((a + "/e").c_str(), 0755);
            mkfile(a + "/d/old", "old");
            mkfile(a + "/e/old", "old");
            mkfile(a + "/file", "file");
        },
        [](const std::string& m) {
            remove_all(m + "/d");
            remove_all(m + "/e");
            ::mkdir((m + "/e").c_str(), 0755);
            mkfile(m + "/e/pnew", "p");
            ::unlink((m + "/file").c_str());
        },
        [](const std::string& m) {
            ::mkdir((m + "/d").c_str(), 0755);
            mkfile(m + "/d/cnew", "c");
            mkfile(m + "/e/cnew", "c");
            ::mkdir((m + "/file").c_str(), 0755);
        });
}

// A new dir in P holding a dir moved in from elsewhere (absolute redirect
// inside a subtree that moves as a whole): the old place's whiteout must
// reach C first.
TEST_F(LayerMergeScenario, MovedSubtreeWithRedirectInside)
{
    MergeStats st = check(
        [](const std::string& a) {
            ::mkdir((a + "/src").c_str(), 0755);
            ::mkdir((a + "/src/deep").c_str(), 0755);
            mkfile(a + "/src/deep/f", "f");
        },
        [](const std::string& m) {
            ::mkdir((m + "/n").c_str(), 0755);
            mv(m + "/src/deep", m + "/n/deep2");
            mv(m + "/src", m + "/src2");
        },
        [](const std::string& m) { mkfile(m + "/other", "o"); });
    EXPECT_EQ(st.grouped, 0u);
    EXPECT_GT(st.moved, 0u);
}

// Hand-made pairs kernel overlayfs never writes: C's /y redirects to /a/b
// while C has no /a, so P's /a/b is shown at /a/b AND under /y.
class LayerMergeHandMade : public LayerMergeTest {
protected:
    void make(const std::string& layer, const std::function<void(const std::string&)>& fill)
    {
        std::string dir = layers() + "/" + layer;
        ASSERT_EQ(::mkdir(dir.c_str(), 0755), 0);
        fill(dir);
    }
    static void redirect(const std::string& path, const std::string& to)
    {
        ASSERT_EQ(::lsetxattr(path.c_str(), "trusted.overlay.redirect", to.data(), to.size(), 0), 0);
    }
    static void whiteout(const std::string& path) { ASSERT_EQ(::mknod(path.c_str(), S_IFCHR, 0), 0); }
};

TEST_F(LayerMergeHandMade, EntryShownTwiceIsRefused)
{
    make("A", [](const std::string& d) {
        ::mkdir((d + "/a").c_str(), 0755);
        ::mkdir((d + "/a/b").c_str(), 0755);
        mkfile(d + "/a/b/inA", "A");
    });
    make("P", [](const std::string& d) {
        ::mkdir((d + "/a").c_str(), 0755);
        ::mkdir((d + "/a/b").c_str(), 0755);
        mkfile(d + "/a/b/inP", "P");
    });
    make("C", [](const std::string& d) {
        ::mkdir((d + "/y").c_str(), 0755);
        redirect(d + "/y", "/a/b");
        mkfile(d + "/y/inC", "C");
    });
    View want = view_of({"C", "P", "A"});
    ASSERT_TRUE(want.count("a/b/inP") && want.count("y/inP"));
    EXPECT_EQ(merge("P", "C"), -EXDEV);
    std::string d = diff_views(want, view_of(live_stack({"C", "P", "A"}, "P")));
    EXPECT_TRUE(d.empty()) << "a refused merge must leave the view alone\n" << d;
}

TEST_F(LayerMergeHandMade, WhiteoutShownTwiceMovesWithItsPlace)
{
    make("A", [](const std::string& d) {
        ::mkdir((d + "/a").c_str(), 0755);
        ::mkdir((d + "/a/b").c_str(), 0755);
        mkfile(d + "/a/b/inA", "A");
        mkfile(d + "/a/keep", "A");
    });
    make("P", [](const std::string& d) {
        ::mkdir((d + "/a").c_str(), 0755);
        whiteout(d + "/a/b");
        mkfile(d + "/a/inP", "P");
    });
    make("C", [](const std::string& d) {
        ::mkdir((d + "/y").c_str(), 0755);
        redirect(d + "/y", "/a/b");
        mkfile(d + "/y/inC", "C");
    });
    View want = view_of({"C", "P", "A"});
    ASSERT_FALSE(want.count("a/b"));
    ASSERT_FALSE(want.count("y/inA"));
    EXPECT_EQ(merge("P", "C"), 0);
    std::string d = diff_views(want, view_of({"C", "A"}));
    EXPECT_TRUE(d.empty()) << d;
}

// A chain of directories deeper than PATH_MAX (24 × 202-byte names): the
// merge resolves per piece beneath the layer fds, so it works there too.
TEST_F(LayerMergeHandMade, PathsLongerThanPathMax)
{
    std::vector<std::string> chain;
    for (int i = 0; i < 24; ++i)
        chain.push_back(std::string(200, 'd') + std::to_string(10 + i));
    // Makes the chain below layers()/layer and returns an fd on its bottom.
    auto bottom = [&](const std::string& top, bool create) {
        int fd = ::open(top.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        for (const auto& c : chain) {
            if (create)
                ::mkdirat(fd, c.c_str(), 0755);
            int next = ::openat(fd, c.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
            ::close(fd);
            fd = next;
            if (fd < 0)
                break;
        }
        return UniqueFd(fd);
    };
    auto put = [](int dirfd, const char* name, const char* data) {
        int fd = ::openat(dirfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        ASSERT_GE(fd, 0);
        ASSERT_EQ(::write(fd, data, std::strlen(data)), static_cast<ssize_t>(std::strlen(data)));
        ::close(fd);
    };
    for (auto l : {"A", "P", "C"})
        ASSERT_EQ(::mkdir((layers() + "/" + l).c_str(), 0755), 0);
    {
        UniqueFd a = bottom(layers() + "/A", true), p = bottom(layers() + "/P", true),
                 c = bottom(layers() + "/C", true);
        ASSERT_TRUE(a && p && c);
        put(a.get(), "keepA", "a");
        put(a.get(), "gone", "a");
        put(p.get(), "fromP", "p");
        ASSERT_EQ(::mknodat(p.get(), "gone", S_IFCHR, 0), 0);
        ASSERT_EQ(::mkdirat(p.get(), "subP", 0755), 0);
        put(c.get(), "fromC", "c");
    }
    // What the kernel shows at the bottom: name -> (inode, content).
    auto listing = [&](const std::vector<std::string>& stack) {
        std::map<std::string, std::pair<ino_t, std::string>> out;
        if (mount_view(stack, XattrFormat::trusted) != 0) {
            ADD_FAILURE() << "mount: " << std::strerror(errno);
            return out;
        }
        {
            UniqueFd b = bottom(mnt(), false);
            EXPECT_TRUE(b);
            if (b) {
                UniqueFd d(::openat(b.get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
                DIR* dir = ::fdopendir(d.release());
                while (struct dirent* de = ::readdir(dir)) {
                    std::string n = de->d_name;
                    if (n == "." || n == "..")
                        continue;
                    struct stat st;
                    ::fstatat(b.get(), n.c_str(), &st, AT_SYMLINK_NOFOLLOW);
                    std::string data;
                    if (S_ISREG(st.st_mode)) {
                        int fd = ::openat(b.get(), n.c_str(), O_RDONLY | O_CLOEXEC);
                        char buf[64];
                        ssize_t r = ::read(fd, buf, sizeof buf);
                        data.assign(buf, r > 0 ? static_cast<size_t>(r) : 0);
                        ::close(fd);
                    }
                    out[n] = {S_ISDIR(st.st_mode) ? 0 : st.st_ino, data};
                }
                ::closedir(dir);
            }
        }
        unmount();
        return out;
    };
    auto want = listing({"C", "P", "A"});
    ASSERT_EQ(want.size(), 4u) << "fromC, fromP, subP, keepA";
    MergeStats st;
    ASSERT_EQ(merge("P", "C", run_directly, {}, &st), 0);
    EXPECT_FALSE(exists(layers() + "/P"));
    EXPECT_EQ(listing({"C", "A"}), want);
    EXPECT_GE(st.moved, 3u);
}

// ---------------------------------------------------------------- crash and resume

class LayerMergeCrash : public LayerMergeTest {
protected:
    void prepare(uint64_t seed)
    {
        stack_ = build_chain(seed, 4, 70);
        parent_ = stack_[2];
        child_ = stack_[1];
        want_ = view_of(stack_);
        ASSERT_FALSE(want_.empty());
        // Hard-linked copies (cp -l): every non-directory keeps its inode, so
        // the inode check still holds against want_; a merge only renames,
        // unlinks and sets xattrs on directories, never changes a file.
        ASSERT_EQ(run_cmd("cp -al '" + layers() + "' '" + root_ + "/pristine'"), 0);
    }
    void restore()
    {
        unmount();
        remove_all(layers());
        remove_all(root_ + "/mwork");
        ASSERT_EQ(::mkdir((root_ + "/mwork").c_str(), 0755), 0);
        ASSERT_EQ(run_cmd("cp -al '" + root_ + "/pristine' '" + layers() + "'"), 0);
    }
    // Runs the merge in a child that dies (_exit) at the chosen point, then
    // resumes here (optionally dying once more in a second child) and checks.
    void crash_and_resume(const std::string& what, long step_kill, long change_kill, long second_kill = 0)
    {
        SCOPED_TRACE(what);
        restore();
        auto die_in_child = [&](long at_step, long at_change) {
            pid_t pid = ::fork();
            ASSERT_GE(pid, 0);
            if (pid == 0) {
                long steps = 0, changes = 0;
                merge(parent_, child_,
                      [&](const MergeStep& step) {
                          step();
                          if (++steps == at_step)
                              ::_exit(0);
                      },
                      [&](bool) {
                          if (++changes == at_change)
                              ::_exit(0);
                      });
                ::_exit(3);
            }
            int status = 0;
            ASSERT_EQ(::waitpid(pid, &status, 0), pid);
            ASSERT_TRUE(WIFEXITED(status));
        };
        die_in_child(step_kill, change_kill);
        if (second_kill)
            die_in_child(0, second_kill);
        MergeStats st;
        ASSERT_EQ(merge(parent_, child_, run_directly, {}, &st), 0) << what;
        EXPECT_FALSE(exists(layers() + "/" + parent_)) << what;
        EXPECT_TRUE(work_is_empty()) << what;
        std::vector<std::string> after;
        for (const auto& l : stack_)
            if (l != parent_)
                after.push_back(l);
        std::string d = diff_views(want_, view_of(after));
        EXPECT_TRUE(d.empty()) << what << ": view after resuming\n" << d;
    }
    void count(long* steps, long* changes)
    {
        restore();
        *steps = *changes = 0;
        MergeStats st;
        ASSERT_EQ(merge(parent_, child_, [&](const MergeStep& s) {
            s();
            ++*steps;
        }, [&](bool) { ++*changes; }, &st), 0);
        print_stats("crash case", st);
    }

    std::vector<std::string> stack_;
    std::string parent_, child_;
    View want_;
};

TEST_F(LayerMergeCrash, ResumesAfterAKillAfterAnyStep)
{
    long total_steps = 0;
    for (uint64_t seed : seeds("LAYERD_TEST_CRASH_SEEDS", {5, 11})) {
        if (HasFailure())
            break;
        remove_all(layers());
        remove_all(root_ + "/pristine");
        remove_all(root_ + "/sess");
        ASSERT_EQ(::mkdir(layers().c_str(), 0755), 0);
        ASSERT_EQ(::mkdir((root_ + "/sess").c_str(), 0755), 0);
        prepare(seed);
        long steps = 0, changes = 0;
        count(&steps, &changes);
        total_steps += steps;
        for (long n = 1; n < steps && !HasFailure(); ++n)
            crash_and_resume(seed_text(seed) + ", killed after step " + std::to_string(n), n, 0);
    }
    EXPECT_GT(total_steps, 20) << "the seeds should make merges worth interrupting";
}

TEST_F(LayerMergeCrash, ResumesAfterAKillBetweenAnyTwoSyscalls)
{
    prepare(23);
    long steps = 0, changes = 0;
    count(&steps, &changes);
    ASSERT_GT(changes, 3);
    for (long n = 1; n < changes && !HasFailure(); ++n)
        crash_and_resume("seed 23, killed after change " + std::to_string(n), 0, n);
    // Killed again while resuming.
    for (long n = 2; n < changes && !HasFailure(); n += 9)
        crash_and_resume("seed 23, killed after change " + std::to_string(n) + " and again after 3 more", 0, n, 3);
}

// The grouped step is journaled: kill inside it at every syscall.
TEST_F(LayerMergeScenario, GroupedStepResumesFromItsJournal)
{
    ASSERT_EQ(::mkdir((layers() + "/A").c_str(), 0755), 0);
    ::mkdir((layers() + "/A/m").c_str(), 0755);
    ::mkdir((layers() + "/A/w").c_str(), 0755);
    mkfile(layers() + "/A/m/fm", "m");
    mkfile(layers() + "/A/w/fw", "w");
    session("P", {"A"}, [](const std::string& m) {
        ASSERT_EQ(::renameat2(AT_FDCWD, (m + "/m").c_str(), AT_FDCWD, (m + "/w").c_str(), RENAME_EXCHANGE), 0);
        mkfile(m + "/pnew", "p");
    });
    session("C", {"P", "A"}, [](const std::string& m) {
        mkfile(m + "/m/cm", "cm");
        mkfile(m + "/w/cw", "cw");
    });
    std::vector<std::string> stack = {"C", "P", "A"};
    View want = view_of(stack);
    ASSERT_EQ(run_cmd("cp -al '" + layers() + "' '" + root_ + "/pristine'"), 0);
    long changes = 0;
    MergeStats st;
    ASSERT_EQ(merge("P", "C", run_directly, [&](bool) { ++changes; }, &st), 0);
    ASSERT_EQ(st.grouped, 1u);
    for (long n = 1; n < changes && !HasFailure(); ++n) {
        SCOPED_TRACE("killed after change " + std::to_string(n));
        remove_all(layers());
        remove_all(root_ + "/mwork");
        ASSERT_EQ(::mkdir((root_ + "/mwork").c_str(), 0755), 0);
        ASSERT_EQ(run_cmd("cp -al '" + root_ + "/pristine' '" + layers() + "'"), 0);
        pid_t pid = ::fork();
        ASSERT_GE(pid, 0);
        if (pid == 0) {
            long c = 0;
            merge("P", "C", run_directly, [&](bool) {
                if (++c == n)
                    ::_exit(0);
            });
            ::_exit(3);
        }
        int status = 0;
        ASSERT_EQ(::waitpid(pid, &status, 0), pid);
        MergeStats again;
        ASSERT_EQ(merge("P", "C", run_directly, {}, &again), 0);
        EXPECT_FALSE(exists(layers() + "/P"));
        EXPECT_TRUE(work_is_empty());
        std::string d = diff_views(want, view_of({"C", "A"}));
        EXPECT_TRUE(d.empty()) << "view after resuming\n" << d;
    }
}

// ---------------------------------------------------------------- live safety

// A small random chain, merged with a full kernel mount + walk after every
// step and after every change the merge says keeps the view.
TEST_F(LayerMergeTest, EveryStepAndChangeKeepsTheView)
{
    for (uint64_t seed : seeds("LAYERD_TEST_LIVE_SEEDS", {3, 8})) {
        if (HasFailure())
            break;
        SCOPED_TRACE(seed_text(seed));
        remove_all(layers());
        remove_all(root_ + "/sess");
        ASSERT_EQ(::mkdir(layers().c_str(), 0755), 0);
        ASSERT_EQ(::mkdir((root_ + "/sess").c_str(), 0755), 0);
        std::vector<std::string> stack = build_chain(seed, 3, 45);
        const std::string parent = stack[2], child = stack[1];
        View want = view_of(stack);
        ASSERT_FALSE(want.empty());
        int checks = 0, unchecked = 0;
        auto check_now = [&](const std::string& when) {
            ++checks;
            std::string d = diff_views(want, view_of(live_stack(stack, parent)));
            EXPECT_TRUE(d.empty()) << seed_text(seed) << ": view changed " << when << "\n" << d;
        };
        MergeStats st;
        int steps = 0;
        ASSERT_EQ(merge(parent, child, [&](const MergeStep& step) {
            step();
            check_now("after step " + std::to_string(++steps));
        }, [&](bool consistent) {
            if (consistent)
                check_now("after a change in step " + std::to_string(steps + 1));
            else
                ++unchecked;
        }, &st), 0);
        EXPECT_EQ(unchecked == 0, st.grouped == 0);
        print_stats(seed_text(seed).c_str(), st);
        std::printf("[ live     ] %d kernel views checked, %d changes inside a grouped step\n", checks, unchecked);
    }
}

// A runner that stops running steps cancels; the half-merged pair is a
// correct view and a later call finishes.
TEST_F(LayerMergeTest, CancelLeavesAResumablePair)
{
    std::vector<std::string> stack = build_chain(31, 3, 50);
    View want = view_of(stack);
    int budget = 5;
    int r = merge(stack[1], stack[0], [&](const MergeStep& step) {
        if (budget-- > 0)
            step();
    });
    EXPECT_EQ(r, -ECANCELED);
    std::string d = diff_views(want, view_of(live_stack(stack, stack[1])));
    EXPECT_TRUE(d.empty()) << "after cancel\n" << d;
    ASSERT_EQ(merge(stack[1], stack[0]), 0);
    EXPECT_EQ(merge(stack[1], stack[0]), 0) << "a finished merge is done";
    d = diff_views(want, view_of({stack[0], stack[2], stack[3]}));
    EXPECT_TRUE(d.empty()) << "after resuming\n" << d;
}

// Not root, or no kernel overlayfs: nothing here can run. Exit 77 so meson
// reports a skip, and say why.
int main(int argc, char** argv)
{
    ::testing::InitGoogleTest(&argc, argv);
    if (GTEST_FLAG_GET(list_tests))
        return RUN_ALL_TESTS();
    if (::geteuid() != 0) {
        std::fprintf(stderr, "SKIP: needs root (kernel overlayfs mounts, trusted.* xattrs, whiteouts)\n");
        return 77;
    }
    char tmpl[] = "/var/tmp/layerd-merge-probe.XXXXXX";
    if (!::mkdtemp(tmpl)) {
        std::fprintf(stderr, "SKIP: no temporary directory under /var/tmp: %s\n", std::strerror(errno));
        return 77;
    }
    std::string dir = tmpl;
    for (auto d : {"/a", "/b", "/m"})
        ::mkdir((dir + d).c_str(), 0755);
    std::string opts = "lowerdir=" + dir + "/a:" + dir + "/b,redirect_dir=follow";
    int r = ::mount("overlay", (dir + "/m").c_str(), "overlay", MS_RDONLY, opts.c_str());
    int err = errno;
    if (r == 0)
        ::umount2((dir + "/m").c_str(), MNT_DETACH);
    remove_all(dir);
    if (r != 0) {
        std::fprintf(stderr, "SKIP: kernel overlayfs cannot be mounted here: %s\n", std::strerror(err));
        return 77;
    }
    return RUN_ALL_TESTS();
}
