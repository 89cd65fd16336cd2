// SPDX-License-Identifier: LGPL-2.1-or-later
// The configuration layer (DESIGN §4): every malformed file of the corpus is
// refused with its exact FILE:LINE:COLUMN: reason, good files give every key,
// config dirs stack with systemd's precedence and masking, a bad file never
// stops the others, and a reload's diff says what needs a remount.
#include "config.hpp"
#include "config_diff.hpp"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>

using namespace layerd;
namespace fs = std::filesystem;

namespace {

const std::string state_dir = "/var/lib/layerd";

std::string read_text(const fs::path& path)
{
    std::ifstream in(path, std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
}

void write_text(const fs::path& path, const std::string& text)
{
    fs::create_directories(path.parent_path());
    std::ofstream(path, std::ios::binary) << text;
}

// The message parse_stack() gives, or "" when the text parses.
std::string error_of(const std::string& text, const std::string& file = "s.yaml")
{
    try {
        parse_stack(text, file, fs::path(file).stem(), state_dir);
    } catch (const ConfigError& e) {
        return e.what();
    }
    return {};
}

// Three config dirs in precedence order, like /etc, /run and /usr/lib.
class ConfigDirs : public ::testing::Test {
protected:
    void SetUp() override
    {
        std::string tmpl = (fs::temp_directory_path() / "layerd-config.XXXXXX").string();
        ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
        root_ = tmpl;
        dirs_ = {(root_ / "etc").string(), (root_ / "run").string(), (root_ / "lib").string()};
    }
    void TearDown() override { fs::remove_all(root_); }

    // stacks.d/NAME.yaml of dir I.
    fs::path stack_file(size_t i, const std::string& name) const
    {
        return fs::path(dirs_[i]) / "stacks.d" / (name + ".yaml");
    }
    void write_stack(size_t i, const std::string& name, const std::string& text) const
    {
        write_text(stack_file(i, name), text);
    }
    static std::string stack_text(const std::string& mountpoint)
    {
        return "mountpoint: " + mountpoint + "\nlowers: [" + mountpoint + "]\n";
    }
    static std::map<std::string, const StackDefinition*> by_name(const Config& config)
    {
        std::map<std::string, const StackDefinition*> stacks;
        for (const StackDefinition& stack : config.stacks)
            stacks.emplace(stack.name, &stack);
        return stacks;
    }

    fs::path root_;
    std::vector<std::string> dirs_;
};

} // namespace

TEST(ConfigCorpus, EveryMalformedFileIsRefusedWithItsExactMessage)
{
    const fs::path corpus = CONFIG_CORPUS_DIR;
    std::map<std::string, std::string> expected; // file -> message
    std::istringstream lines(read_text(corpus / "expected-errors.txt"));
    for (std::string line; std::getline(lines, line);) {
        if (line.empty() || line[0] == '#')
            continue;
        const std::string file = line.substr(0, line.find(':'));
        ASSERT_TRUE(expected.emplace(file, line).second) << "two expectations for " << file;
    }
    size_t checked = 0;
    for (const auto& entry : fs::directory_iterator(corpus)) {
        const std::string file = entry.path().filename();
        if (entry.path().extension() != ".yaml")
            continue;
        auto it = expected.find(file);
        ASSERT_NE(it, expected.end()) << file << " has no line in expected-errors.txt";
        EXPECT_EQ(error_of(read_text(entry.path()), file), it->second);
        expected.erase(it);
        ++checked;
    }
    EXPECT_TRUE(expected.empty()) << "expected-errors.txt names missing file " << expected.begin()->first;
    EXPECT_GE(checked, 20u);
}

TEST(ConfigStack, EveryKeyIsRead)
{
    const StackDefinition stack = parse_stack(R"(# every key, none at its default
mountpoint: /srv/etc/
lowers:
  - /srv//etc
  - /usr/share/factory/etc
upper: true
volatile: true
boot: true
xattr_format: user
timeline: true
package_snapshots: true
cleanup:
  number: {limit: 10-50, limit_important: 5, min_age: 1800}
  timeline:
    hourly: 5
    daily: 4-7
    weekly: 3
    monthly: 2
    quarterly: 1
    yearly: 0
    min_age: 60
  empty_pre_post: {min_age: 0}
  free_limit: 0.35
max_depth: 4096
allow_users: [alice, first.last, "user@example.com"]
allow_groups: [wheel, _admins]
)",
                                              "/etc/layerd/stacks.d/etc.yaml", "etc", state_dir);
    EXPECT_EQ(stack.name, "etc");
    EXPECT_EQ(stack.source, "/etc/layerd/stacks.d/etc.yaml");
    EXPECT_EQ(stack.mountpoint, "/srv/etc");
    EXPECT_EQ(stack.lowers, (std::vector<std::string>{"/srv/etc", "/usr/share/factory/etc"}));
    EXPECT_TRUE(stack.upper);
    EXPECT_TRUE(stack.volatile_upper);
    EXPECT_TRUE(stack.boot);
    EXPECT_EQ(stack.xattr_format, XattrFormat::user);
    EXPECT_TRUE(stack.timeline);
    EXPECT_TRUE(stack.package_snapshots);
    ASSERT_TRUE(stack.cleanup.number);
    EXPECT_EQ(stack.cleanup.number->limit, LimitRange(10, 50));
    EXPECT_EQ(stack.cleanup.number->limit_important, LimitRange(5));
    EXPECT_EQ(stack.cleanup.number->min_age, 1800);
    ASSERT_TRUE(stack.cleanup.timeline);
    const TimelineCleanup& timeline = *stack.cleanup.timeline;
    EXPECT_EQ(timeline.hourly, LimitRange(5));
    EXPECT_EQ(timeline.daily, LimitRange(4, 7));
    EXPECT_EQ(timeline.weekly, LimitRange(3));
    EXPECT_EQ(timeline.monthly, LimitRange(2));
    EXPECT_EQ(timeline.quarterly, LimitRange(1));
    EXPECT_EQ(timeline.yearly, LimitRange(0));
    EXPECT_EQ(timeline.min_age, 60);
    ASSERT_TRUE(stack.cleanup.empty_pre_post);
    EXPECT_EQ(stack.cleanup.empty_pre_post->min_age, 0);
    EXPECT_DOUBLE_EQ(stack.free_limit, 0.35);
    EXPECT_EQ(stack.max_depth, 4096u);
    EXPECT_EQ(stack.allow_users, (std::vector<std::string>{"alice", "first.last", "user@example.com"}));
    EXPECT_EQ(stack.allow_groups, (std::vector<std::string>{"wheel", "_admins"}));
}

