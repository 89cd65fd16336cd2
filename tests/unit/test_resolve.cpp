// SPDX-License-Identifier: LGPL-2.1-or-later
#include "resolve.hpp"
#include "unique_fd.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

using namespace layerd;

namespace {

struct TempDir {
    TempDir()
    {
        char tmpl[] = "/tmp/layerd-unit.XXXXXX";
        path = mkdtemp(tmpl);
    }
    ~TempDir() { std::system(("rm -rf '" + path + "'").c_str()); }
    std::string path;
};

} // namespace

TEST(Resolve, ValidNames)
{
    EXPECT_TRUE(is_valid_name("a"));
    EXPECT_TRUE(is_valid_name(std::string(255, 'x')));
    EXPECT_FALSE(is_valid_name(""));
    EXPECT_FALSE(is_valid_name("."));
    EXPECT_FALSE(is_valid_name(".."));
    EXPECT_FALSE(is_valid_name("a/b"));
    EXPECT_FALSE(is_valid_name(std::string_view("a\0b", 3)));
}

TEST(Resolve, NeverLeavesTheLayer)
{
    TempDir t;
    ASSERT_EQ(::mkdir((t.path + "/layer").c_str(), 0755), 0);
    ASSERT_EQ(::mkdir((t.path + "/layer/sub").c_str(), 0755), 0);
    ASSERT_EQ(::symlink("/etc", (t.path + "/layer/abs").c_str()), 0);
    ASSERT_EQ(::symlink("../..", (t.path + "/layer/sub/up").c_str()), 0);
    UniqueFd layer(::open((t.path + "/layer").c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    ASSERT_TRUE(layer);

    // Symlinks are never followed, absolute or relative.
    EXPECT_EQ(open_beneath(layer.get(), "abs/passwd", O_RDONLY), -ELOOP);
    EXPECT_EQ(open_beneath(layer.get(), "sub/up/x", O_RDONLY), -ELOOP);
    // ".." cannot climb out of the layer.
    EXPECT_EQ(open_beneath(layer.get(), "../layer", O_PATH), -EXDEV);
    EXPECT_EQ(open_beneath(layer.get(), "/etc", O_PATH), -EXDEV);
    // A symlink itself can be opened as an O_PATH object.
    int fd = open_beneath(layer.get(), "abs", O_PATH);
    ASSERT_GE(fd, 0);
    struct stat st;
    EXPECT_EQ(stat_fd(fd, &st), 0);
    EXPECT_TRUE(S_ISLNK(st.st_mode));
    ::close(fd);
    // Multi-component paths inside the layer resolve.
    fd = open_beneath(layer.get(), "sub", O_PATH | O_DIRECTORY);
    EXPECT_GE(fd, 0);
    ::close(fd);
}

TEST(Resolve, ReopenPathFd)
{
    TempDir t;
    std::string f = t.path + "/f";
    int w = ::open(f.c_str(), O_WRONLY | O_CREAT, 0644);
    ASSERT_EQ(::write(w, "hello", 5), 5);
    ::close(w);
    UniqueFd p(::open(f.c_str(), O_PATH | O_CLOEXEC));
    int r = reopen_fd(p.get(), O_RDONLY);
    ASSERT_GE(r, 0);
    char buf[8] = {};
    EXPECT_EQ(::read(r, buf, sizeof buf), 5);
    EXPECT_STREQ(buf, "hello");
    ::close(r);
}
