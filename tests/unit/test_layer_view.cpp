// SPDX-License-Identifier: LGPL-2.1-or-later
// The overlay semantics of layer_view against the kernel's own overlayfs:
// layers are made the realistic way, by mounting a kernel overlay and
// changing files through it (so they hold real kernel whiteouts, opaque dirs
// and redirects), then a walk of the view must equal a walk of a read-only
// kernel mount of the same layers. Needs root (mount, trusted.* xattrs);
// skips otherwise.
//
// The helpers in namespace layerd::layer_test are shared with
// test_layer_diff.cpp (same executable), which declares the ones it uses.
// main() is here too: it exits 77 (meson: SKIP) with the reason when this
// machine cannot mount a kernel overlay, so a skip is never a silent pass.
#include "layer_view.hpp"
#include "overlay_format.hpp"
#include "resolve.hpp"
#include "unique_fd.hpp"

#include <gtest/gtest.h>

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <random>
#include <string>
#include <vector>

using namespace layerd;

namespace layerd::layer_test {

// A scratch dir with a private tmpfs on it: fast and independent of how busy
// the machine's disk is (an ext4 /tmp under load made a 100k-file layer take
// 20 s), and gone in one umount. A plain dir if no tmpfs can be mounted.
std::string make_scratch()
{
    char tmpl[] = "/tmp/layerd-view.XXXXXX";
    if (!::mkdtemp(tmpl))
        return {};
    ::mount("tmpfs", tmpl, "tmpfs", 0, "mode=0755");
    return tmpl;
}

void remove_scratch(const std::string& dir)
{
    if (dir.empty() || !dir.starts_with("/tmp/layerd-"))
        return;
    if (::umount2(dir.c_str(), MNT_DETACH) == 0 && ::rmdir(dir.c_str()) == 0)
        return;
    if (std::system(("rm -rf '" + dir + "'").c_str()) != 0)
        std::cerr << "could not remove " << dir << "\n";
}

// Mounts a kernel overlay: LOWERS top first, UPPER over them (none: read-only;
// then WORK is unused, else each mount gets a fresh workdir inside it).
int mount_overlay(const std::vector<std::string>& lowers, const std::string& upper, const std::string& work,
                  const std::string& mnt)
{
    std::string opts = "lowerdir=";
    for (size_t i = 0; i < lowers.size(); ++i)
        opts += (i ? ":" : "") + lowers[i];
    unsigned long flags = 0;
    if (upper.empty()) {
        flags |= MS_RDONLY;
    } else {
        // volatile: no syncfs of the whole filesystem at each umount (slow on
        // a busy machine). It leaves a marker that refuses the same workdir
        // next time, so each mount gets a fresh one inside WORK.
        std::string fresh = work + "/XXXXXX";
        if (!::mkdtemp(fresh.data()))
            return -errno;
        opts += ",upperdir=" + upper + ",workdir=" + fresh + ",redirect_dir=on,index=off,metacopy=off,volatile";
    }
    return ::mount("overlay", mnt.c_str(), "overlay", flags, opts.c_str()) == 0 ? 0 : -errno;
}

void unmount_overlay(const std::string& mnt)
{
    ::umount2(mnt.c_str(), MNT_DETACH);
}

// Empty when this machine can run these tests, else why not.
std::string overlay_unavailable()
{
    if (::geteuid() != 0)
        return "kernel overlayfs mounts need root";
    std::string dir = make_scratch();
    if (dir.empty())
        return "no scratch dir in /tmp";
    for (auto d : {"/l", "/u", "/w", "/m"})
        ::mkdir((dir + d).c_str(), 0755);
    std::string why;
    if (int r = mount_overlay({dir + "/l"}, dir + "/u", dir + "/w", dir + "/m"); r < 0)
        why = std::string("cannot mount a kernel overlay: ") + std::strerror(-r);
    else
        unmount_overlay(dir + "/m");
    remove_scratch(dir);
    return why;
}

namespace {

struct Rng {
    explicit Rng(uint64_t seed) : gen(seed) {}
    size_t below(size_t n) { return n ? static_cast<size_t>(gen() % n) : 0; }
    bool chance(unsigned percent) { return below(100) < percent; }
    std::mt19937_64 gen;
};

// A small name pool, so layers collide on names; sometimes a 255-byte name.
std::string random_name(Rng& rng)
{
    static const char* pool[] = {"a", "b", "c", "d", "e", "f"};
    if (rng.chance(3))
        return std::string(NAME_MAX - 1, 'n') + static_cast<char>('a' + rng.below(3));
    return pool[rng.below(std::size(pool))];
}

// Contents from a tiny alphabet and few sizes: equal sizes with different
// bytes happen often.
std::string random_content(Rng& rng)
{
    static const size_t sizes[] = {0, 1, 5, 100, 70000};
    std::string s(sizes[rng.below(std::size(sizes))], 'a');
    for (char& c : s)
        c = rng.chance(50) ? 'a' : 'b';
    return s;
}

std::string join(const std::string& a, const std::string& b)
{
    return b.empty() ? a : a + "/" + b;
}

void write_all(const std::string& path, const std::string& data, mode_t mode, int flags = O_TRUNC)
{
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | flags, mode);
    if (fd < 0)
        return;
    UniqueFd owner(fd);
    if (::write(fd, data.data(), data.size()) < 0)
        return;
}

struct TreeEntry {
    std::string rel;
    mode_t mode;
};

void list_tree(const std::string& root, const std::string& rel, std::vector<TreeEntry>* out)
{
    DIR* d = ::opendir(join(root, rel).c_str());
    if (!d)
        return;
    std::vector<std::string> names;
    while (struct dirent* de = ::readdir(d))
        if (std::strcmp(de->d_name, ".") != 0 && std::strcmp(de->d_name, "..") != 0)
            names.emplace_back(de->d_name);
    ::closedir(d);
    std::sort(names.begin(), names.end());
    for (const auto& n : names) {
        std::string r = join(rel, n);
        struct stat st;
        if (::lstat(join(root, r).c_str(), &st) != 0)
            continue;
        out->push_back({r, st.st_mode});
        if (S_ISDIR(st.st_mode))
            list_tree(root, r, out);
    }
}

int remove_entry(const char* path, const struct stat*, int, struct FTW*)
{
    ::remove(path);
    return 0;
}

void set_random_xattr(const std::string& path, mode_t mode, Rng& rng)
{
    // user.* cannot go on symlinks; trusted.* (not the overlay's) can.
    std::string name = S_ISLNK(mode) || rng.chance(30) ? "trusted.t" : "user.k";
    name += static_cast<char>('0' + rng.below(3));
    if (rng.chance(25)) {
        ::lremovexattr(path.c_str(), name.c_str());
        return;
    }
    std::string value = rng.chance(50) ? "v1" : "v2";
    ::lsetxattr(path.c_str(), name.c_str(), value.data(), value.size(), 0);
}

const uid_t uids[] = {0, 1000, 1001};
const gid_t gids[] = {0, 100, 1000};
const mode_t modes[] = {0644, 0600, 0755, 0640, 04755};

} // namespace