TEST(ConfigStack, MissingKeysTakeTheDocumentedDefaults)
{
    const StackDefinition stack = parse_stack("mountpoint: /mnt\nlowers: [/]\n", "root.yaml", "root", "/srv/state");
    EXPECT_EQ(stack.mountpoint, "/mnt");
    EXPECT_EQ(stack.lowers, std::vector<std::string>{"/"});
    EXPECT_TRUE(stack.upper);
    EXPECT_FALSE(stack.volatile_upper);
    EXPECT_FALSE(stack.boot);
    EXPECT_EQ(stack.xattr_format, XattrFormat::trusted);
    EXPECT_FALSE(stack.timeline);
    EXPECT_FALSE(stack.package_snapshots);
    // No cleanup section: all three of snapper's algorithms, its defaults.
    ASSERT_TRUE(stack.cleanup.number);
    EXPECT_EQ(stack.cleanup.number->limit, LimitRange(50));
    EXPECT_EQ(stack.cleanup.number->limit_important, LimitRange(10));
    EXPECT_EQ(stack.cleanup.number->min_age, 3600);
    ASSERT_TRUE(stack.cleanup.timeline);
    EXPECT_EQ(stack.cleanup.timeline->hourly, LimitRange(10));
    EXPECT_EQ(stack.cleanup.timeline->weekly, LimitRange(0));
    ASSERT_TRUE(stack.cleanup.empty_pre_post);
    EXPECT_EQ(stack.cleanup.empty_pre_post->min_age, 3600);
    EXPECT_DOUBLE_EQ(stack.free_limit, 0.2);
    EXPECT_EQ(stack.max_depth, 128u);
    EXPECT_TRUE(stack.allow_users.empty());
    EXPECT_TRUE(stack.allow_groups.empty());
}

