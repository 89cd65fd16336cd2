// SPDX-License-Identifier: LGPL-2.1-or-later
#include "stack_env.hpp"

#include "layer_view.hpp"
#include "overlay_format.hpp"
#include "resolve.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace layerd::test {

std::string errno_text(int e)
{
    return std::string(strerror(e));
}

// ---------------------------------------------------------------- trees

std::string show_numbers(const std::vector<uint32_t>& numbers)
{
    std::string out = " [";
    for (uint32_t n : numbers)
        out += (out.size() > 2 ? " " : "") + std::to_string(n);
    return out + "]";
}

std::string show_data(const std::string& data)
{
    std::string out = "\"";
    for (size_t i = 0; i < data.size() && i < 40; ++i) {
        unsigned char c = static_cast<unsigned char>(data[i]);
        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
            out += static_cast<char>(c);
        } else {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\x%02x", c);
            out += buf;
        }
    }
    out += data.size() > 40 ? "\"…(" + std::to_string(data.size()) + " bytes)" : "\"";
    return out;
}

std::string show_entry(const Entry& e)
{
    if (e.type == 'd')
        return "dir";
    if (e.type == 'o')
        return "other(" + e.data + ")";
    return "file " + show_data(e.data);
}

std::string tree_mismatch(const Tree& expected, const Tree& actual)
{
    std::ostringstream out;
    int shown = 0;
    auto note = [&](const std::string& line) {
        if (++shown <= 12)
            out << "\n    " << line;
    };
    for (const auto& [path, e] : expected) {
        auto it = actual.find(path);
        if (it == actual.end())
            note("missing " + path + " (expected " + show_entry(e) + ")");
        else if (!(it->second == e))
            note(path + ": expected " + show_entry(e) + ", got " + show_entry(it->second));
    }
    for (const auto& [path, e] : actual)
        if (!expected.count(path))
            note("unexpected " + path + " (" + show_entry(e) + ")");
    if (shown > 12)
        out << "\n    … " << shown - 12 << " more";
    return out.str();
}

int read_fd_all(int fd, std::string* out)
{
    out->clear();
    char buf[65536];
    for (;;) {
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            return 0;
        out->append(buf, static_cast<size_t>(n));
    }
}

int read_path(const std::string& path, std::string* out)
{
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return -errno;
    int r = read_fd_all(fd, out);
    ::close(fd);
    return r;
}

int write_path(const std::string& path, const std::string& data, int flags)
{
    int fd = ::open(path.c_str(), flags | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    size_t done = 0;
    while (done < data.size()) {
        ssize_t n = ::write(fd, data.data() + done, data.size() - done);
        if (n < 0) {
            int e = errno;
            ::close(fd);
            return -e;
        }
        done += static_cast<size_t>(n);
    }
    if (::close(fd) != 0)
        return -errno;
    return 0;
}

std::vector<std::string> dir_names(const std::string& path)
{
    std::vector<std::string> names;
    if (DIR* d = ::opendir(path.c_str())) {
        while (dirent* e = ::readdir(d))
            if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0)
                names.emplace_back(e->d_name);
        ::closedir(d);
    }
    std::sort(names.begin(), names.end());
    return names;
}

std::string walk_dir(const std::string& abs, const std::string& rel, Tree* out)
{
    DIR* d = ::opendir(abs.c_str());
    if (!d)
        return abs + ": opendir: " + errno_text(errno);
    std::vector<std::string> names;
    errno = 0;
    while (dirent* e = ::readdir(d)) {
        std::string name = e->d_name;
        if (name != "." && name != "..")
            names.push_back(name);
        errno = 0;
    }
    int e = errno;
    ::closedir(d);
    if (e != 0)
        return abs + ": readdir: " + errno_text(e);
    std::sort(names.begin(), names.end());
    if (std::adjacent_find(names.begin(), names.end()) != names.end())
        return abs + ": readdir lists a name twice";
    for (const std::string& name : names) {
        std::string a = abs + "/" + name;
        std::string r = rel + "/" + name;
        struct stat st;
        if (::lstat(a.c_str(), &st) != 0)
            return a + ": lstat (listed by readdir): " + errno_text(errno);
        Entry ent;
        if (S_ISDIR(st.st_mode)) {
            ent.type = 'd';
            (*out)[r] = ent;
            if (std::string err = walk_dir(a, r, out); !err.empty())
                return err;
            continue;
        }
        if (S_ISREG(st.st_mode)) {
            if (int rr = read_path(a, &ent.data); rr < 0)
                return a + ": read: " + errno_text(-rr);
            if (static_cast<off_t>(ent.data.size()) != st.st_size)
                return a + ": stat says " + std::to_string(st.st_size) + " bytes, read gave " +
                       std::to_string(ent.data.size());
        } else {
            ent.type = 'o';
            ent.data = std::to_string(st.st_mode & S_IFMT);
        }
        (*out)[r] = ent;
    }
    return "";
}

