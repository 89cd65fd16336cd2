// SPDX-License-Identifier: LGPL-2.1-or-later
// On-disk interop with kernel overlayfs (DESIGN.md §3: "any layer set layerd
// writes can be mounted with mount -t overlay and the other way round").
// The kernel is the reference: a tree written by one side must look the same
// through the other (names, types, modes, owners, sizes, content, symlink
// targets, xattrs — overlay-private xattrs must stay hidden on both).
#include "mount_fixture.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace layerd::test {
namespace {

// ---- SHA-256 (FIPS 180-4), enough to fingerprint file contents ----

class Sha256 {
public:
    Sha256() { h_ = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19}; }

    void update(const void* data, size_t len)
    {
        auto p = static_cast<const uint8_t*>(data);
        total_ += len;
        while (len > 0) {
            size_t n = std::min(len, size_t{64} - fill_);
            std::memcpy(buf_.data() + fill_, p, n);
            fill_ += n;
            p += n;
            len -= n;
            if (fill_ == 64) {
                block(buf_.data());
                fill_ = 0;
            }
        }
    }

    std::string hex()
    {
        uint64_t bits = total_ * 8;
        uint8_t pad = 0x80;
        update(&pad, 1);
        uint8_t zero = 0;
        while (fill_ != 56)
            update(&zero, 1);
        uint8_t len_be[8];
        for (int i = 0; i < 8; ++i)
            len_be[i] = static_cast<uint8_t>(bits >> (56 - 8 * i));
        update(len_be, 8);
        static const char* digits = "0123456789abcdef";
        std::string out;
        for (uint32_t v : h_)
            for (int s = 28; s >= 0; s -= 4)
                out += digits[(v >> s) & 0xf];
        return out;
    }

private:
    static uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

    void block(const uint8_t* b)
    {
        static const uint32_t k[64] = {
            0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
            0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
            0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
            0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
            0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
            0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
            0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
            0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};
        uint32_t w[64];
        for (int i = 0; i < 16; ++i)
            w[i] = uint32_t{b[4 * i]} << 24 | uint32_t{b[4 * i + 1]} << 16 | uint32_t{b[4 * i + 2]} << 8
                | uint32_t{b[4 * i + 3]};
        for (int i = 16; i < 64; ++i) {
            uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
            uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16] + s0 + w[i - 7] + s1;
        }
        uint32_t a = h_[0], bb = h_[1], c = h_[2], d = h_[3], e = h_[4], f = h_[5], g = h_[6], h = h_[7];
        for (int i = 0; i < 64; ++i) {
            uint32_t t1 = h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + k[i] + w[i];
            uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & bb) ^ (a & c) ^ (bb & c));
            h = g;
            g = f;
            f = e;
            e = d + t1;
            d = c;
            c = bb;
            bb = a;
            a = t1 + t2;
        }
        h_[0] += a;
        h_[1] += bb;
        h_[2] += c;
        h_[3] += d;
        h_[4] += e;
        h_[5] += f;
        h_[6] += g;
        h_[7] += h;
    }

    std::array<uint32_t, 8> h_;
    std::array<uint8_t, 64> buf_{};
    size_t fill_ = 0;
    uint64_t total_ = 0;
};

std::string sha256_hex(const std::string& s)
{
    Sha256 h;
    h.update(s.data(), s.size());
    return h.hex();
}

// Returns the file's sha256, or "ERROR <errno text>".
std::string sha256_file(const std::string& path)
{
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return std::string("ERROR open: ") + strerror(errno);
    Sha256 h;
    char buf[65536];
    for (;;) {
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = errno;
            ::close(fd);
            return std::string("ERROR read: ") + strerror(e);
        }
        if (n == 0)
            break;
        h.update(buf, static_cast<size_t>(n));
    }
    ::close(fd);
    return h.hex();
}

// ---- tree snapshot ----

std::string printable(const std::string& v)
{
    std::ostringstream o;
    for (unsigned char c : v) {
        if (c >= 0x20 && c < 0x7f && c != '\\' && c != '"')
            o << c;
        else {
            o << "\\x" << "0123456789abcdef"[c >> 4] << "0123456789abcdef"[c & 0xf];
        }
    }
    return o.str();
}

// All xattrs of a path (not followed), sorted, as name="value" pairs.
std::string xattrs_of(const std::string& path)
{
    ssize_t n = ::llistxattr(path.c_str(), nullptr, 0);
    if (n < 0)
        return errno == ENOTSUP ? "" : std::string("ERROR listxattr: ") + strerror(errno);
    std::string names(static_cast<size_t>(n), '\0');
    n = ::llistxattr(path.c_str(), names.data(), names.size());
    if (n < 0)
        return std::string("ERROR listxattr: ") + strerror(errno);
    names.resize(static_cast<size_t>(n));
    std::vector<std::string> list;
    for (size_t pos = 0; pos < names.size();) {
        std::string name = names.c_str() + pos;
        pos += name.size() + 1;
        if (!name.empty())
            list.push_back(name);
    }
    std::sort(list.begin(), list.end());
    std::string out;
    for (const auto& name : list) {
        std::string value(65536, '\0');
        ssize_t vn = ::lgetxattr(path.c_str(), name.c_str(), value.data(), value.size());
        out += (out.empty() ? "" : " ") + name + "=";
        if (vn < 0)
            out += std::string("ERROR ") + strerror(errno);
        else
            out += "\"" + printable(value.substr(0, static_cast<size_t>(vn))) + "\"";
    }
    return out;
}