// A base layer written directly: dirs, files, symlinks, hardlinks, fifos,
// devices, owners, modes, xattrs.
void populate_tree(const std::string& dir, uint64_t seed)
{
    Rng rng(seed);
    std::vector<std::string> files;
    auto fill = [&](auto& self, const std::string& at, int depth) -> void {
        size_t n = 4 + rng.below(5);
        for (size_t i = 0; i < n; ++i) {
            std::string p = at + "/" + random_name(rng);
            struct stat st;
            if (::lstat(p.c_str(), &st) == 0)
                continue;
            size_t kind = rng.below(10);
            if (kind < 4 && depth < 3) {
                ::mkdir(p.c_str(), rng.chance(80) ? 0755 : 0700);
                self(self, p, depth + 1);
            } else if (kind < 7) {
                write_all(p, random_content(rng), modes[rng.below(std::size(modes))]);
                files.push_back(p);
            } else if (kind == 7) {
                ::symlink(rng.chance(50) ? "a" : "/etc/passwd", p.c_str());
            } else if (kind == 8 && !files.empty()) {
                ::link(files[rng.below(files.size())].c_str(), p.c_str());
            } else {
                ::mknod(p.c_str(), rng.chance(50) ? S_IFIFO | 0644 : S_IFCHR | 0644, makedev(1, 3));
            }
            if (::lstat(p.c_str(), &st) == 0) {
                if (rng.chance(30))
                    ::lchown(p.c_str(), uids[rng.below(3)], gids[rng.below(3)]);
                if (rng.chance(20))
                    set_random_xattr(p, st.st_mode, rng);
            }
        }
    };
    fill(fill, dir, 0);
}

