// SPDX-License-Identifier: LGPL-2.1-or-later
// The parts of layerctl that need no bus: --userdata and snapshot number
// parsing, the decoding of Diff lines, the tables, and the exit code for
// each D-Bus error name.
#include "arguments.hpp"
#include "diff_lines.hpp"
#include "exit_codes.hpp"
#include "snapshot_format.hpp"
#include "table.hpp"

#include <sysexits.h>

#include <cstdlib>
#include <ctime>
#include <functional>

#include <gtest/gtest.h>

namespace layerd::cli {
namespace {

// The code and message of the CliError F throws; code -1 if none.
std::pair<int, std::string> failure_of(const std::function<void()>& f)
{
    try {
        f();
    } catch (const CliError& e) {
        return {e.code(), e.what()};
    }
    return {-1, ""};
}

TEST(Userdata, PairsSplitAtTheFirstEquals)
{
    EXPECT_EQ(parse_userdata({}), Userdata{});
    EXPECT_EQ(parse_userdata({"a=b", "important=yes", "url=http://x/?q=1", "empty="}),
              (Userdata{{"a", "b"}, {"important", "yes"}, {"url", "http://x/?q=1"}, {"empty", ""}}));
    EXPECT_EQ(parse_userdata({"k= spaced value "}), (Userdata{{"k", " spaced value "}}));
}

TEST(Userdata, BadPairsAreUsageErrorsNamingThePair)
{
    auto [code, message] = failure_of([] { parse_userdata({"a=b", "novalue"}); });
    EXPECT_EQ(code, EX_USAGE);
    EXPECT_EQ(message, "userdata 'novalue' is not KEY=VALUE");
    std::tie(code, message) = failure_of([] { parse_userdata({"=v"}); });
    EXPECT_EQ(code, EX_USAGE);
    EXPECT_EQ(message, "userdata '=v' has an empty key");
    std::tie(code, message) = failure_of([] { parse_userdata({"k=1", "k=2"}); });
    EXPECT_EQ(code, EX_USAGE);
    EXPECT_EQ(message, "userdata key 'k' is given twice");
    EXPECT_EQ(failure_of([] { parse_userdata({""}); }).first, EX_USAGE);
}

TEST(SnapshotNumber, DecimalUpTo32Bits)
{
    EXPECT_EQ(parse_snapshot_number("0"), 0u);
    EXPECT_EQ(parse_snapshot_number("42"), 42u);
    EXPECT_EQ(parse_snapshot_number("007"), 7u);
    EXPECT_EQ(parse_snapshot_number("4294967295"), 4294967295u);
    for (const char* bad : {"", "-1", "+1", "1.0", "0x10", " 1", "1 ", "one", "4294967296", "99999999999999999999"})
        EXPECT_EQ(failure_of([&] { parse_snapshot_number(bad); }).first, EX_USAGE) << bad;
    EXPECT_EQ(failure_of([] { parse_snapshot_number("x", "--post"); }).second, "--post 'x' is not a number");
}

TEST(DiffLines, FlagsAndAPath)
{
    Change c = decode_diff_line("c..... /a.txt");
    EXPECT_EQ(c.flags, "c.....");
    EXPECT_EQ(c.path, "/a.txt");
    c = decode_diff_line("+..... /dir/with space/x");
    EXPECT_EQ(c.flags, "+.....");
    EXPECT_EQ(c.path, "/dir/with space/x");
    EXPECT_EQ(decode_diff_line("..ug.. /").path, "/");
}

TEST(DiffLines, BackslashesAndNewlinesAreDecoded)
{
    EXPECT_EQ(decode_diff_path("/a\\\\b"), "/a\\b");
    EXPECT_EQ(decode_diff_path("/line\\nbreak"), "/line\nbreak");
    EXPECT_EQ(decode_diff_path("/\\\\n"), "/\\n"); // a backslash, then an n
    EXPECT_EQ(decode_diff_path("/\\n\\\\\\n"), "/\n\\\n");
    EXPECT_EQ(decode_diff_line("-..... /\xc3\xa9t\xc3\xa9\\\\").path, "/\xc3\xa9t\xc3\xa9\\");
}

TEST(DiffLines, AnythingElseIsAProtocolError)
{
    for (const char* bad : {"", "c.....", "c..... ", "c.....x/a", "c.... /a", "c...... /a", "c..... a", "c\t.... /a",
                            "c..... /a\\", "c..... /a\\t", "c..... /a\\x41", "c..... /a\nb"})
        EXPECT_EQ(failure_of([&] { decode_diff_line(bad); }).first, EX_PROTOCOL) << bad;
}

TEST(DiffDecoder, LinesSplitAcrossChunksOfAnySize)
{
    const std::string stream = "+..... /new\nc..... /a\\nb\n-..... /gone\\\\\n";
    for (size_t chunk = 1; chunk <= stream.size(); ++chunk) {
        std::vector<std::string> got;
        DiffDecoder decoder([&](const Change& c) { got.push_back(c.flags + " " + c.path); });
        for (size_t i = 0; i < stream.size(); i += chunk)
            decoder.feed(std::string_view(stream).substr(i, chunk));
        decoder.finish();
        EXPECT_EQ(got, (std::vector<std::string>{"+..... /new", "c..... /a\nb", "-..... /gone\\"})) << chunk;
        EXPECT_EQ(decoder.lines(), 3u);
    }
}

TEST(DiffDecoder, ATruncatedLastLineIsAnError)
{
    DiffDecoder decoder([](const Change&) {});
    decoder.feed("+..... /a\n+..... /b");
    EXPECT_EQ(failure_of([&] { decoder.finish(); }).first, EX_PROTOCOL);
    DiffDecoder empty([](const Change&) { FAIL() << "no line expected"; });
    empty.feed("");
    empty.finish();
    EXPECT_EQ(empty.lines(), 0u);
}

TEST(Table, ColumnsAsWideAsTheirCellsNoTrailingBlanks)
{
    Table table({{"#", Align::right}, {"Type"}, {"Description"}});
    table.add({"1", "single", "first"});
    table.add({"10", "pre", ""});
    EXPECT_EQ(table.render(), "  # | Type   | Description\n"
                              "----+--------+------------\n"
                              "  1 | single | first\n"
                              " 10 | pre    |\n");
}

TEST(Table, WidthCountsCharactersNotBytes)
{
    Table table({{"Name"}, {"X"}});
    table.add({"\xc3\xa9t\xc3\xa9", "1"}); // "été": 3 characters, 5 bytes
    table.add({"ab", "2"});
    EXPECT_EQ(table.render(), " Name | X\n"
                              "------+--\n"
                              " \xc3\xa9t\xc3\xa9  | 1\n"
                              " ab   | 2\n");
}

TEST(Table, ControlCharactersCannotBreakARow)
{
    Table table({{"Description"}});
    table.add({"two\nlines\tand\x01"});
    EXPECT_EQ(table.render(), " Description\n"
                              "--------------------\n"
                              " two\\nlines\\tand\\x01\n");
    EXPECT_EQ(printable("plain"), "plain");
    EXPECT_EQ(printable("\x7f"), "\\x7f");
}

TEST(Table, ShortRowsArePaddedLongOnesRefused)
{
    Table table({{"A"}, {"B"}});
    table.add({"x"});
    EXPECT_EQ(table.render(), " A | B\n---+--\n x |\n");
    EXPECT_THROW(table.add({"1", "2", "3"}), std::invalid_argument);
}

class SnapshotFormat : public ::testing::Test {
protected:
    void SetUp() override
    {
        const char* tz = std::getenv("TZ");
        saved_tz_ = tz ? tz : "";
        had_tz_ = tz != nullptr;
        ::setenv("TZ", "UTC", 1);
        ::tzset();
    }
    void TearDown() override
    {
        if (had_tz_)
            ::setenv("TZ", saved_tz_.c_str(), 1);
        else
            ::unsetenv("TZ");
        ::tzset();
    }

private:
    std::string saved_tz_;
    bool had_tz_ = false;
};

TEST_F(SnapshotFormat, TheTableOfSnapperList)
{
    std::vector<SnapshotRecord> snapshots{
        {1, "single", 0, 1764687241, 0, "first", "number", false, {{"tool", "apt"}}},
        {2, "pre", 0, 1764687300, 0, "before", "", true, {}},
        {3, "post", 2, 1764687360, 0, "after", "empty-pre-post", false, {{"a", "1"}, {"b", "2"}}},
    };
    EXPECT_EQ(snapshot_table(snapshots).render(),
              " # | Type   | Pre # | Date                | User | Cleanup        | Description | Userdata\n"
              "---+--------+-------+---------------------+------+----------------+-------------+--------------\n"
              " 1 | single |       | 2025-12-02 14:54:01 | root | number         | first       | tool=apt\n"
              " 2 | pre    |       | 2025-12-02 14:55:00 | root |                | before      | important=yes\n"
              " 3 | post   |     2 | 2025-12-02 14:56:00 | root | empty-pre-post | after       | a=1, b=2\n");
}

TEST_F(SnapshotFormat, JsonOfARecord)
{
    SnapshotRecord post{3, "post", 2, 1764687360, 0, "after", "", true, {{"k", "v"}}};
    nlohmann::json j = snapshot_json(post);
    EXPECT_EQ(j["number"], 3);
    EXPECT_EQ(j["type"], "post");
    EXPECT_EQ(j["pre_number"], 2);
    EXPECT_EQ(j["time"], 1764687360);
    EXPECT_EQ(j["date"], "2025-12-02T14:56:00Z");
    EXPECT_EQ(j["uid"], 0);
    EXPECT_EQ(j["user"], "root");
    EXPECT_TRUE(j["cleanup"].is_null());
    EXPECT_EQ(j["description"], "after");
    EXPECT_EQ(j["important"], true);
    EXPECT_EQ(j["userdata"], nlohmann::json({{"k", "v"}}));
    SnapshotRecord single{1, "single", 0, 0, 4242424, "", "timeline", false, {}};
    j = snapshot_json(single);
    EXPECT_TRUE(j["pre_number"].is_null());
    EXPECT_EQ(j["cleanup"], "timeline");
    EXPECT_EQ(j["user"], "4242424"); // no such user: the number
    EXPECT_EQ(j["userdata"], nlohmann::json::object());
}

TEST(Json, NonUtf8StringsAreReplacedNotFatal)
{
    std::string out = dump_json({{"path", "/bad\xff"}});
    EXPECT_NE(out.find("/bad\xef\xbf\xbd"), std::string::npos) << out;
}

TEST(ExitCodes, DaemonErrors)
{
    EXPECT_EQ(exit_code_for_error("org.layerd1.Error.NoSuchStack"), EX_DATAERR);
    EXPECT_EQ(exit_code_for_error("org.layerd1.Error.NoSuchSnapshot"), EX_DATAERR);
    EXPECT_EQ(exit_code_for_error("org.layerd1.Error.InvalidArgument"), EX_DATAERR);
    EXPECT_EQ(exit_code_for_error("org.layerd1.Error.NotMounted"), EX_DATAERR);
    EXPECT_EQ(exit_code_for_error("org.layerd1.Error.DepthLimit"), EX_DATAERR);
    EXPECT_EQ(exit_code_for_error("org.layerd1.Error.PermissionDenied"), EX_NOPERM);
    EXPECT_EQ(exit_code_for_error("org.layerd1.Error.Busy"), EX_TEMPFAIL);
    EXPECT_EQ(exit_code_for_error("org.layerd1.Error.Io"), EX_IOERR);
    // A name a newer daemon may add: internal, not a guess.
    EXPECT_EQ(exit_code_for_error("org.layerd1.Error.Unheard"), EX_SOFTWARE);
    EXPECT_EQ(exit_code_for_error("org.layerd1.Error."), EX_SOFTWARE);
    EXPECT_EQ(exit_code_for_error("org.layerd1.ErrorBusy"), EX_SOFTWARE);
}

TEST(ExitCodes, BusErrors)
{
    EXPECT_EQ(exit_code_for_error("org.freedesktop.DBus.Error.ServiceUnknown"), EX_UNAVAILABLE);
    EXPECT_EQ(exit_code_for_error("org.freedesktop.DBus.Error.NameHasNoOwner"), EX_UNAVAILABLE);
    EXPECT_EQ(exit_code_for_error("org.freedesktop.DBus.Error.NoReply"), EX_TEMPFAIL);
    EXPECT_EQ(exit_code_for_error("org.freedesktop.DBus.Error.Timeout"), EX_TEMPFAIL);
    EXPECT_EQ(exit_code_for_error("org.freedesktop.DBus.Error.AccessDenied"), EX_NOPERM);
    EXPECT_EQ(exit_code_for_error("System.Error.ETIMEDOUT"), EX_TEMPFAIL);
    EXPECT_EQ(exit_code_for_error("System.Error.ECONNREFUSED"), EX_UNAVAILABLE);
    EXPECT_EQ(exit_code_for_error("System.Error.EACCES"), EX_NOPERM);
    EXPECT_EQ(exit_code_for_error("org.freedesktop.DBus.Error.UnknownMethod"), EX_SOFTWARE);
    EXPECT_EQ(exit_code_for_error(""), EX_SOFTWARE);
}

} // namespace
} // namespace layerd::cli