struct Entry {
    char type = '?';
    std::string description; // everything compared, as one line
};

char type_char(mode_t m)
{
    switch (m & S_IFMT) {
    case S_IFREG: return 'f';
    case S_IFDIR: return 'd';
    case S_IFLNK: return 'l';
    case S_IFIFO: return 'p';
    case S_IFCHR: return 'c';
    case S_IFBLK: return 'b';
    case S_IFSOCK: return 's';
    default: return '?';
    }
}

using Tree = std::map<std::string, Entry>; // relative path -> entry; sorted

void snapshot_into(const std::string& root, const std::string& rel, Tree& tree)
{
    std::string dir = rel.empty() ? root : root + "/" + rel;
    DIR* d = ::opendir(dir.c_str());
    if (!d) {
        tree[rel + "/"] = Entry{'?', std::string("ERROR opendir: ") + strerror(errno)};
        return;
    }
    std::vector<std::string> names;
    while (dirent* de = ::readdir(d)) {
        std::string n = de->d_name;
        if (n != "." && n != "..")
            names.push_back(n);
    }
    ::closedir(d);
    std::sort(names.begin(), names.end());
    for (const auto& n : names) {
        std::string r = rel.empty() ? n : rel + "/" + n;
        std::string p = root + "/" + r;
        struct stat st {};
        if (::lstat(p.c_str(), &st) != 0) {
            tree[r] = Entry{'?', std::string("ERROR lstat: ") + strerror(errno)};
            continue;
        }
        std::ostringstream o;
        char t = type_char(st.st_mode);
        o << t << " mode=" << std::oct << (st.st_mode & 07777) << std::dec << " uid=" << st.st_uid
          << " gid=" << st.st_gid;
        if (t == 'f')
            o << " size=" << st.st_size << " sha256=" << sha256_file(p);
        if (t == 'l') {
            std::string target(PATH_MAX, '\0');
            ssize_t len = ::readlink(p.c_str(), target.data(), target.size());
            target.resize(len < 0 ? 0 : static_cast<size_t>(len));
            o << " size=" << st.st_size << " target=\"" << printable(target) << "\"";
        }
        if (t == 'c' || t == 'b')
            o << " rdev=" << major(st.st_rdev) << ":" << minor(st.st_rdev);
        o << " xattrs={" << xattrs_of(p) << "}";
        tree[r] = Entry{t, o.str()};
        if (t == 'd')
            snapshot_into(root, r, tree);
    }
}

// A comparable picture of everything visible under root.
Tree snapshot(const std::string& root)
{
    Tree tree;
    snapshot_into(root, "", tree);
    return tree;
}

std::string dump(const Tree& t)
{
    std::string out;
    for (const auto& [path, e] : t)
        out += "  " + path + ": " + e.description + "\n";
    return out;
}

// Empty when equal; otherwise one line per difference.
std::string tree_diff(const Tree& a, const std::string& a_name, const Tree& b, const std::string& b_name)
{
    std::string out;
    for (const auto& [path, e] : a) {
        auto it = b.find(path);
        if (it == b.end())
            out += "  only in " + a_name + ": " + path + ": " + e.description + "\n";
        else if (it->second.description != e.description)
            out += "  differs: " + path + "\n    " + a_name + ": " + e.description + "\n    " + b_name + ": "
                + it->second.description + "\n";
    }
    for (const auto& [path, e] : b)
        if (!a.count(path))
            out += "  only in " + b_name + ": " + path + ": " + e.description + "\n";
    return out;
}

// ---- the layers and the changes ----

void mkdir_p(const std::string& path, mode_t mode = 0755)
{
    for (size_t pos = 1; pos != std::string::npos;) {
        pos = path.find('/', pos + 1);
        std::string part = path.substr(0, pos);
        if (::mkdir(part.c_str(), mode) != 0 && errno != EEXIST)
            ADD_FAILURE() << "mkdir " << part << ": " << strerror(errno);
    }
}

void put(const std::string& path, const std::string& data, mode_t mode = 0644)
{
    auto slash = path.rfind('/');
    mkdir_p(path.substr(0, slash));
    write_file(path, data, mode);
    ASSERT_EQ(::chmod(path.c_str(), mode), 0) << path;
}

std::string pseudo_random(size_t n, uint32_t seed)
{
    std::string s(n, '\0');
    uint32_t x = seed | 1;
    for (auto& c : s) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        c = static_cast<char>(x);
    }
    return s;
}