std::string walk_layers(const std::vector<std::string>& dirs, Tree* out)
{
    std::vector<UniqueFd> owned;
    std::vector<int> fds;
    for (const std::string& dir : dirs) {
        int fd = ::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
            return dir + ": open: " + errno_text(errno);
        owned.emplace_back(fd);
        fds.push_back(fd);
    }
    OverlayXattrs xattrs(XattrFormat::trusted);
    std::string err;
    int r = walk_view(fds, xattrs, [&](const std::string& path, const ViewEntry& e) -> int {
        Entry ent;
        if (S_ISDIR(e.st.st_mode)) {
            ent.type = 'd';
        } else if (S_ISREG(e.st.st_mode)) {
            int fd = reopen_fd(e.fd(), O_RDONLY | O_CLOEXEC);
            if (fd < 0) {
                err = path + ": reopen: " + errno_text(-fd);
                return 1;
            }
            UniqueFd owner(fd);
            if (int rr = read_fd_all(fd, &ent.data); rr < 0) {
                err = path + ": read: " + errno_text(-rr);
                return 1;
            }
        } else {
            ent.type = 'o';
            ent.data = std::to_string(e.st.st_mode & S_IFMT);
        }
        (*out)[path] = ent;
        return 0;
    });
    if (!err.empty())
        return err;
    if (r != 0)
        return "walk_view: " + (r < 0 ? errno_text(-r) : std::to_string(r));
    return "";
}

std::string dump_layer(const std::string& dir)
{
    std::string out;
    std::vector<std::string> stack{""};
    while (!stack.empty()) {
        std::string rel = stack.back();
        stack.pop_back();
        std::string abs = dir + rel;
        DIR* d = ::opendir(abs.c_str());
        if (!d)
            return out + "\n<opendir " + abs + ": " + errno_text(errno) + ">";
        std::vector<std::string> names;
        while (dirent* e = ::readdir(d))
            if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0)
                names.emplace_back(e->d_name);
        ::closedir(d);
        std::sort(names.begin(), names.end());
        for (const std::string& name : names) {
            std::string p = abs + "/" + name;
            struct stat st;
            if (::lstat(p.c_str(), &st) != 0) {
                out += "\n<lstat " + p + ">";
                continue;
            }
            std::ostringstream line;
            line << "\n" << rel << "/" << name << " mode=" << std::oct << st.st_mode << std::dec
                 << " uid=" << st.st_uid << " gid=" << st.st_gid << " size=" << st.st_size
                 << " rdev=" << st.st_rdev << " ino=" << st.st_ino << " mtime=" << st.st_mtim.tv_sec << "."
                 << st.st_mtim.tv_nsec;
            char names_buf[4096];
            ssize_t n = ::llistxattr(p.c_str(), names_buf, sizeof names_buf);
            for (ssize_t i = 0; i < n;) {
                std::string xname(names_buf + i);
                char val[4096];
                ssize_t vn = ::lgetxattr(p.c_str(), xname.c_str(), val, sizeof val);
                line << " " << xname << "=" << (vn >= 0 ? show_data(std::string(val, static_cast<size_t>(vn))) : "?");
                i += static_cast<ssize_t>(xname.size()) + 1;
            }
            if (S_ISREG(st.st_mode)) {
                std::string data;
                read_path(p, &data);
                line << " data=" << show_data(data) << " hash=" << std::hash<std::string>{}(data);
            }
            out += line.str();
            if (S_ISDIR(st.st_mode))
                stack.push_back(rel + "/" + name);
        }
    }
    return out;
}