// COUNT random changes through a mounted overlay: creates, writes, truncates,
// unlinks, recursive removals, mkdir (over whiteouts too), renames of files
// and directories (within and across directories), chmod, chown, xattrs,
// symlinks, hardlinks, special files, times. Failures (ENOTEMPTY, EXDEV, a
// rename into itself…) are part of the game and ignored.
void random_changes(const std::string& mnt, uint64_t seed, int count)
{
    Rng rng(seed);
    for (int i = 0; i < count; ++i) {
        std::vector<TreeEntry> all;
        list_tree(mnt, "", &all);
        std::vector<std::string> dirs{""}, files, nondirs;
        for (const auto& e : all) {
            if (S_ISDIR(e.mode))
                dirs.push_back(e.rel);
            else
                nondirs.push_back(e.rel);
            if (S_ISREG(e.mode))
                files.push_back(e.rel);
        }
        auto pick = [&](const std::vector<std::string>& v) { return v[rng.below(v.size())]; };
        auto new_path = [&] { return join(mnt, join(pick(dirs), random_name(rng))); };
        auto any = [&]() -> const TreeEntry* { return all.empty() ? nullptr : &all[rng.below(all.size())]; };
        // Weighted: creation outweighs removal, so trees stay interesting.
        enum Op { create, append, shrink, unlink_one, remove_tree, make_dir, rename_one, change_mode, change_owner,
                  change_xattr, make_symlink, make_link, touch };
        static const Op weights[] = {create, create, create, create, create, create, append, shrink, unlink_one,
                                     unlink_one, remove_tree, make_dir, make_dir, make_dir, make_dir,
                                     rename_one, rename_one,
                                     rename_one, rename_one, change_mode, change_owner, change_xattr,
                                     change_xattr, make_symlink, make_link, touch};
        switch (weights[rng.below(std::size(weights))]) {
        case create:
            write_all(new_path(), random_content(rng), modes[rng.below(std::size(modes))]);
            break;
        case append:
            if (!files.empty())
                write_all(join(mnt, pick(files)), random_content(rng), 0644, O_APPEND);
            break;
        case shrink:
            if (!files.empty() && ::truncate(join(mnt, pick(files)).c_str(), static_cast<off_t>(rng.below(6))) != 0) {
                // ignored, as every failure here
            }
            break;
        case unlink_one:
            if (!nondirs.empty())
                ::unlink(join(mnt, pick(nondirs)).c_str());
            break;
        case remove_tree: {
            // Small subtrees only: removing a big one would leave little to test.
            std::vector<std::string> small;
            for (size_t d = 1; d < dirs.size(); ++d) {
                std::string prefix = dirs[d] + "/";
                if (std::count_if(all.begin(), all.end(), [&](const TreeEntry& e) { return e.rel.starts_with(prefix); }) <= 6)
                    small.push_back(dirs[d]);
            }
            if (!small.empty())
                ::nftw(join(mnt, pick(small)).c_str(), remove_entry, 16, FTW_DEPTH | FTW_PHYS);
            break;
        }
        case make_dir: {
            std::string p = new_path();
            if (::mkdir(p.c_str(), rng.chance(80) ? 0755 : 0711) == 0 && rng.chance(50))
                write_all(p + "/" + random_name(rng), random_content(rng), 0644);
            break;
        }
        case rename_one: {
            // Directories more often: they are what gets redirects.
            std::string from = rng.chance(60) && dirs.size() > 1 ? dirs[1 + rng.below(dirs.size() - 1)]
                               : !all.empty()                     ? any()->rel
                                                                  : std::string();
            if (!from.empty())
                ::rename(join(mnt, from).c_str(), new_path().c_str());
            break;
        }
        case change_mode:
            if (auto e = any(); e && !S_ISLNK(e->mode))
                ::chmod(join(mnt, e->rel).c_str(), modes[rng.below(std::size(modes))]);
            break;
        case change_owner:
            if (auto e = any())
                ::lchown(join(mnt, e->rel).c_str(), uids[rng.below(3)], gids[rng.below(3)]);
            break;
        case change_xattr:
            if (auto e = any())
                set_random_xattr(join(mnt, e->rel), e->mode, rng);
            break;
        case make_symlink:
            ::symlink(rng.chance(50) ? "b" : "../x/y", new_path().c_str());
            break;
        case make_link:
            if (!files.empty() && rng.chance(70))
                ::link(join(mnt, pick(files)).c_str(), new_path().c_str());
            else
                ::mknod(new_path().c_str(), rng.chance(50) ? S_IFIFO | 0600 : S_IFCHR | 0600, makedev(1, 3));
            break;
        case touch:
            if (auto e = any()) {
                struct timespec ts[2] = {{1000000, 0}, {static_cast<time_t>(1000000 + rng.below(1000)), 0}};
                ::utimensat(AT_FDCWD, join(mnt, e->rel).c_str(), ts, AT_SYMLINK_NOFOLLOW);
            }
            break;
        }
    }
}

// Makes UPPER a new layer over LOWERS (top first) by COUNT random changes
// through a kernel overlay mounted at MNT. Returns 0 or -errno.
int build_layer(const std::vector<std::string>& lowers, const std::string& upper, const std::string& work,
                const std::string& mnt, uint64_t seed, int count)
{
    ::mkdir(upper.c_str(), 0755);
    ::mkdir(work.c_str(), 0755);
    ::mkdir(mnt.c_str(), 0755);
    if (int r = mount_overlay(lowers, upper, work, mnt); r < 0)
        return r;
    random_changes(mnt, seed, count);
    unmount_overlay(mnt);
    return 0;
}

namespace {

std::string escape(std::string_view s)
{
    std::string out;
    for (unsigned char c : s) {
        if (c >= 0x20 && c < 0x7f && c != '\\') {
            out += static_cast<char>(c);
        } else {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\x%02x", c);
            out += buf;
        }
    }
    return out;
}

uint64_t fnv1a(const char* p, size_t n, uint64_t h = 0xcbf29ce484222325ull)
{
    for (size_t i = 0; i < n; ++i)
        h = (h ^ static_cast<unsigned char>(p[i])) * 0x100000001b3ull;
    return h;
}

// One line per object: what a user of the overlay can see of it.
std::string describe(const std::string& path, const struct stat& st, int path_fd, const std::string& target,
                     const XattrList& xattrs)
{
    char buf[256];
    std::snprintf(buf, sizeof buf, " %c mode=%o uid=%u gid=%u mtime=%lld.%09ld", "?pc?d?b?-?l?s???"[(st.st_mode >> 12) & 15],
                  st.st_mode & 07777, st.st_uid, st.st_gid, static_cast<long long>(st.st_mtim.tv_sec),
                  st.st_mtim.tv_nsec);
    std::string line = escape(path) + buf;
    if (S_ISREG(st.st_mode)) {
        uint64_t h = fnv1a(nullptr, 0);
        int fd = reopen_fd(path_fd, O_RDONLY);
        if (fd < 0) {
            line += " open-error=" + std::to_string(-fd);
        } else {
            UniqueFd owner(fd);
            char data[65536];
            ssize_t n;
            while ((n = ::read(fd, data, sizeof data)) > 0)
                h = fnv1a(data, static_cast<size_t>(n), h);
        }
        std::snprintf(buf, sizeof buf, " size=%lld hash=%016llx", static_cast<long long>(st.st_size),
                      static_cast<unsigned long long>(h));
        line += buf;
    }
    if (S_ISLNK(st.st_mode))
        line += " -> " + escape(target);
    if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode))
        line += " rdev=" + std::to_string(major(st.st_rdev)) + ":" + std::to_string(minor(st.st_rdev));
    for (const auto& [k, v] : xattrs)
        line += " " + escape(k) + "=" + escape(v);
    return line;
}