// Fills two lowers (l0 on top) with a tree that exercises every change below.
void populate(const std::string& l0, const std::string& l1)
{
    // bottom lower
    put(l1 + "/base/a.txt", "alpha\n");
    put(l1 + "/base/b.txt", "bravo\n", 0600);
    ASSERT_EQ(::chown((l1 + "/base/b.txt").c_str(), 1234, 1234), 0);
    put(l1 + "/base/c.txt", "charlie\n");
    ASSERT_EQ(::setxattr((l1 + "/base/c.txt").c_str(), "user.color", "blue", 4, 0), 0) << strerror(errno);
    ASSERT_EQ(::setxattr((l1 + "/base/c.txt").c_str(), "user.keep", "1", 1, 0), 0);
    put(l1 + "/base/d.txt", "delta delta delta\n");
    put(l1 + "/base/e.bin", pseudo_random(100000, 7));
    put(l1 + "/base/del1.txt", "deleted later\n");
    put(l1 + "/base/overwritten.txt", "overwritten by a rename\n");
    put(l1 + "/base/swap1", "swap original\n");
    put(l1 + "/base/suid", "#!/bin/sh\n", 04755);
    put(l1 + "/base/hl1", "hard linked\n");
    ASSERT_EQ(::link((l1 + "/base/hl1").c_str(), (l1 + "/base/hl2").c_str()), 0); // one lower inode, two names
    put(l1 + "/deep/x/y/z.txt", "zulu\n");
    put(l1 + "/deep/x/other.txt", "other\n");
    put(l1 + "/ldir/f1", "ldir f1\n");
    put(l1 + "/ldir/sub/f2", "ldir sub f2\n");
    ASSERT_EQ(::symlink("f1", (l1 + "/ldir/ln").c_str()), 0);
    put(l1 + "/rmme/r1", "r1\n");
    put(l1 + "/rmme/sub/r2", "r2\n");
    put(l1 + "/opq/o1", "o1\n");
    put(l1 + "/opq/o2", "o2\n");
    put(l1 + "/opq/osub/o3", "o3\n");
    put(l1 + "/merged/m_low1", "m low1\n");
    put(l1 + "/merged/shadow", "shadow from lower1\n");
    put(l1 + "/file2dir", "I will be a directory\n");
    put(l1 + "/dir2file/inner", "inner\n");
    put(l1 + "/mv_merged/ml1", "ml1\n");
    ASSERT_EQ(::symlink("base/a.txt", (l1 + "/lnk").c_str()), 0);
    ASSERT_EQ(::symlink("base/b.txt", (l1 + "/lnk2").c_str()), 0);
    ASSERT_EQ(::mkfifo((l1 + "/fifo_low").c_str(), 0640), 0);
    // top lower
    put(l0 + "/top.txt", "top\n");
    put(l0 + "/del0.txt", "deleted later (top)\n");
    put(l0 + "/ren0.txt", "renamed across dirs\n");
    put(l0 + "/merged/m_low0", "m low0\n");
    put(l0 + "/merged/shadow", "shadow from lower0\n");
    put(l0 + "/mv_merged/ml0", "ml0\n");
    put(l0 + "/ldir0/g1", "ldir0 g1\n");
    put(l0 + "/ldir0/gsub/g2", "ldir0 gsub g2\n");
    put(l0 + "/xattr_dir/keep", "k\n");
    ASSERT_EQ(::setxattr((l0 + "/xattr_dir").c_str(), "user.dir", "1", 1, 0), 0);
    ASSERT_EQ(::chmod((l0 + "/merged").c_str(), 0775), 0);
}

// Reports a failed step with its errno; keeps going so one run lists every
// step the filesystem refused.
void step(int rc, const std::string& what)
{
    if (rc != 0)
        ADD_FAILURE() << what << ": " << strerror(errno);
}

void append(const std::string& path, const std::string& data)
{
    int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
    if (fd < 0) {
        ADD_FAILURE() << "open for append " << path << ": " << strerror(errno);
        return;
    }
    EXPECT_EQ(::write(fd, data.data(), data.size()), static_cast<ssize_t>(data.size())) << path;
    ::close(fd);
}

void pwrite_at(const std::string& path, const std::string& data, off_t off)
{
    int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
        ADD_FAILURE() << "open for write " << path << ": " << strerror(errno);
        return;
    }
    EXPECT_EQ(::pwrite(fd, data.data(), data.size(), off), static_cast<ssize_t>(data.size())) << path;
    ::close(fd);
}

void create(const std::string& path, const std::string& data, mode_t mode)
{
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0) {
        ADD_FAILURE() << "create " << path << ": " << strerror(errno);
        return;
    }
    EXPECT_EQ(::write(fd, data.data(), data.size()), static_cast<ssize_t>(data.size())) << path;
    ::close(fd);
    step(::chmod(path.c_str(), mode), "chmod " + path);
}

