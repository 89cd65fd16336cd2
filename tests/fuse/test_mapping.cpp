// SPDX-License-Identifier: LGPL-2.1-or-later
// Mapping safety (DESIGN.md §3 "Mapping safety"): a node keeps its nodeid, its
// page cache and its file handles across copy-up, so mappings and fds opened
// on a lower file see what is written after another fd copied the file up.
// Kernel overlayfs documents that it does NOT do this; layerd must.
#include "mount_fixture.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>

namespace layerd::test {
namespace {

// A file descriptor that closes itself.
class Fd {
public:
    explicit Fd(int fd = -1) noexcept : fd_(fd) {}
    Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
    Fd& operator=(Fd&& other) noexcept
    {
        if (this != &other)
            reset(std::exchange(other.fd_, -1));
        return *this;
    }
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    ~Fd() { reset(); }
    int get() const noexcept { return fd_; }
    void reset(int fd = -1) noexcept
    {
        if (fd_ >= 0)
            ::close(fd_);
        fd_ = fd;
    }

private:
    int fd_ = -1;
};

// A mapping that unmaps itself.
class Mapping {
public:
    Mapping(int fd, size_t len, int prot, int flags) : len_(len)
    {
        void* p = ::mmap(nullptr, len, prot, flags, fd, 0);
        addr_ = p == MAP_FAILED ? nullptr : static_cast<char*>(p);
    }
    Mapping(const Mapping&) = delete;
    Mapping& operator=(const Mapping&) = delete;
    ~Mapping()
    {
        if (addr_)
            ::munmap(addr_, len_);
    }
    char* data() const noexcept { return addr_; }
    size_t size() const noexcept { return len_; }
    explicit operator bool() const noexcept { return addr_ != nullptr; }
    // Copies the mapped bytes out (touching every page, so they fault in).
    std::string bytes(size_t off, size_t n) const
    {
        std::string s(n, '\0');
        const volatile char* p = addr_ + off;
        for (size_t i = 0; i < n; ++i)
            s[i] = p[i];
        return s;
    }

private:
    char* addr_ = nullptr;
    size_t len_ = 0;
};

size_t page_size()
{
    return static_cast<size_t>(::sysconf(_SC_PAGESIZE));
}

// Writes dirty pages back and drops clean page cache, dentries and inodes, so
// the next read of an unmapped page has to reach the filesystem.
void drop_caches()
{
    ::sync();
    std::ofstream out("/proc/sys/vm/drop_caches");
    out << "3";
    out.flush();
    ASSERT_TRUE(out.good()) << "echo 3 > /proc/sys/vm/drop_caches failed";
}

std::string pread_all(int fd, size_t len, off_t off = 0)
{
    std::string s(len, '\0');
    size_t done = 0;
    while (done < len) {
        ssize_t n = ::pread(fd, s.data() + done, len - done, off + static_cast<off_t>(done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        done += static_cast<size_t>(n);
    }
    s.resize(done);
    return s;
}

void pwrite_all(int fd, const std::string& data, off_t off)
{
    ASSERT_EQ(::pwrite(fd, data.data(), data.size(), off), static_cast<ssize_t>(data.size()))
        << "pwrite at " << off << ": " << strerror(errno);
}

// Describes where two equal-length strings first differ (short, for failures).
std::string first_difference(const std::string& got, const std::string& want)
{
    if (got.size() != want.size())
        return "size " + std::to_string(got.size()) + " != expected " + std::to_string(want.size());
    for (size_t i = 0; i < got.size(); ++i)
        if (got[i] != want[i]) {
            std::ostringstream o;
            o << "first difference at byte " << i << ": got 0x" << std::hex
              << static_cast<int>(static_cast<unsigned char>(got[i])) << " ('" << got[i] << "'), expected '"
              << want[i] << "'";
            return o.str();
        }
    return "equal";
}

#define EXPECT_BYTES(got, want) EXPECT_TRUE((got) == (want)) << first_difference((got), (want))

// The /proc/self/maps line of the mapping that starts at addr.
struct MapsEntry {
    bool found = false;
    unsigned dev_major = 0, dev_minor = 0;
    unsigned long long inode = 0;
    std::string path;
    std::string line;
};

MapsEntry maps_entry(const void* addr)
{
    MapsEntry e;
    std::ifstream in("/proc/self/maps");
    std::string line;
    auto want = reinterpret_cast<uintptr_t>(addr);
    while (std::getline(in, line)) {
        uintptr_t start = 0, end = 0;
        char perms[8] = {};
        unsigned long long offset = 0, inode = 0;
        unsigned maj = 0, min = 0;
        int consumed = 0;
        if (std::sscanf(line.c_str(), "%" SCNxPTR "-%" SCNxPTR " %7s %llx %x:%x %llu %n", &start, &end, perms,
                        &offset, &maj, &min, &inode, &consumed)
            < 7)
            continue;
        if (start != want)
            continue;
        e.found = true;
        e.dev_major = maj;
        e.dev_minor = min;
        e.inode = inode;
        e.path = line.substr(static_cast<size_t>(consumed));
        e.line = line;
        break;
    }
    return e;
}

class MappingTest : public OverlayTest {};

// (a) A MAP_SHARED PROT_READ mapping of a lower file sees bytes written through
// another O_RDWR fd, whose open/write copied the file up.
TEST_F(MappingTest, SharedReadMappingSeesWritesAfterCopyUp)
{
    const size_t pg = page_size();
    const size_t len = 3 * pg;
    write_file(lower(0, "f"), std::string(len, 'a'));
    mount();

    Fd ro(::open(mnt("f").c_str(), O_RDONLY | O_CLOEXEC));
    ASSERT_GE(ro.get(), 0) << strerror(errno);
    Mapping m(ro.get(), len, PROT_READ, MAP_SHARED);
    ASSERT_TRUE(m) << "mmap: " << strerror(errno);
    ASSERT_EQ(m.bytes(0, len), std::string(len, 'a')); // every page faulted in from the lower file
    EXPECT_FALSE(exists(upper("f"))) << "a read-only open/mmap must not copy up";

    {
        Fd rw(::open(mnt("f").c_str(), O_RDWR | O_CLOEXEC));
        ASSERT_GE(rw.get(), 0) << strerror(errno);
        pwrite_all(rw.get(), "BBBB", static_cast<off_t>(pg + 10));
        pwrite_all(rw.get(), std::string(pg, 'C'), static_cast<off_t>(2 * pg));
        EXPECT_EQ(m.bytes(pg + 10, 4), "BBBB") << "mapping does not see a write made after copy-up";
        EXPECT_BYTES(m.bytes(2 * pg, pg), std::string(pg, 'C'));
        EXPECT_BYTES(m.bytes(0, pg), std::string(pg, 'a'));
        ASSERT_EQ(::fsync(rw.get()), 0) << strerror(errno);
    }
    ASSERT_TRUE(exists(upper("f"))) << "writing through the mount did not copy the file up";

    std::string want(len, 'a');
    want.replace(pg + 10, 4, "BBBB");
    want.replace(2 * pg, pg, std::string(pg, 'C'));
    EXPECT_BYTES(read_file(upper("f")), want);
    EXPECT_BYTES(read_file(lower(0, "f")), std::string(len, 'a')) << "the lower file changed";

    // Throw the mapped pages away and let them fault in again: the refault
    // goes through the handle opened on the lower file before the copy-up.
    ASSERT_EQ(::madvise(m.data(), len, MADV_DONTNEED), 0) << strerror(errno);
    drop_caches();
    EXPECT_BYTES(m.bytes(0, len), want) << "(after MADV_DONTNEED + drop_caches)";
}

// (a) The same, with the copy-up and the write done by another process.
TEST_F(MappingTest, SharedReadMappingSeesWritesOfAnotherProcess)
{
    const size_t pg = page_size();
    const size_t len = 2 * pg;
    ::mkdir(lower(1, "d").c_str(), 0755);
    write_file(lower(1, "d/f"), std::string(len, 'a')); // in the bottom lower, parent not in upper
    mount();

    Fd ro(::open(mnt("d/f").c_str(), O_RDONLY | O_CLOEXEC));
    ASSERT_GE(ro.get(), 0) << strerror(errno);
    Mapping m(ro.get(), len, PROT_READ, MAP_SHARED);
    ASSERT_TRUE(m) << "mmap: " << strerror(errno);
    ASSERT_EQ(m.bytes(0, len), std::string(len, 'a'));

    std::string path = mnt("d/f");
    std::string z(pg, 'Z'); // allocated before the fork
    pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
        int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
        if (fd < 0)
            ::_exit(2);
        if (::pwrite(fd, z.data(), z.size(), static_cast<off_t>(pg)) != static_cast<ssize_t>(z.size()))
            ::_exit(3);
        if (::close(fd) != 0)
            ::_exit(4);
        ::_exit(0);
    }
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "writer child failed, status " << status;

    ASSERT_TRUE(exists(upper("d/f"))) << "the child's write did not copy the file up";
    EXPECT_BYTES(m.bytes(pg, pg), std::string(pg, 'Z')) << "mapping does not see another process's write";
    EXPECT_BYTES(m.bytes(0, pg), std::string(pg, 'a'));

    ASSERT_EQ(::madvise(m.data(), len, MADV_DONTNEED), 0) << strerror(errno);
    drop_caches();
    EXPECT_BYTES(m.bytes(pg, pg), std::string(pg, 'Z')) << "(after MADV_DONTNEED + drop_caches)";
    EXPECT_BYTES(m.bytes(0, pg), std::string(pg, 'a')) << "(after MADV_DONTNEED + drop_caches)";
}

// (b) An O_RDONLY fd opened before the copy-up reads the data written after it,
// from the page cache and, after drop_caches, from the filesystem.
TEST_F(MappingTest, ReadOnlyFdOpenedBeforeCopyUpReadsNewData)
{
    const std::string old_data(10000, 'o');
    write_file(lower(0, "g"), old_data);
    mount();

    Fd ro(::open(mnt("g").c_str(), O_RDONLY | O_CLOEXEC));
    ASSERT_GE(ro.get(), 0) << strerror(errno);
    ASSERT_EQ(pread_all(ro.get(), old_data.size() + 100), old_data);

    std::string want = old_data;
    want.replace(0, 7, "NEWDATA");
    want += std::string(2000, 'n');
    {
        Fd rw(::open(mnt("g").c_str(), O_RDWR | O_CLOEXEC));
        ASSERT_GE(rw.get(), 0) << strerror(errno);
        pwrite_all(rw.get(), "NEWDATA", 0);
        pwrite_all(rw.get(), std::string(2000, 'n'), static_cast<off_t>(old_data.size()));
        ASSERT_EQ(::fsync(rw.get()), 0) << strerror(errno);
    }
    ASSERT_TRUE(exists(upper("g")));

    EXPECT_BYTES(pread_all(ro.get(), want.size() + 100), want) << "(old fd, page cache)";

    drop_caches();
    struct stat st {};
    ASSERT_EQ(::fstat(ro.get(), &st), 0);
    EXPECT_EQ(st.st_size, static_cast<off_t>(want.size())) << "fstat of the old fd after copy-up";
    EXPECT_BYTES(pread_all(ro.get(), want.size() + 100), want) << "(old fd, after drop_caches)";
    EXPECT_BYTES(read_file(lower(0, "g")), old_data) << "the lower file changed";
}

// (b) The same when the other fd copies up with O_TRUNC: the old fd sees the
// shorter file, not the lower data past its end.
TEST_F(MappingTest, ReadOnlyFdSeesTruncatingCopyUp)
{
    const std::string old_data(20000, 'o');
    write_file(lower(1, "t"), old_data);
    mount();

    Fd ro(::open(mnt("t").c_str(), O_RDONLY | O_CLOEXEC));
    ASSERT_GE(ro.get(), 0) << strerror(errno);
    ASSERT_EQ(pread_all(ro.get(), 100), std::string(100, 'o'));
    {
        Fd w(::open(mnt("t").c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC));
        ASSERT_GE(w.get(), 0) << strerror(errno);
        pwrite_all(w.get(), "short", 0);
        ASSERT_EQ(::fsync(w.get()), 0) << strerror(errno);
    }
    EXPECT_EQ(pread_all(ro.get(), 100), "short") << "(old fd, page cache)";
    drop_caches();
    struct stat st {};
    ASSERT_EQ(::fstat(ro.get(), &st), 0);
    EXPECT_EQ(st.st_size, 5);
    EXPECT_EQ(pread_all(ro.get(), 100), "short") << "(old fd, after drop_caches)";
    EXPECT_EQ(pread_all(ro.get(), 100, 10000), "") << "old fd reads lower data past the new end";
}

// (c) /proc/PID/maps names the overlay path, before and after copy-up.
TEST_F(MappingTest, ProcMapsNamesOverlayPath)
{
    const size_t pg = page_size();
    write_file(lower(0, "m"), std::string(pg, 'm'));
    mount();
    write_file(mnt("new"), std::string(pg, 'n')); // upper-only

    struct stat mst = lstat_of(mnt("m"));
    Fd fd(::open(mnt("m").c_str(), O_RDONLY | O_CLOEXEC));
    ASSERT_GE(fd.get(), 0) << strerror(errno);
    Mapping m(fd.get(), pg, PROT_READ, MAP_SHARED);
    ASSERT_TRUE(m) << strerror(errno);

    MapsEntry e = maps_entry(m.data());
    ASSERT_TRUE(e.found) << "no /proc/self/maps line for the mapping";
    EXPECT_EQ(e.path, mnt("m")) << e.line;
    EXPECT_EQ(e.inode, static_cast<unsigned long long>(mst.st_ino)) << e.line;
    EXPECT_EQ(e.dev_major, major(mst.st_dev)) << e.line;
    EXPECT_EQ(e.dev_minor, minor(mst.st_dev)) << e.line;

    {
        Fd rw(::open(mnt("m").c_str(), O_RDWR | O_CLOEXEC));
        ASSERT_GE(rw.get(), 0) << strerror(errno);
        pwrite_all(rw.get(), "copied", 0);
    }
    ASSERT_TRUE(exists(upper("m")));
    e = maps_entry(m.data());
    ASSERT_TRUE(e.found);
    EXPECT_EQ(e.path, mnt("m")) << "after copy-up: " << e.line;
    EXPECT_EQ(e.inode, static_cast<unsigned long long>(mst.st_ino)) << "after copy-up: " << e.line;

    Fd nfd(::open(mnt("new").c_str(), O_RDONLY | O_CLOEXEC));
    ASSERT_GE(nfd.get(), 0) << strerror(errno);
    Mapping n(nfd.get(), pg, PROT_READ, MAP_SHARED);
    ASSERT_TRUE(n) << strerror(errno);
    e = maps_entry(n.data());
    ASSERT_TRUE(e.found);
    EXPECT_EQ(e.path, mnt("new")) << e.line;
}

// (d) A MAP_PRIVATE mapping keeps its private (copy-on-written) pages after
// the file is copied up and rewritten through another fd, and its private
// changes never reach the file.
TEST_F(MappingTest, PrivateMappingKeepsPrivateCopy)
{
    const size_t pg = page_size();
    const size_t len = 2 * pg;
    write_file(lower(0, "p"), std::string(len, 'p'));
    mount();

    Fd ro(::open(mnt("p").c_str(), O_RDONLY | O_CLOEXEC));
    ASSERT_GE(ro.get(), 0) << strerror(errno);
    Mapping m(ro.get(), len, PROT_READ | PROT_WRITE, MAP_PRIVATE);
    ASSERT_TRUE(m) << strerror(errno);
    ASSERT_EQ(m.bytes(0, len), std::string(len, 'p'));
    std::memset(m.data(), 'X', pg); // page 0 becomes a private copy

    {
        Fd rw(::open(mnt("p").c_str(), O_RDWR | O_CLOEXEC));
        ASSERT_GE(rw.get(), 0) << strerror(errno);
        pwrite_all(rw.get(), std::string(len, 'W'), 0);
        ASSERT_EQ(::fsync(rw.get()), 0) << strerror(errno);
    }
    EXPECT_BYTES(m.bytes(0, pg), std::string(pg, 'X')) << "private page lost after copy-up + write";
    EXPECT_BYTES(pread_all(ro.get(), len + 10), std::string(len, 'W')) << "file content via read(2)";

    drop_caches();
    EXPECT_BYTES(m.bytes(0, pg), std::string(pg, 'X')) << "private page lost after drop_caches";
    EXPECT_BYTES(read_file(mnt("p")), std::string(len, 'W')) << "private changes leaked into the file";
    EXPECT_BYTES(read_file(upper("p")), std::string(len, 'W'));
    EXPECT_BYTES(read_file(lower(0, "p")), std::string(len, 'p')) << "the lower file changed";
}

// st_ino and the file identity do not change across copy-up: the old fd, a new
// fd and the path agree before and after, also after the kernel forgot the
// dentry (drop_caches); the same for a directory copied up as a parent.
TEST_F(MappingTest, InodeStableAcrossCopyUp)
{
    ::mkdir(lower(1, "dir").c_str(), 0755);
    write_file(lower(1, "dir/i"), "identity");
    mount();

    struct stat before = lstat_of(mnt("dir/i"));
    struct stat dir_before = lstat_of(mnt("dir"));
    Fd old_fd(::open(mnt("dir/i").c_str(), O_RDONLY | O_CLOEXEC));
    ASSERT_GE(old_fd.get(), 0) << strerror(errno);
    Fd old_dir(::open(mnt("dir").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    ASSERT_GE(old_dir.get(), 0) << strerror(errno);
    struct stat st {};
    ASSERT_EQ(::fstat(old_fd.get(), &st), 0);
    ASSERT_EQ(st.st_ino, before.st_ino);

    Fd rw(::open(mnt("dir/i").c_str(), O_RDWR | O_APPEND | O_CLOEXEC));
    ASSERT_GE(rw.get(), 0) << strerror(errno);
    ASSERT_EQ(::write(rw.get(), "+", 1), 1) << strerror(errno);
    ASSERT_EQ(::fsync(rw.get()), 0) << strerror(errno);
    ASSERT_TRUE(exists(upper("dir/i"))) << "no copy-up happened";

    struct stat s_old {}, s_new {};
    ASSERT_EQ(::fstat(old_fd.get(), &s_old), 0);
    ASSERT_EQ(::fstat(rw.get(), &s_new), 0);
    EXPECT_EQ(s_old.st_ino, before.st_ino) << "old fd's st_ino changed across copy-up";
    EXPECT_EQ(s_new.st_ino, before.st_ino) << "new fd's st_ino differs from the pre-copy-up one";
    EXPECT_EQ(s_old.st_dev, s_new.st_dev);
    EXPECT_EQ(s_old.st_size, 9) << "old fd does not see the appended byte";
    EXPECT_EQ(lstat_of(mnt("dir/i")).st_ino, before.st_ino);

    struct stat d {};
    ASSERT_EQ(::fstat(old_dir.get(), &d), 0);
    EXPECT_EQ(d.st_ino, dir_before.st_ino) << "parent dir's st_ino changed across its copy-up";

    rw.reset();
    old_fd.reset();
    old_dir.reset();
    drop_caches();
    EXPECT_EQ(lstat_of(mnt("dir/i")).st_ino, before.st_ino) << "st_ino changed after the kernel forgot the inode";
    EXPECT_EQ(lstat_of(mnt("dir")).st_ino, dir_before.st_ino) << "dir st_ino changed after forget";
    EXPECT_EQ(read_file(mnt("dir/i")), "identity+");
}

// A write through a MAP_SHARED writable mapping is visible to read(2) on
// other fds (one opened before the copy-up, one after), before and after
// msync, and lands in the upper file.
TEST_F(MappingTest, SharedWritableMappingThenRead)
{
    const size_t pg = page_size();
    const size_t len = 2 * pg;
    write_file(lower(1, "w"), std::string(len, 'l'));
    mount();

    Fd before(::open(mnt("w").c_str(), O_RDONLY | O_CLOEXEC));
    ASSERT_GE(before.get(), 0) << strerror(errno);
    ASSERT_EQ(pread_all(before.get(), len), std::string(len, 'l'));

    std::string want(len, 'l');
    want.replace(100, 12, "mapped write");
    want.replace(pg + 200, 6, "page 2");
    {
        Fd rw(::open(mnt("w").c_str(), O_RDWR | O_CLOEXEC));
        ASSERT_GE(rw.get(), 0) << strerror(errno);
        Mapping m(rw.get(), len, PROT_READ | PROT_WRITE, MAP_SHARED);
        ASSERT_TRUE(m) << strerror(errno);
        std::memcpy(m.data() + 100, "mapped write", 12);
        std::memcpy(m.data() + pg + 200, "page 2", 6);

        Fd other(::open(mnt("w").c_str(), O_RDONLY | O_CLOEXEC));
        ASSERT_GE(other.get(), 0) << strerror(errno);
        EXPECT_BYTES(pread_all(other.get(), len + 10), want) << "(new fd, before msync)";
        EXPECT_BYTES(pread_all(before.get(), len + 10), want) << "(fd opened before copy-up, before msync)";
        ASSERT_EQ(::msync(m.data(), len, MS_SYNC), 0) << strerror(errno);
    }
    ASSERT_TRUE(exists(upper("w")));
    EXPECT_BYTES(read_file(upper("w")), want) << "msync'ed data is not in the upper file";

    drop_caches();
    EXPECT_BYTES(pread_all(before.get(), len + 10), want) << "(fd opened before copy-up, after drop_caches)";
    EXPECT_BYTES(read_file(mnt("w")), want) << "(new open, after drop_caches)";
    EXPECT_BYTES(read_file(lower(1, "w")), std::string(len, 'l')) << "the lower file changed";
}

// A mapping and an fd opened on a lower file follow it through a rename
// (which copies it up) and see a write made through the new name.
TEST_F(MappingTest, MappingAndFdFollowRenameOfLowerFile)
{
    const size_t pg = page_size();
    const size_t len = 2 * pg;
    write_file(lower(1, "r"), std::string(len, 'r'));
    mount();

    Fd ro(::open(mnt("r").c_str(), O_RDONLY | O_CLOEXEC));
    ASSERT_GE(ro.get(), 0) << strerror(errno);
    Mapping m(ro.get(), len, PROT_READ, MAP_SHARED);
    ASSERT_TRUE(m) << strerror(errno);
    ASSERT_EQ(m.bytes(0, len), std::string(len, 'r'));
    struct stat before {};
    ASSERT_EQ(::fstat(ro.get(), &before), 0);

    ASSERT_EQ(::rename(mnt("r").c_str(), mnt("r2").c_str()), 0) << strerror(errno);
    EXPECT_FALSE(exists(mnt("r")));
    {
        Fd rw(::open(mnt("r2").c_str(), O_RDWR | O_CLOEXEC));
        ASSERT_GE(rw.get(), 0) << strerror(errno);
        pwrite_all(rw.get(), std::string(pg, 'Q'), static_cast<off_t>(pg));
        ASSERT_EQ(::fsync(rw.get()), 0) << strerror(errno);
    }
    EXPECT_BYTES(m.bytes(pg, pg), std::string(pg, 'Q')) << "mapping does not see a write through the new name";
    EXPECT_BYTES(pread_all(ro.get(), len + 1), std::string(pg, 'r') + std::string(pg, 'Q'));
    struct stat after {};
    ASSERT_EQ(::fstat(ro.get(), &after), 0);
    EXPECT_EQ(after.st_ino, before.st_ino) << "st_ino changed across the rename";
    EXPECT_EQ(lstat_of(mnt("r2")).st_ino, before.st_ino);
    MapsEntry e = maps_entry(m.data());
    ASSERT_TRUE(e.found);
    EXPECT_EQ(e.path, mnt("r2")) << e.line;

    ASSERT_EQ(::madvise(m.data(), len, MADV_DONTNEED), 0) << strerror(errno);
    drop_caches();
    EXPECT_BYTES(m.bytes(0, len), std::string(pg, 'r') + std::string(pg, 'Q')) << "(after drop_caches)";
    EXPECT_BYTES(read_file(lower(1, "r")), std::string(len, 'r')) << "the lower file changed";
}

// Unlinking a lower file (a whiteout) leaves fds and mappings opened on it
// working; fstat of the open, unlinked file shows st_nlink 0 (DESIGN.md §10).
TEST_F(MappingTest, FdAndMappingSurviveUnlinkOfLowerFile)
{
    const size_t pg = page_size();
    write_file(lower(0, "u"), std::string(pg, 'u'));
    mount();

    Fd ro(::open(mnt("u").c_str(), O_RDONLY | O_CLOEXEC));
    ASSERT_GE(ro.get(), 0) << strerror(errno);
    Mapping m(ro.get(), pg, PROT_READ, MAP_SHARED);
    ASSERT_TRUE(m) << strerror(errno);
    ASSERT_EQ(m.bytes(0, pg), std::string(pg, 'u'));

    ASSERT_EQ(::unlink(mnt("u").c_str()), 0) << strerror(errno);
    EXPECT_FALSE(exists(mnt("u")));
    struct stat st {};
    ASSERT_EQ(::fstat(ro.get(), &st), 0) << strerror(errno);
    EXPECT_EQ(st.st_nlink, 0u) << "fstat of an open, unlinked file";

    ASSERT_EQ(::madvise(m.data(), pg, MADV_DONTNEED), 0) << strerror(errno);
    drop_caches();
    EXPECT_BYTES(m.bytes(0, pg), std::string(pg, 'u')) << "mapping lost its data after the unlink";
    EXPECT_BYTES(pread_all(ro.get(), pg + 1), std::string(pg, 'u')) << "old fd lost its data after the unlink";
    EXPECT_BYTES(read_file(lower(0, "u")), std::string(pg, 'u'));
}

// A metadata change copies the file up first (chmod), then a data write
// follows: the mapping and the old fd see the data, the old fd the new mode.
TEST_F(MappingTest, MappingSeesWriteAfterMetadataCopyUp)
{
    const size_t pg = page_size();
    write_file(lower(0, "c"), std::string(pg, 'c'));
    mount();

    Fd ro(::open(mnt("c").c_str(), O_RDONLY | O_CLOEXEC));
    ASSERT_GE(ro.get(), 0) << strerror(errno);
    Mapping m(ro.get(), pg, PROT_READ, MAP_SHARED);
    ASSERT_TRUE(m) << strerror(errno);
    ASSERT_EQ(m.bytes(0, pg), std::string(pg, 'c'));

    ASSERT_EQ(::chmod(mnt("c").c_str(), 0600), 0) << strerror(errno);
    struct stat st {};
    ASSERT_EQ(::fstat(ro.get(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0600u) << "old fd does not see the chmod";
    {
        Fd rw(::open(mnt("c").c_str(), O_RDWR | O_CLOEXEC));
        ASSERT_GE(rw.get(), 0) << strerror(errno);
        pwrite_all(rw.get(), "after chmod", 0);
        ASSERT_EQ(::fsync(rw.get()), 0) << strerror(errno);
    }
    std::string want = std::string(pg, 'c').replace(0, 11, "after chmod");
    EXPECT_BYTES(m.bytes(0, pg), want);
    ASSERT_EQ(::madvise(m.data(), pg, MADV_DONTNEED), 0) << strerror(errno);
    drop_caches();
    EXPECT_BYTES(m.bytes(0, pg), want) << "(after drop_caches)";
    EXPECT_BYTES(pread_all(ro.get(), pg + 1), want) << "(old fd, after drop_caches)";
    EXPECT_BYTES(read_file(upper("c")), want);
}

// A mapping of a lower file sees the file grow when truncate(2) on the path
// copies it up and extends it: the new page reads as zeros, no SIGBUS.
TEST_F(MappingTest, MappingSeesTruncateExtendByPath)
{
    const size_t pg = page_size();
    write_file(lower(0, "x"), std::string(pg, 'x'));
    mount();

    Fd ro(::open(mnt("x").c_str(), O_RDONLY | O_CLOEXEC));
    ASSERT_GE(ro.get(), 0) << strerror(errno);
    Mapping m(ro.get(), 2 * pg, PROT_READ, MAP_SHARED); // page 1 is past EOF for now: not touched
    ASSERT_TRUE(m) << strerror(errno);
    ASSERT_EQ(m.bytes(0, pg), std::string(pg, 'x'));

    ASSERT_EQ(::truncate(mnt("x").c_str(), static_cast<off_t>(2 * pg)), 0) << strerror(errno);
    ASSERT_TRUE(exists(upper("x")));
    struct stat st {};
    ASSERT_EQ(::fstat(ro.get(), &st), 0);
    ASSERT_EQ(st.st_size, static_cast<off_t>(2 * pg)) << "old fd does not see the new size";
    EXPECT_BYTES(m.bytes(0, pg), std::string(pg, 'x'));
    EXPECT_BYTES(m.bytes(pg, pg), std::string(pg, '\0'));
}

// Two names of one lower inode (a hard link in the lower) are two files once
// one is copied up, as in kernel overlayfs without index: a write through one
// name must not reach the other's mapping or reads.
TEST_F(MappingTest, LowerHardLinkNamesDoNotShareCopyUpWrites)
{
    const size_t pg = page_size();
    write_file(lower(0, "h1"), std::string(pg, 'h'));
    ASSERT_EQ(::link(lower(0, "h1").c_str(), lower(0, "h2").c_str()), 0) << strerror(errno);
    mount();

    Fd ro(::open(mnt("h2").c_str(), O_RDONLY | O_CLOEXEC));
    ASSERT_GE(ro.get(), 0) << strerror(errno);
    Mapping m(ro.get(), pg, PROT_READ, MAP_SHARED);
    ASSERT_TRUE(m) << strerror(errno);
    ASSERT_EQ(m.bytes(0, pg), std::string(pg, 'h'));
    {
        Fd rw(::open(mnt("h1").c_str(), O_RDWR | O_CLOEXEC));
        ASSERT_GE(rw.get(), 0) << strerror(errno);
        pwrite_all(rw.get(), std::string(pg, '1'), 0);
        ASSERT_EQ(::fsync(rw.get()), 0) << strerror(errno);
    }
    EXPECT_BYTES(read_file(mnt("h1")), std::string(pg, '1'));
    EXPECT_BYTES(m.bytes(0, pg), std::string(pg, 'h')) << "h2's mapping sees a write made through h1";
    EXPECT_BYTES(read_file(mnt("h2")), std::string(pg, 'h')) << "h2 shows data written through h1";
    ASSERT_EQ(::madvise(m.data(), pg, MADV_DONTNEED), 0) << strerror(errno);
    drop_caches();
    EXPECT_BYTES(m.bytes(0, pg), std::string(pg, 'h')) << "(after drop_caches)";
    EXPECT_BYTES(pread_all(ro.get(), pg + 1), std::string(pg, 'h')) << "(old fd of h2, after drop_caches)";
    EXPECT_BYTES(read_file(lower(0, "h2")), std::string(pg, 'h')) << "the lower file changed";
}

} // namespace
} // namespace layerd::test