// The kernel's xattrs of an object of a mounted overlay (it hides its own).
XattrList kernel_xattrs(int path_fd)
{
    XattrList out;
    ProcFdPath p(path_fd);
    char list[65536];
    ssize_t n = ::listxattr(p.c_str(), list, sizeof list);
    for (ssize_t pos = 0; pos < n;) {
        std::string name(list + pos);
        pos += static_cast<ssize_t>(name.size()) + 1;
        char value[65536];
        ssize_t m = ::getxattr(p.c_str(), name.c_str(), value, sizeof value);
        out.emplace_back(name, m >= 0 ? std::string(value, static_cast<size_t>(m)) : "<error>");
    }
    std::sort(out.begin(), out.end());
    return out;
}

// Walks a mounted overlay with *at() calls only, so deep paths work.
void describe_kernel_dir(int dirfd, std::string& path, std::vector<std::string>* out)
{
    int fd = ::openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        out->push_back(escape(path) + " opendir-error=" + std::to_string(errno));
        return;
    }
    DIR* d = ::fdopendir(fd);
    std::vector<std::string> names;
    while (struct dirent* de = ::readdir(d))
        if (std::strcmp(de->d_name, ".") != 0 && std::strcmp(de->d_name, "..") != 0)
            names.emplace_back(de->d_name);
    ::closedir(d);
    std::sort(names.begin(), names.end());
    for (const auto& name : names) {
        size_t len = path.size();
        path += "/" + name;
        struct stat st;
        int ofd = ::openat(dirfd, name.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC);
        if (ofd < 0 || ::fstat(ofd, &st) != 0) {
            out->push_back(escape(path) + " error=" + std::to_string(errno));
            if (ofd >= 0)
                ::close(ofd);
            path.resize(len);
            continue;
        }
        UniqueFd obj(ofd);
        std::string target;
        if (S_ISLNK(st.st_mode)) {
            char buf[PATH_MAX];
            ssize_t n = ::readlinkat(ofd, "", buf, sizeof buf);
            target.assign(buf, n > 0 ? static_cast<size_t>(n) : 0);
        }
        out->push_back(describe(path, st, ofd, target, kernel_xattrs(ofd)));
        if (S_ISDIR(st.st_mode))
            describe_kernel_dir(ofd, path, out);
        path.resize(len);
    }
}

} // namespace