// The change set, made through a mounted overlay at m (layerd-fs or kernel).
// Without dir_renames it leaves out the directory renames (kernel overlayfs
// cannot follow redirects with userxattr).
void apply_changes(const std::string& m, bool dir_renames = true)
{
    auto p = [&](const std::string& rel) { return m + "/" + rel; };
    // new files and dirs
    create(p("new.txt"), "new file\n", 0640);
    step(::mkdir(p("newdir").c_str(), 0755), "mkdir newdir");
    step(::mkdir(p("newdir/sub").c_str(), 0750), "mkdir newdir/sub");
    create(p("newdir/sub/file"), "nested\n", 0600);
    create(p("merged/created"), "created in a merged dir\n", 0644);
    step(::mkfifo(p("newfifo").c_str(), 0644), "mkfifo newfifo");
    // modify lower files (data copy-up; parents copied up first)
    append(p("base/a.txt"), "more alpha\n");
    step(::truncate(p("base/d.txt").c_str(), 3), "truncate base/d.txt");
    pwrite_at(p("base/e.bin"), "PATCHED IN THE MIDDLE", 50000);
    pwrite_at(p("deep/x/y/z.txt"), "ZULU!\n", 0);
    append(p("merged/m_low1"), "appended\n");
    append(p("base/hl1"), "through hl1\n"); // the kernel (index=off) breaks the link: hl2 keeps the lower data
    // metadata-only changes
    step(::chmod(p("base/b.txt").c_str(), 0755), "chmod base/b.txt");
    step(::chmod(p("deep").c_str(), 0700), "chmod deep");
    step(::chmod(p("merged").c_str(), 0750), "chmod merged");
    step(::chown(p("base/c.txt").c_str(), 1000, 1000), "chown base/c.txt");
    step(::chown(p("new.txt").c_str(), 2000, 3000), "chown new.txt");
    step(::lchown(p("lnk").c_str(), 4000, 4000), "lchown lnk");
    step(::chown(p("base/suid").c_str(), 1000, 1000), "chown base/suid"); // clears S_ISUID like the kernel
    // symlinks
    step(::symlink("base/a.txt", p("newlink").c_str()), "symlink newlink");
    step(::symlink("/nonexistent/target", p("newdir/dangling").c_str()), "symlink newdir/dangling");
    step(::symlink("../top.txt", p("newdir/rel").c_str()), "symlink newdir/rel");
    // user xattrs
    step(::setxattr(p("base/a.txt").c_str(), "user.note", "hello", 5, 0), "setxattr base/a.txt");
    step(::setxattr(p("top.txt").c_str(), "user.only_xattr", "v", 1, 0), "setxattr top.txt");
    step(::setxattr(p("new.txt").c_str(), "user.new", "1", 1, 0), "setxattr new.txt");
    step(::setxattr(p("merged").c_str(), "user.dir", "yes", 3, 0), "setxattr merged");
    step(::setxattr(p("base/c.txt").c_str(), "user.color", "red", 3, XATTR_REPLACE), "setxattr base/c.txt");
    step(::removexattr(p("base/c.txt").c_str(), "user.keep"), "removexattr base/c.txt user.keep");
    step(::removexattr(p("xattr_dir").c_str(), "user.dir"), "removexattr xattr_dir user.dir");
    // deletions (whiteouts)
    step(::unlink(p("base/del1.txt").c_str()), "unlink base/del1.txt");
    step(::unlink(p("del0.txt").c_str()), "unlink del0.txt");
    step(::unlink(p("merged/shadow").c_str()), "unlink merged/shadow"); // in both lowers
    step(::unlink(p("lnk2").c_str()), "unlink lnk2");
    step(::unlink(p("fifo_low").c_str()), "unlink fifo_low");
    step(sh("rm -rf '" + p("rmme") + "'"), "rm -rf rmme");
    // rmdir + recreate: opaque
    step(sh("rm -rf '" + p("opq") + "'"), "rm -rf opq");
    step(::mkdir(p("opq").c_str(), 0755), "mkdir opq");
    create(p("opq/fresh"), "fresh\n", 0644);
    // type changes
    step(::unlink(p("file2dir").c_str()), "unlink file2dir");
    step(::mkdir(p("file2dir").c_str(), 0755), "mkdir file2dir");
    create(p("file2dir/inside"), "inside\n", 0644);
    step(sh("rm -rf '" + p("dir2file") + "'"), "rm -rf dir2file");
    create(p("dir2file"), "now a file\n", 0644);
    // renames of lower files
    step(::rename(p("base/c.txt").c_str(), p("base/c_renamed.txt").c_str()), "rename base/c.txt");
    step(::rename(p("ren0.txt").c_str(), p("newdir/ren0_moved.txt").c_str()), "rename ren0.txt");
    create(p("over.txt"), "replacement by rename\n", 0644);
    step(::rename(p("over.txt").c_str(), p("base/overwritten.txt").c_str()), "rename over.txt");
    step(::rename(p("base/swap1").c_str(), p("base/swap1.moved").c_str()), "rename base/swap1");
    create(p("base/swap1"), "replacement\n", 0644);
    // renames of lower dirs (redirects)
    if (!dir_renames)
        return;
    step(::rename(p("ldir").c_str(), p("ldir_renamed").c_str()), "rename ldir");
    create(p("ldir_renamed/new_in_renamed"), "new in renamed\n", 0644);
    step(::rename(p("ldir_renamed/f1").c_str(), p("ldir_renamed/f1b").c_str()), "rename ldir_renamed/f1");
    step(::mkdir(p("ldir").c_str(), 0755), "mkdir ldir (old name of a renamed dir)");
    create(p("ldir/after"), "after\n", 0644);
    step(::rename(p("deep/x").c_str(), p("newdir/x_moved").c_str()), "rename deep/x (across parents)");
    step(::rename(p("ldir0").c_str(), p("ldir0_renamed").c_str()), "rename ldir0 (top lower)");
    step(::rename(p("mv_merged").c_str(), p("mv_merged2").c_str()), "rename mv_merged (merged dir)");
}