TEST(ConfigStack, FalseSwitchesAnAlgorithmOffAndTrueTakesItsDefaults)
{
    const std::string head = "mountpoint: /etc\nlowers: [/etc]\n";
    StackDefinition all_off = parse_stack(head + "cleanup: false\n", "a.yaml", "a", state_dir);
    EXPECT_FALSE(all_off.cleanup.number);
    EXPECT_FALSE(all_off.cleanup.timeline);
    EXPECT_FALSE(all_off.cleanup.empty_pre_post);

    StackDefinition all_on = parse_stack(head + "cleanup: true\n", "a.yaml", "a", state_dir);
    EXPECT_TRUE(all_on.cleanup.number && all_on.cleanup.timeline && all_on.cleanup.empty_pre_post);

    StackDefinition some = parse_stack(head + "cleanup:\n  number: false\n  timeline: true\n"
                                              "  empty_pre_post: {}\n  free_limit: 1\n",
                                       "a.yaml", "a", state_dir);
    EXPECT_FALSE(some.cleanup.number);
    ASSERT_TRUE(some.cleanup.timeline);
    EXPECT_EQ(some.cleanup.timeline->daily, LimitRange(10));
    ASSERT_TRUE(some.cleanup.empty_pre_post);
    EXPECT_EQ(some.cleanup.empty_pre_post->min_age, 3600);
    EXPECT_DOUBLE_EQ(some.free_limit, 1.0);
}

TEST(ConfigStack, AnEmptyDocumentIsNotAStack)
{
    EXPECT_EQ(error_of("# nothing\n", "x.yaml"), "x.yaml: no YAML document (an empty stack file masks the stack)");
}

TEST(ConfigStack, NamesAgreeWithTheStore)
{
    EXPECT_TRUE(is_valid_stack_name("etc"));
    EXPECT_TRUE(is_valid_stack_name("var-log"));
    EXPECT_FALSE(is_valid_stack_name(""));
    EXPECT_FALSE(is_valid_stack_name(".hidden"));
    EXPECT_FALSE(is_valid_stack_name("a/b"));
    EXPECT_EQ(error_of("mountpoint: /etc\nlowers: [/etc]\n", "..yaml"), "..yaml: '.' is not a valid stack name");
}

TEST(ConfigStack, UserAndGroupNamesFollowSystemdsRelaxedRules)
{
    for (const char* good : {"alice", "first.last", "_x", "user@example.com", "DOMAIN\\bob", "a b", "jörg", "a$"})
        EXPECT_TRUE(is_valid_user_group_name(good)) << good;
    for (const char* bad : {"", " alice", "alice ", "1000", "-1", ".", "..", "a:b", "a/b", "a\nb", "a\x7f",
                            "\xff", "\xc0\xaf", "\xed\xa0\x80"})
        EXPECT_FALSE(is_valid_user_group_name(bad)) << bad;
}

TEST(ConfigExamples, ShippedFilesParse)
{
    const fs::path dir = EXAMPLE_CONFIG_DIR;
    const GlobalConfig global = parse_global(read_text(dir / "layerd.yaml"), "layerd.yaml");
    EXPECT_EQ(global.state_dir, "/var/lib/layerd");

    const StackDefinition example =
        parse_stack(read_text(dir / "stacks.d" / "example.yaml.sample"), "example.yaml", "example", global.state_dir);
    EXPECT_EQ(example.mountpoint, "/etc");
    EXPECT_EQ(example.lowers, std::vector<std::string>{"/etc"});
    EXPECT_TRUE(example.boot);
    EXPECT_TRUE(example.timeline);
    EXPECT_TRUE(example.package_snapshots);
    EXPECT_EQ(example.allow_users, std::vector<std::string>{"alice"});
    EXPECT_EQ(example.allow_groups, std::vector<std::string>{"wheel"});
}

