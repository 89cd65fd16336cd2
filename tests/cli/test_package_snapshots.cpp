// SPDX-License-Identifier: LGPL-2.1-or-later
// layerctl package-snapshot without a bus: which pre snapshot a post one
// pairs with, and the description made of a command line.
#include "package_snapshots.hpp"

#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace layerd::cli {
namespace {

SnapshotRecord pre(uint32_t number, const std::string& tag)
{
    SnapshotRecord s;
    s.number = number;
    s.type = "pre";
    if (!tag.empty())
        s.userdata[std::string(package_tag_key)] = tag;
    return s;
}

SnapshotRecord post(uint32_t number, uint32_t of)
{
    SnapshotRecord s;
    s.number = number;
    s.type = "post";
    s.pre = of;
    return s;
}

SnapshotRecord single(uint32_t number, const std::string& tag)
{
    SnapshotRecord s = pre(number, tag);
    s.type = "single";
    return s;
}

TEST(PreToPair, TheNewestUnpairedPreOfTheTag)
{
    EXPECT_EQ(pre_to_pair({}, "1-2"), std::nullopt);
    EXPECT_EQ(pre_to_pair({pre(1, "1-2")}, "1-2"), 1u);
    // Another operation's pre, or one with no tag, never pairs.
    EXPECT_EQ(pre_to_pair({pre(1, "7-8"), pre(2, "")}, "1-2"), std::nullopt);
    // A pre that has its post already is done with.
    EXPECT_EQ(pre_to_pair({pre(1, "1-2"), post(2, 1)}, "1-2"), std::nullopt);
    // apt may run dpkg twice in one operation (same tag): each post takes
    // the newest pre still open, so the pairs nest as the runs did.
    EXPECT_EQ(pre_to_pair({pre(1, "1-2"), post(2, 1), pre(3, "1-2")}, "1-2"), 3u);
    EXPECT_EQ(pre_to_pair({pre(1, "1-2"), pre(3, "1-2"), post(4, 3)}, "1-2"), 1u);
    // Newest by number, whatever the order of the list.
    EXPECT_EQ(pre_to_pair({pre(9, "1-2"), pre(4, "1-2")}, "1-2"), 9u);
    // A single snapshot with the tag is no pre.
    EXPECT_EQ(pre_to_pair({single(5, "1-2")}, "1-2"), std::nullopt);
    // Interleaved operations keep to their own tags.
    EXPECT_EQ(pre_to_pair({pre(1, "1-2"), pre(2, "3-4"), post(3, 2)}, "1-2"), 1u);
}

TEST(PackageDescription, PlainCommandLinesStayAsTheyAre)
{
    EXPECT_EQ(package_description("apt-get install -y hello"), "apt-get install -y hello");
    EXPECT_EQ(package_description("apt install caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac"),
              "apt install caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac");
    EXPECT_EQ(package_description(""), "");
}

TEST(PackageDescription, ControlCharactersBecomeSpacesAndEndsAreTrimmed)
{
    EXPECT_EQ(package_description("apt install a\nb\tc "), "apt install a b c");
    EXPECT_EQ(package_description(std::string("dpkg\0-i\0x.deb\0", 14)), "dpkg -i x.deb");
    EXPECT_EQ(package_description("\n\t "), "");
    EXPECT_EQ(package_description("a\x7f"
                                  "b"),
              "a b");
}

TEST(PackageDescription, BytesThatAreNotUtf8BecomeTheReplacementCharacter)
{
    const std::string replacement = "\xef\xbf\xbd";
    EXPECT_EQ(package_description("apt install \xff"), "apt install " + replacement);
    // A truncated sequence, an overlong '/', a surrogate.
    for (const char* bad : {"x\xc3", "x\xc0\xaf", "x\xed\xa0\x80"}) {
        std::string out = package_description(bad);
        EXPECT_EQ(out.substr(0, 1), "x") << bad;
        EXPECT_NE(out.find(replacement), std::string::npos) << bad;
        EXPECT_EQ(out.find_first_of("\xc0\xc3\xed\xff"), std::string::npos) << bad; // none left
    }
}

TEST(PackageDescription, LongLinesAreCutAtACharacterBoundary)
{
    const std::string long_ascii(5000, 'a');
    std::string out = package_description(long_ascii);
    EXPECT_EQ(out.size(), max_description_bytes);
    EXPECT_EQ(out.substr(out.size() - 3), "...");
    EXPECT_EQ(package_description(std::string(max_description_bytes, 'b')), std::string(max_description_bytes, 'b'));

    // Two-byte characters: the cut never splits one.
    std::string accents;
    for (int i = 0; i < 3000; ++i)
        accents += "\xc3\xa9";
    out = package_description(accents, 10);
    EXPECT_EQ(out, "\xc3\xa9\xc3\xa9\xc3\xa9...");
    EXPECT_LE(package_description(accents).size(), max_description_bytes);
    // A limit shorter than the ellipsis still holds.
    EXPECT_EQ(package_description("abcdef", 2), "..");
}

} // namespace
} // namespace layerd::cli