bool has(const Tree& t, const std::string& path) { return t.count(path) != 0; }

std::string field(const Tree& t, const std::string& path, const std::string& key)
{
    auto it = t.find(path);
    if (it == t.end())
        return "<absent>";
    const std::string& d = it->second.description;
    auto pos = d.find(" " + key + "=");
    if (pos == std::string::npos)
        return "<no " + key + ">";
    pos += key.size() + 2;
    return d.substr(pos, d.find(' ', pos) - pos);
}

// What apply_changes must have produced, checked on a view (so that a change
// silently lost on both sides does not pass as "equal").
void expect_changes_visible(const Tree& t, const std::string& view, bool dir_renames = true)
{
    SCOPED_TRACE("view: " + view);
    for (const char* gone : {"base/del1.txt", "del0.txt", "merged/shadow", "lnk2", "fifo_low", "rmme", "rmme/r1",
                             "opq/o1", "opq/o2", "opq/osub", "opq/osub/o3", "base/c.txt", "ren0.txt",
                             "dir2file/inner"})
        EXPECT_FALSE(has(t, gone)) << gone << " is still visible";
    for (const char* there : {"new.txt", "newdir/sub/file", "merged/created", "merged/m_low0", "merged/m_low1",
                              "newfifo", "newlink", "newdir/dangling", "newdir/rel", "opq/fresh",
                              "file2dir/inside", "base/c_renamed.txt", "newdir/ren0_moved.txt", "base/swap1.moved",
                              "deep", "xattr_dir/keep"})
        EXPECT_TRUE(has(t, there)) << there << " is missing";
    if (dir_renames) {
        for (const char* gone : {"ldir/f1", "ldir/sub", "ldir/ln", "deep/x", "deep/x/y/z.txt", "ldir0", "mv_merged",
                                 "ldir_renamed/f1"})
            EXPECT_FALSE(has(t, gone)) << gone << " is still visible";
        for (const char* there : {"ldir_renamed/f1b", "ldir_renamed/ln", "ldir_renamed/sub/f2",
                                  "ldir_renamed/new_in_renamed", "ldir/after", "newdir/x_moved/y/z.txt",
                                  "newdir/x_moved/other.txt", "ldir0_renamed/g1", "ldir0_renamed/gsub/g2",
                                  "mv_merged2/ml0", "mv_merged2/ml1"})
            EXPECT_TRUE(has(t, there)) << there << " is missing";
    }
    const char* z = dir_renames ? "newdir/x_moved/y/z.txt" : "deep/x/y/z.txt";
    EXPECT_EQ(field(t, z, "sha256"), sha256_hex("ZULU!\n"));
    auto type = [&](const std::string& path) { return has(t, path) ? t.at(path).type : '-'; };
    EXPECT_EQ(type("file2dir"), 'd');
    EXPECT_EQ(type("dir2file"), 'f');
    EXPECT_EQ(type("newfifo"), 'p');
    EXPECT_EQ(type("newlink"), 'l');
    EXPECT_EQ(field(t, "opq", "mode"), "755");
    EXPECT_EQ(field(t, "base/a.txt", "sha256"), sha256_hex("alpha\nmore alpha\n"));
    EXPECT_EQ(field(t, "base/d.txt", "sha256"), sha256_hex("del"));
    EXPECT_EQ(field(t, "base/hl1", "sha256"), sha256_hex("hard linked\nthrough hl1\n"));
    EXPECT_EQ(field(t, "base/hl2", "sha256"), sha256_hex("hard linked\n")) << "copy-up of one lower hard link "
                                                                             "changed the other name";
    EXPECT_EQ(field(t, "base/overwritten.txt", "sha256"), sha256_hex("replacement by rename\n"));
    EXPECT_EQ(field(t, "base/swap1", "sha256"), sha256_hex("replacement\n"));
    EXPECT_EQ(field(t, "base/swap1.moved", "sha256"), sha256_hex("swap original\n"));
    EXPECT_EQ(field(t, "dir2file", "sha256"), sha256_hex("now a file\n"));
    EXPECT_EQ(field(t, "base/b.txt", "mode"), "755");
    EXPECT_EQ(field(t, "base/b.txt", "uid"), "1234");
    EXPECT_EQ(field(t, "deep", "mode"), "700");
    EXPECT_EQ(field(t, "base/c_renamed.txt", "uid"), "1000");
    EXPECT_EQ(field(t, "base/c_renamed.txt", "xattrs"), "{user.color=\"red\"}");
    EXPECT_EQ(field(t, "new.txt", "uid"), "2000");
    EXPECT_EQ(field(t, "new.txt", "gid"), "3000");
    EXPECT_EQ(field(t, "lnk", "uid"), "4000");
    EXPECT_EQ(field(t, "lnk", "target"), "\"base/a.txt\"");
    EXPECT_EQ(field(t, "base/suid", "mode"), "755") << "chown of a setuid file must clear S_ISUID";
    EXPECT_EQ(field(t, "top.txt", "xattrs"), "{user.only_xattr=\"v\"}");
    EXPECT_EQ(field(t, "xattr_dir", "xattrs"), "{}");
    EXPECT_EQ(field(t, "newdir/dangling", "target"), "\"/nonexistent/target\"");
    // Overlay-private xattrs never show.
    for (const auto& [path, e] : t)
        EXPECT_EQ(e.description.find("overlay."), std::string::npos) << path << ": " << e.description;
}