TEST(ConfigGlobal, KeysAndErrors)
{
    EXPECT_EQ(parse_global("", "g.yaml").state_dir, "/var/lib/layerd");
    EXPECT_EQ(parse_global("state_dir: /srv/layerd/\n", "g.yaml").state_dir, "/srv/layerd");
    try {
        parse_global("statedir: /srv\n", "g.yaml");
        FAIL() << "a misspelt key was accepted";
    } catch (const ConfigError& e) {
        EXPECT_STREQ(e.what(), "g.yaml:1:1: unknown key 'statedir' (did you mean 'state_dir'?)");
        EXPECT_EQ(e.line(), 1u);
        EXPECT_EQ(e.column(), 1u);
        EXPECT_EQ(e.reason(), "unknown key 'statedir' (did you mean 'state_dir'?)");
    }
}

TEST_F(ConfigDirs, EarlierDirsWinFileByFileAndEmptyFilesMask)
{
    write_stack(2, "a", stack_text("/a"));               // lib only
    write_stack(0, "b", stack_text("/b-etc"));           // etc over lib
    write_stack(2, "b", stack_text("/b-lib"));
    write_stack(1, "c", stack_text("/c-run"));           // run over lib
    write_stack(2, "c", stack_text("/c-lib"));
    write_stack(0, "d", "");                             // masked by an empty file
    write_stack(2, "d", stack_text("/d"));
    fs::create_directories(stack_file(1, "e").parent_path());
    fs::create_symlink("/dev/null", stack_file(1, "e")); // masked by /dev/null
    write_stack(2, "e", stack_text("/e"));
    write_stack(0, "f", "# switched off\n");             // masked by comments only
    write_stack(2, "f", stack_text("/f"));
    write_stack(0, "g", "mountpoint: /g\n");             // bad: no fallback to lib
    write_stack(2, "g", stack_text("/g"));
    write_text(fs::path(dirs_[0]) / "stacks.d" / ".h.yaml", stack_text("/h"));     // hidden
    write_text(fs::path(dirs_[0]) / "stacks.d" / "i.yaml.sample", stack_text("/i"));
    write_text(fs::path(dirs_[0]) / "stacks.d" / "j.yaml~", stack_text("/j"));
    write_text(fs::path(dirs_[1]) / "layerd.yaml", "state_dir: /srv/run-state\n");
    write_text(fs::path(dirs_[2]) / "layerd.yaml", "state_dir: /srv/lib-state\n");

    const Config config = load_config(dirs_);
    EXPECT_FALSE(config.global_failed);
    EXPECT_EQ(config.global.state_dir, "/srv/run-state");
    EXPECT_EQ(config.global.source, dirs_[1] + "/layerd.yaml");
    auto stacks = by_name(config);
    ASSERT_EQ(stacks.size(), 3u);
    EXPECT_EQ(stacks.at("a")->mountpoint, "/a");
    EXPECT_EQ(stacks.at("a")->source, stack_file(2, "a").string());
    EXPECT_EQ(stacks.at("b")->mountpoint, "/b-etc");
    EXPECT_EQ(stacks.at("c")->mountpoint, "/c-run");
    ASSERT_EQ(config.errors.size(), 1u);
    EXPECT_EQ(std::string(config.errors[0].what()),
              stack_file(0, "g").string() + ":1:1: missing required key 'lowers'");
    EXPECT_EQ(config.errors[0].stack(), "g");
}

TEST_F(ConfigDirs, OneBadFileNeverStopsTheOthers)
{
    write_stack(0, "home", stack_text("/home"));
    write_stack(0, "etc", "mountpoint: /etc\nlowers: [/etc]\nmountpont: /etc\n");
    write_stack(0, "opt", stack_text("/opt"));
    write_stack(0, "srv", "mountpoint: /srv\nlowers: [/srv\n");
    fs::create_directories(stack_file(0, "dir"));       // not a regular file
    fs::create_symlink("/nonexistent/x.yaml", stack_file(0, "dangling"));

    const Config config = load_config({dirs_[0]});
    auto stacks = by_name(config);
    EXPECT_EQ(stacks.size(), 2u);
    EXPECT_TRUE(stacks.contains("home"));
    EXPECT_TRUE(stacks.contains("opt"));
    std::vector<std::string> errors;
    for (const ConfigError& e : config.errors)
        errors.emplace_back(e.what());
    EXPECT_EQ(errors, (std::vector<std::string>{
                          stack_file(0, "dangling").string() + ": cannot open: No such file or directory",
                          stack_file(0, "dir").string() + ": not a regular file",
                          stack_file(0, "etc").string() + ":3:1: unknown key 'mountpont' (did you mean 'mountpoint'?)",
                          stack_file(0, "srv").string() + ":3:1: invalid YAML: end of sequence flow not found",
                      }));
}