std::vector<std::string> describe_kernel_tree(const std::string& mnt)
{
    std::vector<std::string> out;
    UniqueFd root(::open(mnt.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    std::string path;
    if (root)
        describe_kernel_dir(root.get(), path, &out);
    return out;
}

std::vector<std::string> describe_view(const std::vector<int>& layers, const OverlayXattrs& xattrs)
{
    std::vector<std::string> out;
    int r = walk_view(layers, xattrs, [&](const std::string& path, const ViewEntry& e) {
        XattrList xl;
        if (int x = view_xattrs(e, xattrs, &xl); x < 0)
            xl.emplace_back("<view_xattrs error>", std::to_string(x));
        out.push_back(describe(path, e.st, e.fd(), e.symlink_target, xl));
        return 0;
    });
    if (r != 0)
        out.push_back("walk_view error " + std::to_string(r));
    return out;
}

// Compares two descriptions; on a difference, a readable report.
::testing::AssertionResult same_trees(const std::vector<std::string>& view, const std::vector<std::string>& kernel)
{
    if (view == kernel)
        return ::testing::AssertionSuccess();
    auto r = ::testing::AssertionFailure();
    r << "view has " << view.size() << " entries, kernel " << kernel.size() << "\n";
    size_t i = 0, j = 0, shown = 0;
    while ((i < view.size() || j < kernel.size()) && shown < 12) {
        if (i < view.size() && j < kernel.size() && view[i] == kernel[j]) {
            ++i, ++j;
            continue;
        }
        ++shown;
        std::string_view pv = i < view.size() ? std::string_view(view[i]).substr(0, view[i].find(' ')) : "";
        std::string_view pk = j < kernel.size() ? std::string_view(kernel[j]).substr(0, kernel[j].find(' ')) : "";
        if (j >= kernel.size() || (i < view.size() && path_less(pv, pk))) {
            r << "  only view:   " << view[i++] << "\n";
        } else if (i >= view.size() || path_less(pk, pv)) {
            r << "  only kernel: " << kernel[j++] << "\n";
        } else {
            r << "  view:   " << view[i++] << "\n  kernel: " << kernel[j++] << "\n";
        }
    }
    return r;
}

// Seeds: fixed ones (reproducible), one fresh per run (exploration), or
// exactly $LAYERD_TEST_SEED to replay a failure.
std::vector<uint64_t> test_seeds(size_t fixed)
{
    if (const char* s = std::getenv("LAYERD_TEST_SEED"))
        return {std::strtoull(s, nullptr, 0)};
    std::vector<uint64_t> seeds;
    for (size_t i = 0; i < fixed; ++i)
        seeds.push_back(0x5eed0000 + i);
    seeds.push_back(std::random_device{}() | (uint64_t(std::random_device{}()) << 32));
    return seeds;
}

} // namespace layerd::layer_test

using namespace layerd::layer_test;

namespace {

// A scratch dir with layers in it; unmounts whatever it mounted, even when
// a test fails halfway.
class KernelLayers : public ::testing::Test {
protected:
    void SetUp() override
    {
        if (std::string why = overlay_unavailable(); !why.empty())
            GTEST_SKIP() << why;
        root_ = make_scratch();
        ASSERT_FALSE(root_.empty());
        for (auto d : {"/w", "/m", "/ro"})
            ASSERT_EQ(::mkdir((root_ + d).c_str(), 0755), 0);
    }
    void TearDown() override
    {
        if (root_.empty())
            return;
        unmount_overlay(mnt());
        unmount_overlay(ro());
        remove_scratch(root_);
    }

    std::string dir(const std::string& name) const { return root_ + "/" + name; }
    std::string mnt() const { return root_ + "/m"; }
    std::string ro() const { return root_ + "/ro"; }
    std::string work() const { return root_ + "/w"; }

    // Mounts the layers rw (UPPER over LOWERS) for hand-made changes.
    void mount_rw(const std::vector<std::string>& lowers, const std::string& upper)
    {
        ::mkdir(dir(upper).c_str(), 0755);
        ASSERT_EQ(mount_overlay(paths(lowers), dir(upper), work(), mnt()), 0);
    }

    std::vector<std::string> paths(const std::vector<std::string>& names) const
    {
        std::vector<std::string> out;
        out.reserve(names.size());
        for (const auto& n : names)
            out.push_back(dir(n));
        return out;
    }
    void umount_rw() { unmount_overlay(mnt()); }

    // The view of LAYERS (top first) as fds, open until the test ends.
    std::vector<int> open_view(const std::vector<std::string>& layers)
    {
        std::vector<int> out;
        for (const auto& l : layers) {
            fds_.emplace_back(::open(dir(l).c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
            out.push_back(fds_.back().get());
        }
        return out;
    }

    // Walks the view and a read-only kernel mount of the same layers.
    ::testing::AssertionResult matches_kernel(const std::vector<std::string>& layers, size_t* entries = nullptr)
    {
        if (int r = mount_overlay(paths(layers), "", "", ro()); r < 0)
            return ::testing::AssertionFailure() << "read-only mount: " << std::strerror(-r);
        auto kernel = describe_kernel_tree(ro());
        unmount_overlay(ro());
        auto view = describe_view(open_view(layers), xattrs_);
        if (entries)
            *entries = view.size();
        return same_trees(view, kernel);
    }

    void write(const std::string& path, const std::string& data, mode_t mode = 0644)
    {
        int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
        ASSERT_GE(fd, 0) << path << ": " << std::strerror(errno);
        UniqueFd owner(fd);
        ASSERT_EQ(::write(fd, data.data(), data.size()), static_cast<ssize_t>(data.size()));
    }
    void mkdirs(const std::string& path)
    {
        std::string p;
        for (size_t pos = 0; pos != std::string::npos;) {
            size_t next = path.find('/', pos + 1);
            p = path.substr(0, next);
            ::mkdir(p.c_str(), 0755);
            pos = next;
        }
    }
    std::string xattr_of(const std::string& path, const std::string& name)
    {
        char buf[4096];
        ssize_t n = ::lgetxattr(path.c_str(), name.c_str(), buf, sizeof buf);
        return n < 0 ? std::string("<none>") : std::string(buf, static_cast<size_t>(n));
    }
    std::vector<std::string> listing(const std::vector<int>& layers, const std::string& path)
    {
        ViewEntry e;
        std::vector<std::string> names;
        EXPECT_EQ(resolve_path(layers, path, xattrs_, &e), 0) << path;
        EXPECT_EQ(list_dir(e, &names), 0) << path;
        return names;
    }

    std::string root_;
    std::vector<UniqueFd> fds_;
    OverlayXattrs xattrs_{XattrFormat::trusted};
};

using Names = std::vector<std::string>;

} // namespace

TEST(PathOrder, ComponentWise)
{
    EXPECT_TRUE(path_less("/a", "/a/z"));
    EXPECT_TRUE(path_less("/a/z", "/a-b"));
    EXPECT_TRUE(path_less("/a/z", "/a!"));
    EXPECT_TRUE(path_less("/a", "/b"));
    EXPECT_FALSE(path_less("/a", "/a"));
    EXPECT_FALSE(path_less("/a-b", "/a/z"));
}

TEST_F(KernelLayers, WhiteoutsOpaqueDirsAndMasking)
{
    mkdirs(dir("l1/d/sub"));
    write(dir("l1/f"), "lower");
    write(dir("l1/d/x"), "x");
    write(dir("l1/d/sub/y"), "y");
    write(dir("l1/g"), "file below a dir");
    mkdirs(dir("l1/h"));
    mount_rw({"l1"}, "u");
    ASSERT_EQ(::unlink((mnt() + "/f").c_str()), 0);
    ASSERT_EQ(std::system(("rm -rf '" + mnt() + "/d'").c_str()), 0);
    ASSERT_EQ(::mkdir((mnt() + "/d").c_str(), 0700), 0);
    write(mnt() + "/d/z", "z");
    umount_rw();
    // The kernel wrote a whiteout for f and an opaque d.
    struct stat st;
    ASSERT_EQ(::lstat(dir("u/f").c_str(), &st), 0);
    EXPECT_TRUE(is_whiteout(st));
    EXPECT_EQ(xattr_of(dir("u/d"), "trusted.overlay.opaque"), "y");
    // Hand-made: a dir over a lower file, a file over a lower dir.
    mkdirs(dir("u/g"));
    write(dir("u/h"), "file over a dir");

    auto view = open_view({"u", "l1"});
    ViewEntry e;
    EXPECT_EQ(resolve_path(view, "f", xattrs_, &e), -ENOENT);
    EXPECT_EQ(resolve_path(view, "/d/x", xattrs_, &e), -ENOENT);
    EXPECT_EQ(resolve_path(view, "d/sub/y", xattrs_, &e), -ENOENT);
    ASSERT_EQ(resolve_path(view, "d//z", xattrs_, &e), 0);
    EXPECT_EQ(e.layer(), 0);
    ASSERT_EQ(resolve_path(view, "d", xattrs_, &e), 0);
    EXPECT_EQ(e.objects.size(), 1u) << "opaque: no lower dir merged";
    EXPECT_EQ(e.st.st_mode & 07777, 0700u);
    ASSERT_EQ(resolve_path(view, "g", xattrs_, &e), 0);
    EXPECT_TRUE(e.is_dir());
    EXPECT_EQ(e.objects.size(), 1u) << "the file below the dir is hidden";
    ASSERT_EQ(resolve_path(view, "h", xattrs_, &e), 0);
    EXPECT_TRUE(S_ISREG(e.st.st_mode));
    EXPECT_EQ(listing(view, "/"), (Names{"d", "g", "h"}));
    EXPECT_EQ(listing(view, "d"), (Names{"z"}));
    EXPECT_TRUE(matches_kernel({"u", "l1"}));
}

TEST_F(KernelLayers, RenamedDirectoriesFollowKernelRedirects)
{
    mkdirs(dir("l1/old/deep"));
    mkdirs(dir("l1/a/b/c"));
    mkdirs(dir("l1/t"));
    write(dir("l1/old/x"), "x");
    write(dir("l1/old/deep/y"), "y");
    write(dir("l1/a/b/c/z"), "z");
    // Round 1: a rename within a dir and one across dirs.
    mount_rw({"l1"}, "u1");
    ASSERT_EQ(::rename((mnt() + "/old").c_str(), (mnt() + "/new").c_str()), 0);
    ASSERT_EQ(::rename((mnt() + "/a/b").c_str(), (mnt() + "/t/moved").c_str()), 0);
    write(mnt() + "/new/added", "added");
    umount_rw();
    // What the kernel wrote: a relative redirect for the same-dir rename, an
    // absolute one (the path in the lower layers) for the other, and
    // whiteouts at the old places.
    EXPECT_EQ(xattr_of(dir("u1/new"), "trusted.overlay.redirect"), "old");
    EXPECT_EQ(xattr_of(dir("u1/t/moved"), "trusted.overlay.redirect"), "/a/b");
    struct stat st;
    ASSERT_EQ(::lstat(dir("u1/old").c_str(), &st), 0);
    EXPECT_TRUE(is_whiteout(st));

    // Round 2, over round 1: move the moved dir again, and a dir inside the
    // renamed one. The kernel names the source by its path in the layers
    // below this upper, so "/t/moved", resolved through u1's own redirect.
    mount_rw({"u1", "l1"}, "u2");
    ASSERT_EQ(::rename((mnt() + "/t/moved").c_str(), (mnt() + "/again").c_str()), 0);
    ASSERT_EQ(::rename((mnt() + "/new/deep").c_str(), (mnt() + "/deep2").c_str()), 0);
    umount_rw();
    EXPECT_EQ(xattr_of(dir("u2/again"), "trusted.overlay.redirect"), "/t/moved");
    EXPECT_EQ(xattr_of(dir("u2/deep2"), "trusted.overlay.redirect"), "/new/deep");

    auto view = open_view({"u2", "u1", "l1"});
    ViewEntry e;
    ASSERT_EQ(resolve_path(view, "again/c/z", xattrs_, &e), 0);
    EXPECT_EQ(e.layer(), 2);
    EXPECT_TRUE(e.objects[0].translated);
    ASSERT_EQ(resolve_path(view, "deep2/y", xattrs_, &e), 0);
    EXPECT_EQ(e.layer(), 2);
    // new/ is in u2 (copied up when deep/ left it), in u1, and in l1 as old/.
    ASSERT_EQ(resolve_path(view, "new", xattrs_, &e), 0);
    ASSERT_EQ(e.objects.size(), 3u);
    EXPECT_FALSE(e.objects[0].translated);
    EXPECT_FALSE(e.objects[1].translated);
    EXPECT_TRUE(e.objects[2].translated) << "l1's dir is old/, shown as new/";
    EXPECT_EQ(listing(view, "new"), (Names{"added", "x"}));
    EXPECT_EQ(resolve_path(view, "old", xattrs_, &e), -ENOENT);
    EXPECT_EQ(resolve_path(view, "a/b", xattrs_, &e), -ENOENT);
    EXPECT_EQ(resolve_path(view, "t/moved", xattrs_, &e), -ENOENT);
    EXPECT_TRUE(matches_kernel({"u2", "u1", "l1"}));
    EXPECT_TRUE(matches_kernel({"u1", "l1"}));
}

// Layers written by hand with the kernel's xattrs, for the corners of the
// kernel's absolute-redirect walk that a workload reaches only by luck; each
// checked against the kernel itself.
TEST_F(KernelLayers, AbsoluteRedirectWalkCorners)
{
    auto redirect = [&](const std::string& path, const std::string& value) {
        ASSERT_EQ(::lsetxattr(dir(path).c_str(), "trusted.overlay.redirect", value.data(), value.size(), 0), 0);
    };
    auto opaque = [&](const std::string& path) {
        ASSERT_EQ(::lsetxattr(dir(path).c_str(), "trusted.overlay.opaque", "y", 1, 0), 0);
    };
    auto whiteout = [&](const std::string& path) { ASSERT_EQ(make_whiteout(AT_FDCWD, dir(path).c_str()), 0); };
    // Layers top first: t, m, b (bottom).
    // c1: absolute redirect, each layer below walked from its root.
    mkdirs(dir("t/c1"));
    redirect("t/c1", "/p1/q");
    mkdirs(dir("m/p1/q"));
    write(dir("m/p1/q/from_m"), "m");
    mkdirs(dir("b/p1/q"));
    write(dir("b/p1/q/from_b"), "b");
    // c2: a relative redirect on an intermediate component renames the prefix
    // for the layers further down.
    mkdirs(dir("t/c2"));
    redirect("t/c2", "/p2/q");
    mkdirs(dir("m/p2/q"));
    redirect("m/p2", "r2");
    write(dir("m/p2/q/from_m"), "m");
    mkdirs(dir("b/r2/q"));
    write(dir("b/r2/q/from_b"), "b");
    mkdirs(dir("b/p2/q"));
    write(dir("b/p2/q/wrong"), "not reached");
    // c3: an opaque intermediate stops the layers below...
    mkdirs(dir("t/c3"));
    redirect("t/c3", "/p3/q");
    mkdirs(dir("m/p3/q"));
    opaque("m/p3");
    write(dir("m/p3/q/from_m"), "m");
    mkdirs(dir("b/p3/q"));
    write(dir("b/p3/q/hidden"), "b");
    // c4: ...unless a later component has an absolute redirect.
    mkdirs(dir("t/c4"));
    redirect("t/c4", "/p4/q");
    mkdirs(dir("m/p4/q"));
    opaque("m/p4");
    redirect("m/p4/q", "/s4");
    mkdirs(dir("b/s4"));
    write(dir("b/s4/from_b"), "b");
    // c5: an intermediate whiteout stops; c6: an intermediate file stops.
    mkdirs(dir("t/c5"));
    redirect("t/c5", "/p5/q");
    whiteout("m/p5");
    mkdirs(dir("b/p5/q"));
    write(dir("b/p5/q/hidden"), "b");
    mkdirs(dir("t/c6"));
    redirect("t/c6", "/p6/q");
    write(dir("m/p6"), "file");
    mkdirs(dir("b/p6/q"));
    write(dir("b/p6/q/hidden"), "b");
    // c7: an opaque dir's redirect is never read.
    mkdirs(dir("t/c7"));
    opaque("t/c7");
    redirect("t/c7", "/p1/q");
    // c8: the bottom layer's xattrs are never read, malformed or not.
    mkdirs(dir("b/c8/in"));
    redirect("b/c8", "bad/relative");
    mkdirs(dir("m/c8"));
    write(dir("m/c8/from_m"), "m");
    // c9: a missing intermediate in one layer: nothing there, the next layer
    // is still asked.
    mkdirs(dir("t/c9"));
    redirect("t/c9", "/p9/q");
    mkdirs(dir("b/p9/q"));
    write(dir("b/p9/q/from_b"), "b");
    // c10: a relative redirect in a child of a merged dir.
    mkdirs(dir("t/c10/n"));
    redirect("t/c10/n", "o");
    mkdirs(dir("m/c10/o"));
    write(dir("m/c10/o/from_m"), "m");

    auto view = open_view({"t", "m", "b"});
    EXPECT_EQ(listing(view, "c1"), (Names{"from_b", "from_m"}));
    EXPECT_EQ(listing(view, "c2"), (Names{"from_b", "from_m"}));
    EXPECT_EQ(listing(view, "c3"), (Names{"from_m"}));
    EXPECT_EQ(listing(view, "c4"), (Names{"from_b"}));
    EXPECT_EQ(listing(view, "c5"), (Names{}));
    EXPECT_EQ(listing(view, "c6"), (Names{}));
    EXPECT_EQ(listing(view, "c7"), (Names{}));
    EXPECT_EQ(listing(view, "c8"), (Names{"from_m", "in"}));
    EXPECT_EQ(listing(view, "c9"), (Names{"from_b"}));
    EXPECT_EQ(listing(view, "c10/n"), (Names{"from_m"}));
    EXPECT_TRUE(matches_kernel({"t", "m", "b"}));
}

TEST_F(KernelLayers, MalformedRedirectFailsLikeTheKernel)
{
    mkdirs(dir("t/bad"));
    mkdirs(dir("b/x"));
    ASSERT_EQ(::lsetxattr(dir("t/bad").c_str(), "trusted.overlay.redirect", "x/y", 3, 0), 0);
    auto view = open_view({"t", "b"});
    ViewEntry e;
    EXPECT_EQ(resolve_path(view, "bad", xattrs_, &e), -EINVAL);
    ASSERT_EQ(mount_overlay({dir("t"), dir("b")}, "", "", ro()), 0);
    struct stat st;
    EXPECT_NE(::lstat((ro() + "/bad").c_str(), &st), 0);
    EXPECT_EQ(errno, EINVAL);
    unmount_overlay(ro());
}

TEST_F(KernelLayers, BadNamesAndNoSymlinkFollowing)
{
    mkdirs(dir("l/d"));
    ASSERT_EQ(::symlink("/", dir("l/root").c_str()), 0);
    ASSERT_EQ(::symlink("d", dir("l/rel").c_str()), 0);
    write(dir("l/f"), "f");
    auto view = open_view({"l"});
    ViewEntry e;
    EXPECT_EQ(resolve_path(view, "root/etc", xattrs_, &e), -ENOTDIR);
    EXPECT_EQ(resolve_path(view, "rel/x", xattrs_, &e), -ENOTDIR);
    EXPECT_EQ(resolve_path(view, "f/x", xattrs_, &e), -ENOTDIR);
    EXPECT_EQ(resolve_path(view, "d/..", xattrs_, &e), -EINVAL);
    EXPECT_EQ(resolve_path(view, "./d", xattrs_, &e), -EINVAL);
    EXPECT_EQ(resolve_path(view, std::string(NAME_MAX + 1, 'x'), xattrs_, &e), -ENAMETOOLONG);
    EXPECT_EQ(resolve_path(view, std::string(NAME_MAX, 'x'), xattrs_, &e), -ENOENT);
    ASSERT_EQ(resolve_path(view, "root", xattrs_, &e), 0);
    EXPECT_TRUE(S_ISLNK(e.st.st_mode));
    EXPECT_EQ(e.symlink_target, "/");
    ASSERT_EQ(resolve_path(view, "/", xattrs_, &e), 0);
    EXPECT_TRUE(e.is_dir());
    Names names;
    EXPECT_EQ(list_dir(ViewEntry{}, &names), -ENOTDIR);
}

// Paths far past PATH_MAX built from 255-byte components, changed through
// the kernel (copy-up of every parent, a whiteout at the bottom).
TEST_F(KernelLayers, PathsLongerThanPathMax)
{
    constexpr int depth = 20;
    ::mkdir(dir("l1").c_str(), 0755);
    UniqueFd at(::open(dir("l1").c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    std::string path;
    for (int i = 0; i < depth; ++i) {
        std::string name(NAME_MAX, static_cast<char>('a' + i));
        ASSERT_EQ(::mkdirat(at.get(), name.c_str(), 0755), 0);
        at = UniqueFd(::openat(at.get(), name.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
        ASSERT_TRUE(at);
        path += "/" + name;
    }
    ASSERT_GT(path.size(), static_cast<size_t>(PATH_MAX));
    for (auto name : {"old", "keep"}) {
        UniqueFd f(::openat(at.get(), name, O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
        ASSERT_TRUE(f);
    }
    mount_rw({"l1"}, "u");
    {
        UniqueFd m(::open(mnt().c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
        for (size_t pos = 1; pos < path.size(); pos += NAME_MAX + 1) {
            m = UniqueFd(::openat(m.get(), path.substr(pos, NAME_MAX).c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
            ASSERT_TRUE(m);
        }
        UniqueFd f(::openat(m.get(), "new", O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
        ASSERT_TRUE(f);
        ASSERT_EQ(::write(f.get(), "deep", 4), 4);
        ASSERT_EQ(::unlinkat(m.get(), "old", 0), 0);
    }
    umount_rw();

    auto view = open_view({"u", "l1"});
    ViewEntry e;
    ASSERT_EQ(resolve_path(view, path + "/new", xattrs_, &e), 0);
    EXPECT_EQ(e.layer(), 0);
    EXPECT_EQ(e.st.st_size, 4);
    EXPECT_EQ(resolve_path(view, path + "/old", xattrs_, &e), -ENOENT);
    ASSERT_EQ(resolve_path(view, path + "/keep", xattrs_, &e), 0);
    EXPECT_EQ(e.layer(), 1);
    size_t longest = 0;
    walk_view(view, xattrs_, [&](const std::string& p, const ViewEntry&) {
        longest = std::max(longest, p.size());
        return 0;
    });
    EXPECT_GT(longest, static_cast<size_t>(PATH_MAX));
    EXPECT_TRUE(matches_kernel({"u", "l1"}));
}

TEST_F(KernelLayers, WalkCallbackStopsTheWalk)
{
    mkdirs(dir("l/a/b"));
    write(dir("l/c"), "c");
    auto view = open_view({"l"});
    int calls = 0;
    EXPECT_EQ(walk_view(view, xattrs_, [&](const std::string&, const ViewEntry&) { return ++calls == 2 ? 42 : 0; }),
              42);
    EXPECT_EQ(calls, 2);
}

// The randomized comparison with the kernel, over chains of layers each made
// as the upper of a kernel mount over the ones before (as snapshots are).
TEST_F(KernelLayers, RandomChangesMatchTheKernel)
{
    for (uint64_t seed : test_seeds(4)) {
        SCOPED_TRACE("seed " + std::to_string(seed) + " (replay: LAYERD_TEST_SEED=" + std::to_string(seed) + ")");
        std::cout << "[ seed     ] " << seed << std::endl;
        std::string base = "s" + std::to_string(seed);
        ASSERT_EQ(::mkdir(dir(base).c_str(), 0755), 0);
        populate_tree(dir(base), seed);
        std::vector<std::string> layers{base};
        for (int round = 1; round <= 4; ++round) {
            std::string upper = base + "-" + std::to_string(round);
            ASSERT_EQ(build_layer(paths(layers), dir(upper), work(), mnt(), seed * 31 + round, 120), 0);
            layers.insert(layers.begin(), upper);
            size_t entries = 0;
            EXPECT_TRUE(matches_kernel(layers, &entries)) << "round " << round;
            std::cout << "[ round " << round << "  ] " << entries << " entries" << std::endl;
        }
    }
}

int main(int argc, char** argv)
{
    if (std::string why = overlay_unavailable(); !why.empty()) {
        std::fprintf(stderr, "SKIP: %s\n", why.c_str());
        return 77;
    }
    ::testing::InitGoogleTest(&argc, argv);
    return RUN_ALL_TESTS();
}