// A kernel overlayfs mount that is always torn down.
class KernelOverlay {
public:
    KernelOverlay() = default;
    KernelOverlay(const KernelOverlay&) = delete;
    KernelOverlay& operator=(const KernelOverlay&) = delete;
    ~KernelOverlay()
    {
        if (mounted_)
            ::umount2(mnt_.c_str(), MNT_DETACH);
    }

    // Returns "" on success, else the error.
    std::string mount(const std::string& options, const std::string& mnt, unsigned long flags = 0)
    {
        mnt_ = mnt;
        if (::mount("overlay", mnt.c_str(), "overlay", flags, options.c_str()) != 0)
            return std::string("mount -t overlay -o ") + options + " " + mnt + ": " + strerror(errno) + "\n"
                + sh_out("dmesg 2>/dev/null | grep -i overlay | tail -5");
        mounted_ = true;
        return "";
    }

    void unmount()
    {
        if (!mounted_)
            return;
        EXPECT_EQ(::umount2(mnt_.c_str(), 0), 0) << "umount " << mnt_ << ": " << strerror(errno);
        mounted_ = false;
    }

private:
    std::string mnt_;
    bool mounted_ = false;
};

class InteropTest : public OverlayTest {
protected:
    // A fresh dir under the test's temp root (for kernel workdirs/mountpoints).
    std::string fresh_dir(const std::string& name)
    {
        std::string d = root_ + "/" + name;
        EXPECT_EQ(::mkdir(d.c_str(), 0755), 0) << d << ": " << strerror(errno);
        return d;
    }
    std::string kernel_options(const std::string& l0, const std::string& l1, const std::string& u,
                               const std::string& w, const std::string& redirect)
    {
        return "lowerdir=" + l0 + ":" + l1 + ",upperdir=" + u + ",workdir=" + w + ",redirect_dir=" + redirect;
    }
};

// (1) layerd-fs writes, kernel overlayfs reads.
TEST_F(InteropTest, KernelReadsWhatLayerdWrote)
{
    populate(lower(0), lower(1));
    ASSERT_FALSE(HasFatalFailure());
    mount();
    ASSERT_FALSE(HasFatalFailure());
    apply_changes(mnt());
    Tree layerd_view = snapshot(mnt());
    expect_changes_visible(layerd_view, "layerd-fs after the changes");
    unmount();

    // On disk it is kernel overlayfs's format: whiteouts are 0/0 char devices.
    struct stat wh {};
    ASSERT_EQ(::lstat(upper("base/del1.txt").c_str(), &wh), 0) << "no whiteout for base/del1.txt in the upper";
    EXPECT_TRUE(S_ISCHR(wh.st_mode) && wh.st_rdev == makedev(0, 0)) << "whiteout is not a 0/0 char device";
    // Opaque dirs and dir renames use the kernel's xattrs, and a dir rename
    // moves no data: the renamed dir's lower files stay in the lower.
    auto xattr = [](const std::string& path, const char* name) {
        char buf[4096];
        ssize_t n = ::lgetxattr(path.c_str(), name, buf, sizeof buf);
        return n < 0 ? std::string("<") + strerror(errno) + ">" : std::string(buf, static_cast<size_t>(n));
    };
    EXPECT_EQ(xattr(upper("opq"), "trusted.overlay.opaque"), "y");
    for (const char* renamed : {"ldir_renamed", "newdir/x_moved", "ldir0_renamed", "mv_merged2"})
        EXPECT_NE(xattr(upper(renamed), "trusted.overlay.redirect")[0], '<')
            << renamed << " has no trusted.overlay.redirect: " << xattr(upper(renamed), "trusted.overlay.redirect");
    for (const char* not_copied : {"ldir_renamed/sub/f2", "ldir_renamed/ln", "newdir/x_moved/other.txt",
                                   "ldir0_renamed/gsub/g2", "mv_merged2/ml0", "mv_merged2/ml1"})
        EXPECT_FALSE(exists(upper(not_copied))) << not_copied << " was copied up by a directory rename";

    std::string kmnt = fresh_dir("kmnt");
    std::string kwork = fresh_dir("kwork");
    {
        KernelOverlay k;
        std::string err = k.mount(kernel_options(lower(0), lower(1), upper(), kwork, "follow"), kmnt, MS_RDONLY);
        ASSERT_EQ(err, "");
        Tree kernel_view = snapshot(kmnt);
        k.unmount();
        EXPECT_EQ(tree_diff(layerd_view, "layerd-fs", kernel_view, "kernel"), "")
            << "kernel overlayfs sees a different tree on the layers layerd-fs wrote";
        expect_changes_visible(kernel_view, "kernel overlayfs on layerd's layers");
    }

    // And layerd-fs itself sees the same after a remount.
    mount();
    ASSERT_FALSE(HasFatalFailure());
    Tree again = snapshot(mnt());
    EXPECT_EQ(tree_diff(layerd_view, "before remount", again, "after remount"), "");
}