TEST_F(ConfigDirs, TwoStacksOnOneMountpointKeepTheFirstByName)
{
    write_stack(0, "a", stack_text("/srv/x"));
    write_stack(2, "b", "lowers: [/srv/y]\nmountpoint: /srv//x/\n");
    const Config config = load_config(dirs_);
    ASSERT_EQ(config.stacks.size(), 1u);
    EXPECT_EQ(config.stacks[0].name, "a");
    ASSERT_EQ(config.errors.size(), 1u);
    EXPECT_EQ(std::string(config.errors[0].what()),
              stack_file(2, "b").string() + ":2:13: 'mountpoint' /srv/x is already the mountpoint of stack 'a'");
}

TEST_F(ConfigDirs, StateDirOverrideIsCheckedAgainstMountpoints)
{
    write_text(fs::path(dirs_[0]) / "layerd.yaml", "state_dir: /srv/state\n");
    write_stack(0, "state", stack_text("/srv/state"));
    write_stack(0, "var", stack_text("/var"));

    Config from_file = load_config(dirs_);
    ASSERT_EQ(from_file.errors.size(), 1u);
    EXPECT_EQ(from_file.errors[0].reason(), "'mountpoint' /srv/state is the state dir");

    Config overridden = load_config(dirs_, "/var/lib/layerd");
    EXPECT_EQ(overridden.global.state_dir, "/var/lib/layerd");
    ASSERT_EQ(overridden.errors.size(), 1u);
    EXPECT_EQ(overridden.errors[0].reason(), "'mountpoint' /var would cover the state dir /var/lib/layerd");
    ASSERT_EQ(overridden.stacks.size(), 1u);
    EXPECT_EQ(overridden.stacks[0].name, "state");
}

TEST_F(ConfigDirs, ABadGlobalFileLoadsNoStacks)
{
    write_text(fs::path(dirs_[0]) / "layerd.yaml", "state_dir: relative\n");
    write_stack(0, "etc", stack_text("/etc"));
    const Config config = load_config(dirs_);
    EXPECT_TRUE(config.global_failed);
    EXPECT_TRUE(config.stacks.empty());
    ASSERT_EQ(config.errors.size(), 1u);
    EXPECT_EQ(std::string(config.errors[0].what()),
              dirs_[0] + "/layerd.yaml:1:12: 'state_dir' must be an absolute path, got 'relative'");
}

TEST_F(ConfigDirs, AnOversizedFileIsRefused)
{
    write_stack(0, "big", std::string((1 << 20) + 1, '#'));
    const Config config = load_config(dirs_);
    ASSERT_EQ(config.errors.size(), 1u);
    EXPECT_EQ(std::string(config.errors[0].what()), stack_file(0, "big").string() + ": larger than 1048576 bytes");
}

TEST_F(ConfigDirs, MissingDirsAreEmpty)
{
    const Config config = load_config({(root_ / "none").string()});
    EXPECT_FALSE(config.global_failed);
    EXPECT_EQ(config.global.state_dir, "/var/lib/layerd");
    EXPECT_TRUE(config.global.source.empty());
    EXPECT_TRUE(config.stacks.empty());
    EXPECT_TRUE(config.errors.empty());
}