std::string pread_all(int fd)
{
    std::string out;
    char buf[4096];
    for (off_t off = 0;;) {
        ssize_t n = ::pread(fd, buf, sizeof buf, off);
        if (n < 0)
            return "<" + errno_text(errno) + ">";
        if (n == 0)
            return out;
        out.append(buf, static_cast<size_t>(n));
        off += n;
    }
}

// ------------------------------------------------------------ mount table

bool is_mounted(const std::string& mountpoint)
{
    return mounted_connection(mountpoint) >= 0;
}

int force_unmount(const std::string& mountpoint)
{
    int n = 0;
    for (int conn; (conn = mounted_connection(mountpoint)) >= 0 && n < 10; ++n) {
        std::ofstream("/sys/fs/fuse/connections/" + std::to_string(conn) + "/abort") << "1";
        ::umount2(mountpoint.c_str(), MNT_DETACH);
    }
    return n;
}

const char* kind_name(SnapshotError::Kind kind)
{
    switch (kind) {
    case SnapshotError::Kind::NoSuchSnapshot:
        return "NoSuchSnapshot";
    case SnapshotError::Kind::DepthLimit:
        return "DepthLimit";
    case SnapshotError::Kind::InvalidArgument:
        return "InvalidArgument";
    case SnapshotError::Kind::Io:
        return "Io";
    }
    return "?";
}

std::string describe(const std::exception& e)
{
    if (auto* s = dynamic_cast<const SnapshotError*>(&e))
        return std::string("SnapshotError(") + kind_name(s->kind()) + "): " + s->what();
    if (dynamic_cast<const StoreError*>(&e))
        return std::string("StoreError: ") + e.what();
    if (dynamic_cast<const LayerError*>(&e))
        return std::string("LayerError: ") + e.what();
    return std::string("exception: ") + e.what();
}

// ------------------------------------------------------- a small disk

std::string LoopFs::unavailable()
{
    if (sh("command -v mkfs.ext4 >/dev/null && command -v losetup >/dev/null") != 0)
        return "mkfs.ext4 or losetup is not installed: no small filesystem for a full disk";
    if (::access("/dev/loop-control", R_OK | W_OK) != 0)
        return "no usable /dev/loop-control (" + errno_text(errno) + "): no small filesystem for a full disk";
    return "";
}

std::string LoopFs::create(const std::string& dir, unsigned mebibytes)
{
    image_ = dir + "/disk.img";
    mountpoint_ = dir + "/fs";
    if (::mkdir(mountpoint_.c_str(), 0755) != 0 && errno != EEXIST)
        return mountpoint_ + ": mkdir: " + errno_text(errno);
    // -m 0: no blocks reserved for root, so what statvfs calls available is
    // what the test (root) can fill.
    std::string cmd = "truncate -s " + std::to_string(mebibytes) + "M '" + image_ + "' && mkfs.ext4 -q -F -m 0 -b 4096 '" +
                      image_ + "'";
    if (int r = sh(cmd); r != 0)
        return "'" + cmd + "' exited with " + std::to_string(r);
    std::string dev = sh_out("losetup -f --show '" + image_ + "'");
    while (!dev.empty() && (dev.back() == '\n' || dev.back() == ' '))
        dev.pop_back();
    if (!dev.starts_with("/dev/loop"))
        return "losetup -f --show " + image_ + " printed '" + dev + "', not a loop device";
    device_ = dev;
    if (::mount(device_.c_str(), mountpoint_.c_str(), "ext4", 0, nullptr) != 0) {
        std::string err = "mount " + device_ + " on " + mountpoint_ + ": " + errno_text(errno);
        teardown();
        return err;
    }
    mounted_ = true;
    return "";
}

std::string LoopFs::teardown()
{
    std::string err;
    if (mounted_) {
        if (::umount2(mountpoint_.c_str(), 0) != 0) {
            err = "umount " + mountpoint_ + ": " + errno_text(errno) + " (detached lazily)";
            ::umount2(mountpoint_.c_str(), MNT_DETACH);
        }
        mounted_ = false;
    }
    if (!device_.empty()) {
        // After a lazy unmount the device is still busy: -d then sets
        // autoclear, and it goes with the last reference.
        if (int r = sh("losetup -d '" + device_ + "'"); r != 0)
            err += (err.empty() ? "" : "; ") + std::string("losetup -d ") + device_ + " exited with " + std::to_string(r);
        device_.clear();
    }
    return err;
}