// (2) kernel overlayfs writes (with redirect_dir=on), layerd-fs reads.
TEST_F(InteropTest, LayerdReadsWhatKernelWrote)
{
    populate(lower(0), lower(1));
    ASSERT_FALSE(HasFatalFailure());
    std::string kmnt = fresh_dir("kmnt");
    std::string kwork = fresh_dir("kwork");
    Tree kernel_view;
    {
        KernelOverlay k;
        std::string err = k.mount(kernel_options(lower(0), lower(1), upper(), kwork, "on"), kmnt);
        ASSERT_EQ(err, "");
        apply_changes(kmnt);
        kernel_view = snapshot(kmnt);
        k.unmount();
    }
    expect_changes_visible(kernel_view, "kernel after the changes");
    // The kernel left its own private xattrs (origin, redirect, opaque,
    // impure) in the upper; layerd-fs must follow them and hide them.
    EXPECT_NE(sh_out("getfattr -R -d -m '^trusted.overlay' --absolute-names '" + upper() + "' 2>/dev/null"), "");

    mount();
    ASSERT_FALSE(HasFatalFailure());
    Tree layerd_view = snapshot(mnt());
    EXPECT_EQ(tree_diff(kernel_view, "kernel", layerd_view, "layerd-fs"), "")
        << "layerd-fs serves a different tree on the layers kernel overlayfs wrote";
    expect_changes_visible(layerd_view, "layerd-fs on the kernel's layers");
}

// xattr_format user / -o userxattr: the layers use user.overlay.* like the
// kernel's userxattr option, which never follows redirects, so the change set
// leaves out directory renames here.
TEST_F(InteropTest, UserxattrKernelReadsWhatLayerdWrote)
{
    populate(lower(0), lower(1));
    ASSERT_FALSE(HasFatalFailure());
    mount("userxattr");
    ASSERT_FALSE(HasFatalFailure());
    apply_changes(mnt(), false);
    Tree layerd_view = snapshot(mnt());
    expect_changes_visible(layerd_view, "layerd-fs -o userxattr after the changes", false);
    unmount();

    char buf[16];
    ssize_t n = ::lgetxattr(upper("opq").c_str(), "user.overlay.opaque", buf, sizeof buf);
    EXPECT_EQ(n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string(strerror(errno)), "y")
        << "opaque dir without user.overlay.opaque=y";
    EXPECT_LT(::lgetxattr(upper("opq").c_str(), "trusted.overlay.opaque", buf, sizeof buf), 0)
        << "userxattr mount wrote trusted.overlay.opaque";

    std::string kmnt = fresh_dir("kmnt");
    std::string kwork = fresh_dir("kwork");
    KernelOverlay k;
    std::string err = k.mount("lowerdir=" + lower(0) + ":" + lower(1) + ",upperdir=" + upper() + ",workdir=" + kwork
                                  + ",userxattr",
                              kmnt, MS_RDONLY);
    ASSERT_EQ(err, "");
    Tree kernel_view = snapshot(kmnt);
    k.unmount();
    EXPECT_EQ(tree_diff(layerd_view, "layerd-fs", kernel_view, "kernel"), "")
        << "kernel overlayfs (userxattr) sees a different tree on the layers layerd-fs wrote";
}

TEST_F(InteropTest, UserxattrLayerdReadsWhatKernelWrote)
{
    populate(lower(0), lower(1));
    ASSERT_FALSE(HasFatalFailure());
    std::string kmnt = fresh_dir("kmnt");
    std::string kwork = fresh_dir("kwork");
    Tree kernel_view;
    {
        KernelOverlay k;
        std::string err = k.mount("lowerdir=" + lower(0) + ":" + lower(1) + ",upperdir=" + upper()
                                      + ",workdir=" + kwork + ",userxattr",
                                  kmnt);
        ASSERT_EQ(err, "");
        apply_changes(kmnt, false);
        kernel_view = snapshot(kmnt);
        k.unmount();
    }
    expect_changes_visible(kernel_view, "kernel (userxattr) after the changes", false);

    mount("userxattr");
    ASSERT_FALSE(HasFatalFailure());
    Tree layerd_view = snapshot(mnt());
    EXPECT_EQ(tree_diff(kernel_view, "kernel", layerd_view, "layerd-fs"), "")
        << "layerd-fs -o userxattr serves a different tree on the layers kernel overlayfs (userxattr) wrote";
    expect_changes_visible(layerd_view, "layerd-fs -o userxattr on the kernel's layers", false);
}

