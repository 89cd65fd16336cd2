// SPDX-License-Identifier: LGPL-2.1-or-later
#include "layer_set.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>

using namespace layerd;

namespace {

class LayerSetTest : public ::testing::Test {
protected:
    void SetUp() override
    {
        char tmpl[] = "/var/tmp/layerd-unit.XXXXXX";
        root = mkdtemp(tmpl);
        for (auto d : {"l0", "l1", "up", "wk", "mnt"})
            ASSERT_EQ(::mkdir((root + "/" + d).c_str(), 0755), 0);
    }
    void TearDown() override { std::system(("rm -rf '" + root + "'").c_str()); }

    LayerSetConfig config()
    {
        LayerSetConfig c;
        c.lowers = {root + "/l0", root + "/l1"};
        c.upper = root + "/up";
        c.work = root + "/wk";
        c.mountpoint = root + "/mnt";
        return c;
    }
    std::string error_of(const LayerSetConfig& c)
    {
        try {
            LayerSet::open(c);
        } catch (const LayerError& e) {
            return e.what();
        }
        return "";
    }
    std::string root;
};

} // namespace

TEST_F(LayerSetTest, OpensUpperFirstThenLowersTopFirst)
{
    LayerSet set = LayerSet::open(config());
    ASSERT_EQ(set.layers.size(), 3u);
    EXPECT_TRUE(set.layers[0]->writable);
    EXPECT_EQ(set.layers[1]->path, root + "/l0");
    EXPECT_EQ(set.layers[2]->path, root + "/l1");
    EXPECT_NE(set.upper(), nullptr);
    EXPECT_EQ(set.layers[1]->ino_prefix, 0u) << "one filesystem: real inode numbers";
    struct stat st;
    EXPECT_EQ(::stat((root + "/wk/work").c_str(), &st), 0);
}

TEST_F(LayerSetTest, ReadOnlyWithoutUpper)
{
    auto c = config();
    c.upper.reset();
    c.work.reset();
    LayerSet set = LayerSet::open(c);
    EXPECT_EQ(set.upper(), nullptr);
}

TEST_F(LayerSetTest, ErrorsNameThePathAndTheReason)
{
    auto c = config();
    c.lowers[1] = root + "/missing";
    EXPECT_EQ(error_of(c), "lowerdir '" + root + "/missing': No such file or directory");

    c = config();
    std::ofstream(root + "/file") << "x";
    c.lowers[0] = root + "/file";
    EXPECT_EQ(error_of(c), "lowerdir '" + root + "/file': Not a directory");

    c = config();
    c.work.reset();
    EXPECT_EQ(error_of(c), "upperdir '" + root + "/up': needs a workdir");

    c = config();
    ASSERT_EQ(::mkdir((root + "/l0/inner").c_str(), 0755), 0);
    c.upper = root + "/l0/inner";
    EXPECT_EQ(error_of(c), "upperdir '" + root + "/l0/inner': lies inside lowerdir '" + root + "/l0'");

    c = config();
    ASSERT_EQ(::mkdir((root + "/up/inner").c_str(), 0755), 0);
    c.lowers[1] = root + "/up/inner";
    EXPECT_EQ(error_of(c), "lowerdir '" + root + "/up/inner': lies inside upperdir '" + root + "/up'");

    c = config();
    ASSERT_EQ(::mkdir((root + "/up/w").c_str(), 0755), 0);
    c.work = root + "/up/w";
    EXPECT_EQ(error_of(c), "workdir '" + root + "/up/w': lies inside upperdir '" + root + "/up'");

    c = config();
    std::ofstream(root + "/mnt/occupied") << "x";
    EXPECT_EQ(error_of(c), "mountpoint '" + root + "/mnt': is not empty (use -o nonempty to mount over it)");
    c.allow_nonempty_mountpoint = true;
    EXPECT_EQ(error_of(c), "");
}

TEST_F(LayerSetTest, MountpointMayBeItsOwnLower)
{
    auto c = config();
    std::ofstream(root + "/l0/file") << "x";
    c.mountpoint = root + "/l0";
    EXPECT_EQ(error_of(c), "");
}

TEST_F(LayerSetTest, WorkLeftoversAreCleaned)
{
    ASSERT_EQ(::mkdir((root + "/wk/work").c_str(), 0700), 0);
    std::ofstream(root + "/wk/work/#lw1") << "half a copy";
    LayerSet::open(config());
    struct stat st;
    EXPECT_NE(::stat((root + "/wk/work/#lw1").c_str(), &st), 0);
}

TEST_F(LayerSetTest, VolatileMarkerBlocksTheNextMount)
{
    auto c = config();
    c.is_volatile = true;
    {
        LayerSet set = LayerSet::open(c); // marks, then "crashes"
    }
    EXPECT_NE(error_of(config()).find("volatile mount was not shut down cleanly"), std::string::npos);
    ::rmdir((root + "/wk/work/incompat/volatile").c_str());
    LayerSet set = LayerSet::open(c);
    EXPECT_EQ(set.clear_volatile_marker(), 0);
    EXPECT_EQ(error_of(config()), "");
}