uint64_t LoopFs::free_bytes() const
{
    struct statvfs st {};
    if (::statvfs(mountpoint_.c_str(), &st) != 0)
        return 0;
    return static_cast<uint64_t>(st.f_bavail) * st.f_frsize;
}

uint64_t LoopFs::block_size() const
{
    struct statvfs st {};
    if (::statvfs(mountpoint_.c_str(), &st) != 0)
        return 4096;
    return st.f_frsize;
}

std::string LoopFs::fill(uint64_t blocks, uint64_t* left)
{
    std::string path = mountpoint_ + "/filler";
    Fd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
    if (fd.fd < 0)
        return path + ": open: " + errno_text(errno);
    uint64_t bs = block_size();
    ::sync();
    for (int round = 0; round < 64; ++round) {
        uint64_t avail = free_bytes() / bs;
        if (avail <= blocks)
            break;
        struct stat st {};
        ::fstat(fd.fd, &st);
        // Extent blocks come out of the same free space: ask for less when
        // the whole is refused.
        uint64_t grow = (avail - blocks) * bs;
        int r = -1;
        while (grow >= bs && (r = ::fallocate(fd.fd, 0, st.st_size, static_cast<off_t>(grow))) != 0) {
            if (errno != ENOSPC)
                return path + ": fallocate: " + errno_text(errno);
            grow /= 2;
        }
        if (r != 0)
            break;
        ::fsync(fd.fd);
    }
    if (::fsync(fd.fd) != 0)
        return path + ": fsync: " + errno_text(errno);
    if (left)
        *left = free_bytes() / bs;
    return "";
}

std::string LoopFs::unfill()
{
    std::string path = mountpoint_ + "/filler";
    if (::unlink(path.c_str()) != 0 && errno != ENOENT)
        return path + ": unlink: " + errno_text(errno);
    ::sync();
    return "";
}

// ------------------------------------------------------------- one stack

StackEnv::StackEnv(StackEnvOptions options)
{
    if (std::string err = ensure_fusectl(); !err.empty())
        std::fprintf(stderr, "warning: %s\n", err.c_str());
    char tmpl[] = "/tmp/layerd-snap.XXXXXX";
    if (!::mkdtemp(tmpl))
        throw std::runtime_error("mkdtemp: " + errno_text(errno));
    root = tmpl;
    for (const char* d : {"/lower", "/mnt", "/lower/d", "/lower/d/sub", "/lower/e"})
        if (::mkdir((root + d).c_str(), 0755) != 0 || ::chmod((root + d).c_str(), 0755) != 0)
            throw std::runtime_error(root + d + ": mkdir: " + errno_text(errno));
    for (const auto& [path, entry] : initial_tree())
        if (entry.type == 'f') {
            if (write_path(root + "/lower" + path, entry.data) != 0 ||
                ::chmod((root + "/lower" + path).c_str(), 0644) != 0)
                throw std::runtime_error(path + ": cannot write the lower file");
        }
    std::string state = root + "/state";
    if (options.state_fs_mebibytes > 0) {
        if (::mkdir((root + "/disk").c_str(), 0755) != 0)
            throw std::runtime_error(root + "/disk: mkdir: " + errno_text(errno));
        disk_ = std::make_unique<LoopFs>();
        if (std::string err = disk_->create(root + "/disk", options.state_fs_mebibytes); !err.empty())
            throw std::runtime_error("a small state filesystem: " + err);
        state = disk_->mountpoint() + "/state";
    }
    if (::mkdir(state.c_str(), 0755) != 0)
        throw std::runtime_error(state + ": mkdir: " + errno_text(errno));
    config.name = kStack;
    config.lowers = {root + "/lower"};
    config.mountpoint = root + "/mnt";
    config.state_dir = state;
    open_store();
}