TEST_F(ConfigDirs, ReloadDiffSaysWhatNeedsARemount)
{
    write_stack(2, "kept", stack_text("/kept"));
    write_stack(0, "gone", stack_text("/gone"));
    write_stack(0, "live", stack_text("/live"));
    write_stack(0, "moved", stack_text("/moved"));
    write_stack(0, "broken", stack_text("/broken"));
    const Config old = load_config(dirs_);
    ASSERT_TRUE(old.errors.empty());
    EXPECT_TRUE(diff(old, old).stacks.empty());

    write_stack(0, "kept", stack_text("/kept")); // same definition, another file
    fs::remove(stack_file(0, "gone"));
    write_stack(0, "live", stack_text("/live") + "boot: true\ntimeline: true\npackage_snapshots: true\n"
                                                   "cleanup: {number: false}\n"
                                                   "max_depth: 64\nallow_users: [alice]\nallow_groups: [wheel]\n");
    write_stack(0, "moved", "mountpoint: /moved2\nlowers: [/a, /b]\nupper: false\nvolatile: true\n"
                            "xattr_format: user\nallow_users: [bob]\n");
    write_stack(0, "broken", "mountpoint /broken\n");
    write_stack(0, "new", stack_text("/new"));
    const Config now = load_config(dirs_);
    ASSERT_EQ(now.errors.size(), 1u);

    const ConfigChange change = diff(old, now);
    EXPECT_TRUE(change.global_keys.empty());
    ASSERT_EQ(change.stacks.size(), 5u);
    const StackChange& broken = change.stacks[0];
    EXPECT_EQ(broken.name, "broken");
    EXPECT_EQ(broken.kind, StackChange::Kind::invalid);
    EXPECT_FALSE(broken.needs_remount());
    EXPECT_EQ(change.stacks[1].name, "gone");
    EXPECT_EQ(change.stacks[1].kind, StackChange::Kind::removed);

    const StackChange& live = change.stacks[2];
    EXPECT_EQ(live.name, "live");
    EXPECT_EQ(live.kind, StackChange::Kind::changed);
    EXPECT_EQ(live.live_keys, (std::vector<std::string_view>{"boot", "timeline", "package_snapshots", "cleanup",
                                                             "max_depth", "allow_users", "allow_groups"}));
    EXPECT_TRUE(live.remount_keys.empty());
    EXPECT_FALSE(live.needs_remount());

    const StackChange& moved = change.stacks[3];
    EXPECT_EQ(moved.name, "moved");
    EXPECT_EQ(moved.remount_keys,
              (std::vector<std::string_view>{"mountpoint", "lowers", "upper", "volatile", "xattr_format"}));
    EXPECT_EQ(moved.live_keys, std::vector<std::string_view>{"allow_users"});
    EXPECT_TRUE(moved.needs_remount());
    EXPECT_EQ(remount_refusal(moved),
              "stack 'moved' is mounted and its new mountpoint, lowers, upper, volatile, xattr_format need a "
              "remount: run 'layerctl unmount moved' and reload again (until then the old definition stays in "
              "force)");

    EXPECT_EQ(change.stacks[4].name, "new");
    EXPECT_EQ(change.stacks[4].kind, StackChange::Kind::added);
}

TEST_F(ConfigDirs, ReloadDiffOfOneKeyAndOfTheGlobalFile)
{
    write_stack(0, "etc", stack_text("/etc"));
    const Config old = load_config(dirs_);
    write_stack(0, "etc", "mountpoint: /etc\nlowers: [/etc, /usr/share/etc]\n");
    write_text(fs::path(dirs_[0]) / "layerd.yaml", "state_dir: /srv/state\n");
    const Config now = load_config(dirs_);

    const ConfigChange change = diff(old, now);
    EXPECT_EQ(change.global_keys, std::vector<std::string_view>{"state_dir"});
    EXPECT_EQ(restart_refusal(change), "layerd.yaml changed state_dir, which only a restart of layerd applies "
                                       "(until then the old value stays in force)");
    ASSERT_EQ(change.stacks.size(), 1u);
    EXPECT_EQ(remount_refusal(change.stacks[0]),
              "stack 'etc' is mounted and its new lowers needs a remount: run 'layerctl unmount etc' and reload "
              "again (until then the old definition stays in force)");

    // A bad layerd.yaml refuses the reload as a whole: nothing to apply.
    write_text(fs::path(dirs_[0]) / "layerd.yaml", "state_dir: [x]\n");
    const Config failed = load_config(dirs_);
    ASSERT_TRUE(failed.global_failed);
    const ConfigChange none = diff(old, failed);
    EXPECT_TRUE(none.stacks.empty());
    EXPECT_TRUE(none.global_keys.empty());
}