// The same change set made through each on identical lowers gives the same view.
TEST_F(InteropTest, SameChangesGiveSameViewAsKernel)
{
    populate(lower(0), lower(1));
    ASSERT_FALSE(HasFatalFailure());
    std::string k_root = fresh_dir("k");
    std::string kl0 = fresh_dir("k/lower0"), kl1 = fresh_dir("k/lower1"), ku = fresh_dir("k/upper"),
                kw = fresh_dir("k/work"), km = fresh_dir("k/mnt");
    populate(kl0, kl1);
    ASSERT_FALSE(HasFatalFailure());

    Tree kernel_view;
    {
        KernelOverlay k;
        std::string err = k.mount(kernel_options(kl0, kl1, ku, kw, "on"), km);
        ASSERT_EQ(err, "");
        apply_changes(km);
        kernel_view = snapshot(km);
        k.unmount();
    }
    mount();
    ASSERT_FALSE(HasFatalFailure());
    apply_changes(mnt());
    Tree layerd_view = snapshot(mnt());
    EXPECT_EQ(tree_diff(kernel_view, "kernel", layerd_view, "layerd-fs"), "")
        << "the same changes through kernel overlayfs and layerd-fs give different views";
    if (HasFailure())
        std::fprintf(stderr, "layerd-fs view:\n%s", dump(layerd_view).c_str());
}


// Redirects written over several kernel rounds: an absolute redirect names a
// path in the view of the layers below, whose components may themselves be
// redirected (relative or absolute) there. layerd-fs must walk it as the
// kernel does, one component at a time, or renamed dirs lose their contents.
TEST_F(InteropTest, LayerdFollowsRedirectChainsOverSeveralLayers)
{
    mkdir_p(lower(1) + "/a/b");
    put(lower(1) + "/a/b/f2", "two");
    mkdir_p(lower(1) + "/old/deep");
    put(lower(1) + "/old/deep/f1", "one");
    put(lower(1) + "/old/keep", "kept");
    mkdir_p(lower(1) + "/t");
    mkdir_p(lower(0) + "/a/b");
    put(lower(0) + "/a/b/f3", "three");
    ASSERT_FALSE(HasFatalFailure());

    std::string u1 = fresh_dir("u1"), u2 = fresh_dir("u2");
    std::string kmnt = fresh_dir("kmnt");
    auto round = [&](const std::string& lowers, const std::string& up, const std::string& work,
                     const std::vector<std::pair<std::string, std::string>>& moves) {
        KernelOverlay k;
        ASSERT_EQ(k.mount("lowerdir=" + lowers + ",upperdir=" + up + ",workdir=" + work + ",redirect_dir=on", kmnt),
                  "");
        for (const auto& [from, to] : moves)
            ASSERT_EQ(::rename((kmnt + "/" + from).c_str(), (kmnt + "/" + to).c_str()), 0)
                << from << " -> " << to << ": " << strerror(errno);
        k.unmount();
    };
    round(lower(0) + ":" + lower(1), u1, fresh_dir("w1"), {{"a/b", "t/moved"}, {"old", "new"}});
    ASSERT_FALSE(HasFatalFailure());
    round(u1 + ":" + lower(0) + ":" + lower(1), u2, fresh_dir("w2"), {{"t/moved", "again"}, {"new/deep", "deep2"}});
    ASSERT_FALSE(HasFatalFailure());

    std::string stack = u2 + ":" + u1 + ":" + lower(0) + ":" + lower(1);
    Tree kernel_view;
    {
        KernelOverlay k;
        ASSERT_EQ(k.mount("lowerdir=" + stack + ",redirect_dir=follow", kmnt, MS_RDONLY), "");
        kernel_view = snapshot(kmnt);
        k.unmount();
    }
    EXPECT_EQ(field(kernel_view, "again/f2", "sha256"), sha256_hex("two")) << dump(kernel_view);
    EXPECT_EQ(field(kernel_view, "again/f3", "sha256"), sha256_hex("three")) << dump(kernel_view);
    EXPECT_EQ(field(kernel_view, "deep2/f1", "sha256"), sha256_hex("one")) << dump(kernel_view);

    std::string error;
    ASSERT_TRUE(fs_.start("lowerdir=" + stack, mnt(), &error)) << error;
    Tree layerd_view = snapshot(mnt());
    EXPECT_EQ(tree_diff(kernel_view, "kernel", layerd_view, "layerd-fs"), "")
        << "layerd-fs serves a different tree on chained kernel layers";
}

} // namespace
} // namespace layerd::test