StackEnv::~StackEnv()
{
    stack_.reset(); // unmounts
    if (int n = force_unmount(config.mountpoint); n > 0)
        std::fprintf(stderr, "teardown: %s was still mounted after the stack was destroyed\n",
                     config.mountpoint.c_str());
    store_.reset();
    if (disk_)
        if (std::string err = disk_->teardown(); !err.empty())
            std::fprintf(stderr, "teardown of the small state filesystem: %s\n", err.c_str());
    if (keep)
        std::fprintf(stderr, "kept %s for a look\n", root.c_str());
    else
        sh("rm -rf '" + root + "'");
}

Tree StackEnv::initial_tree()
{
    return Tree{
        {"/a", {'f', "alpha\n"}}, {"/d", {'d', ""}},      {"/d/b", {'f', "beta\n"}},
        {"/d/sub", {'d', ""}},    {"/d/sub/c", {'f', "gamma\n"}}, {"/e", {'d', ""}},
        {"/g", {'f', "grp"}},     {"/o", {'f', "own"}},   {"/p", {'f', "perm"}},
        {"/x", {'f', "xray"}},
    };
}

void StackEnv::open_store()
{
    store_.emplace(SnapshotStore::open(config.state_dir + "/layerd.db"));
}

void StackEnv::close_store()
{
    store_.reset();
}

std::string StackEnv::mount()
{
    try {
        stack_ = std::make_unique<MountedStack>(*store_, config);
    } catch (const std::exception& e) {
        return "MountedStack(): " + describe(e);
    }
    if (!is_mounted(config.mountpoint))
        return "the MountedStack constructor returned before " + config.mountpoint + " was mounted";
    return "";
}

std::string StackEnv::unmount()
{
    stack_.reset();
    if (force_unmount(config.mountpoint) > 0)
        return "the mount was still there after ~MountedStack()";
    return "";
}

std::string StackEnv::remount()
{
    if (std::string err = unmount(); !err.empty())
        return err;
    return mount();
}

std::string StackEnv::layer_dir(int64_t id) const
{
    return layers_root() + "/" + std::to_string(id);
}

std::string StackEnv::layers_root() const
{
    return config.state_dir + "/stacks/" + kStack + "/layers";
}

std::string StackEnv::chain_of(int64_t layer, std::vector<int64_t>* ids)
{
    ids->clear();
    std::optional<int64_t> id = layer;
    while (id) {
        if (ids->size() > 10000)
            return "the layer chain of " + std::to_string(layer) + " loops";
        auto rec = store_->get_layer(*id);
        if (!rec)
            return "layer " + std::to_string(*id) + " (in the chain of " + std::to_string(layer) +
                   ") is not in the database";
        ids->push_back(*id);
        id = rec->parent;
    }
    return "";
}

std::string StackEnv::snapshot_tree(uint32_t number, Tree* out, bool merging_may_be_gone)
{
    auto rec = store_->get_snapshot(kStack, number);
    if (!rec)
        return "snapshot " + std::to_string(number) + " is not in the database";
    return layer_tree(rec->layer, out, merging_may_be_gone);
}

std::string StackEnv::layer_tree(int64_t layer, Tree* out, bool merging_may_be_gone)
{
    std::vector<int64_t> ids;
    if (std::string err = chain_of(layer, &ids); !err.empty())
        return err;
    std::vector<std::string> dirs;
    for (int64_t id : ids) {
        struct stat st;
        if (merging_may_be_gone && ::lstat(layer_dir(id).c_str(), &st) != 0) {
            auto rec = store_->get_layer(id);
            if (rec && rec->state == LayerState::Merging)
                continue;
        }
        dirs.push_back(layer_dir(id));
    }
    for (const std::string& l : config.lowers)
        dirs.push_back(l);
    return walk_layers(dirs, out);
}

