// SPDX-License-Identifier: LGPL-2.1-or-later
#include "copy_data.hpp"
#include "unique_fd.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

using namespace layerd;

namespace {

struct TempDir {
    TempDir()
    {
        char tmpl[] = "/var/tmp/layerd-unit.XXXXXX";
        path = mkdtemp(tmpl);
    }
    ~TempDir() { std::system(("rm -rf '" + path + "'").c_str()); }
    std::string path;
};

std::string contents(int fd, off_t size)
{
    std::string s(static_cast<size_t>(size), '\0');
    EXPECT_EQ(::pread(fd, s.data(), s.size(), 0), size);
    return s;
}

} // namespace

TEST(CopyData, SparseFileKeepsItsHolesAndBytes)
{
    TempDir t;
    UniqueFd src(::open((t.path + "/src").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
    ASSERT_TRUE(src);
    const off_t size = 64 << 20;
    ASSERT_EQ(::pwrite(src.get(), "head", 4, 0), 4);
    ASSERT_EQ(::pwrite(src.get(), "middle", 6, 32 << 20), 6);
    ASSERT_EQ(::ftruncate(src.get(), size), 0); // trailing hole

    UniqueFd dst(::open((t.path + "/dst").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
    ASSERT_EQ(copy_file_data(src.get(), dst.get(), size), 0);
    struct stat st;
    ASSERT_EQ(::fstat(dst.get(), &st), 0);
    EXPECT_EQ(st.st_size, size);
    EXPECT_LT(st.st_blocks * 512, 1 << 20) << "holes were filled";
    EXPECT_EQ(contents(dst.get(), size), contents(src.get(), size));
}

TEST(CopyData, EmptyAndLargeDenseFiles)
{
    TempDir t;
    UniqueFd src(::open((t.path + "/src").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
    std::string data(3 << 20, '\0');
    for (size_t i = 0; i < data.size(); ++i)
        data[i] = static_cast<char>(i * 7 + i / 4096);
    ASSERT_EQ(::write(src.get(), data.data(), data.size()), static_cast<ssize_t>(data.size()));
    UniqueFd dst(::open((t.path + "/dst").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
    ASSERT_EQ(copy_file_data(src.get(), dst.get(), static_cast<off_t>(data.size())), 0);
    EXPECT_EQ(contents(dst.get(), static_cast<off_t>(data.size())), data);

    UniqueFd empty(::open((t.path + "/empty").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
    EXPECT_EQ(copy_file_data(src.get(), empty.get(), 0), 0);
}

TEST(CopyData, XattrsFilteredByName)
{
    TempDir t;
    std::string a = t.path + "/a", b = t.path + "/b";
    ::close(::open(a.c_str(), O_WRONLY | O_CREAT, 0644));
    ::close(::open(b.c_str(), O_WRONLY | O_CREAT, 0644));
    if (::setxattr(a.c_str(), "user.keep", "1", 1, 0) != 0)
        GTEST_SKIP() << "no user xattrs on " << t.path;
    ASSERT_EQ(::setxattr(a.c_str(), "user.overlay.secret", "y", 1, 0), 0);
    UniqueFd fa(::open(a.c_str(), O_PATH | O_CLOEXEC)), fb(::open(b.c_str(), O_PATH | O_CLOEXEC));
    ASSERT_EQ(copy_xattrs(fa.get(), fb.get(), [](std::string_view n) { return !n.starts_with("user.overlay."); }), 0);
    char v[4];
    EXPECT_EQ(::getxattr(b.c_str(), "user.keep", v, sizeof v), 1);
    EXPECT_LT(::getxattr(b.c_str(), "user.overlay.secret", v, sizeof v), 0);
}