std::string StackEnv::check_against(const Tree& live, const std::map<uint32_t, Tree>& snapshots,
                                   bool merging_may_be_gone)
{
    std::string problems;
    Tree t;
    if (std::string err = live_tree(&t); !err.empty())
        problems += "\n  walking the mountpoint: " + err;
    else if (std::string m = tree_mismatch(live, t); !m.empty())
        problems += "\n  the live view differs from what was written:" + m;
    std::string listed, expected;
    for (const SnapshotRecord& s : store_->list_snapshots(kStack))
        listed += " " + std::to_string(s.number);
    for (const auto& [n, tree] : snapshots)
        expected += " " + std::to_string(n);
    if (listed != expected)
        problems += "\n  snapshots: expected {" + expected + " }, the store lists {" + listed + " }";
    for (const auto& [n, tree] : snapshots) {
        Tree st;
        if (std::string err = snapshot_tree(n, &st, merging_may_be_gone); !err.empty())
            problems += "\n  reading snapshot " + std::to_string(n) + " from disk: " + err;
        else if (std::string m = tree_mismatch(tree, st); !m.empty())
            problems += "\n  snapshot " + std::to_string(n) + " differs from what it held when taken:" + m;
    }
    for (const std::string& p : store_->integrity_problems())
        problems += "\n  database integrity: " + p;
    return problems;
}

std::string StackEnv::fingerprint()
{
    std::ostringstream out;
    for (const SnapshotRecord& s : store_->list_snapshots(kStack))
        out << "snapshot " << s.number << " layer " << s.layer << " '" << s.description << "' cleanup '"
            << s.cleanup << "'\n";
    for (const LayerRecord& l : store_->list_layers(kStack))
        out << "layer " << l.id << " parent " << (l.parent ? std::to_string(*l.parent) : "-") << " "
            << to_string(l.state) << "\n";
    out << "live " << store_->live_layer(kStack).value_or(-1) << " pending "
        << store_->pending_rollback(kStack).value_or(-1) << " merges " << store_->merges_in_progress().size();
    if (stack_)
        out << " depth " << stack_->depth();
    out << "\n";
    for (const std::string& n : dir_names(layers_root()))
        out << "dir " << n << "\n";
    if (stack_) {
        Tree t;
        if (std::string err = live_tree(&t); !err.empty())
            out << "live tree: " << err << "\n";
        for (const auto& [p, e] : t)
            out << p << " " << show_entry(e) << "\n";
    }
    return out.str();
}

// ------------------------------------------------------------ the fixture

void StackEnvTest::SetUp()
{
    ::umask(022);
    fresh_env();
}

void StackEnvTest::TearDown()
{
    if (env_)
        env_->keep = HasFailure();
    env_.reset();
}

void StackEnvTest::fresh_env(bool mount, StackEnvOptions options)
{
    if (env_)
        env_->keep = HasFailure();
    env_.reset();
    try {
        env_ = std::make_unique<StackEnv>(options);
    } catch (const std::exception& e) {
        FAIL() << "setting up the temp dir: " << describe(e);
    }
    if (mount) {
        ASSERT_EQ(env_->mount(), "");
    }
}

Tree StackEnvTest::live()
{
    Tree t;
    std::string err = env_->live_tree(&t);
    EXPECT_EQ(err, "") << "walking the mountpoint";
    return t;
}

Tree StackEnvTest::snapshot(uint32_t number)
{
    Tree t;
    std::string err = env_->snapshot_tree(number, &t);
    EXPECT_EQ(err, "") << "reading snapshot " << number << " from disk";
    return t;
}

std::set<uint32_t> StackEnvTest::numbers()
{
    std::set<uint32_t> out;
    for (const SnapshotRecord& s : stack().snapshots())
        out.insert(s.number);
    return out;
}

uint32_t StackEnvTest::create(const std::string& description, const std::string& cleanup)
{
    MountedStack::NewSnapshot s;
    s.description = description;
    s.cleanup = cleanup;
    return stack().create_snapshot(s);
}

void StackEnvTest::put(Tree* model, const std::string& path, const std::string& data)
{
    int r = write_path(mnt(path), data);
    ASSERT_EQ(r, 0) << "writing " << path << " through the mount: " << errno_text(-r);
    (*model)[path] = {'f', data};
}

void StackEnvTest::sync_mount()
{
    Fd fd(::open(env_->config.mountpoint.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    ASSERT_GE(fd.fd, 0) << "open " << env_->config.mountpoint << ": " << errno_text(errno);
    EXPECT_EQ(::syncfs(fd.fd), 0) << "syncfs on the mount: " << errno_text(errno);
}

} // namespace layerd::test
