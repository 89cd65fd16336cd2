// SPDX-License-Identifier: LGPL-2.1-or-later
// The real layerctl binary ($LAYERCTL) against the real layerd ($LAYERD) on
// a private dbus-daemon (tests/dbus/bus_env): every verb, human and --json
// output, and the exit codes (DESIGN §7). Needs root and /dev/fuse (exits
// 77 otherwise).
#include "bus_env.hpp"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sysexits.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <sdbus-c++/sdbus-c++.h>

namespace layerd::test {
namespace {

using nlohmann::json;

struct Result {
    int status = -1; // the exit code; -1 when killed or timed out
    std::string out;
    std::string err;
};

std::ostream& operator<<(std::ostream& os, const Result& r)
{
    return os << "exit " << r.status << "\n--- stdout\n" << r.out << "--- stderr\n" << r.err;
}

// Runs $LAYERCTL ARGS in a child (as uid/gid 65534 with AS_NOBODY), and
// gives up after 60 s.
Result layerctl(const std::vector<std::string>& args, bool as_nobody = false)
{
    const char* binary = std::getenv("LAYERCTL");
    if (!binary)
        throw std::runtime_error("$LAYERCTL is not set (run through meson test)");
    // Opened here, as root: nobody may not be able to search the dirs of
    // the build tree (a clone in a 0700 temp dir), and exec by fd needs no
    // path.
    int exe = ::open(binary, O_RDONLY | O_CLOEXEC);
    if (exe < 0)
        throw std::runtime_error(std::string("open ") + binary + ": " + std::strerror(errno));
    int out[2], err[2];
    if (::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0)
        throw std::runtime_error("pipe2 failed");
    pid_t pid = ::fork();
    if (pid < 0)
        throw std::runtime_error("fork failed");
    if (pid == 0) {
        ::dup2(out[1], STDOUT_FILENO);
        ::dup2(err[1], STDERR_FILENO);
        if (as_nobody && (::setgroups(0, nullptr) != 0 || ::setgid(65534) != 0 || ::setuid(65534) != 0))
            ::_exit(126);
        std::vector<char*> argv{const_cast<char*>(binary)};
        for (const auto& a : args)
            argv.push_back(const_cast<char*>(a.c_str()));
        argv.push_back(nullptr);
        ::fexecve(exe, argv.data(), environ);
        ::_exit(127);
    }
    ::close(exe);
    ::close(out[1]);
    ::close(err[1]);
    Result r;
    pollfd fds[2] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}};
    std::string* sinks[2] = {&r.out, &r.err};
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    int open_fds = 2;
    while (open_fds > 0 && std::chrono::steady_clock::now() < deadline) {
        if (::poll(fds, 2, 1000) < 0 && errno != EINTR)
            break;
        for (int i = 0; i < 2; ++i) {
            if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            char buf[4096];
            ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
            if (n > 0) {
                sinks[i]->append(buf, static_cast<size_t>(n));
            } else if (n == 0 || errno != EINTR) {
                ::close(fds[i].fd);
                fds[i].fd = -1;
                --open_fds;
            }
        }
    }
    for (auto& f : fds)
        if (f.fd >= 0) {
            ::kill(pid, SIGKILL);
            ::close(f.fd);
        }
    int status = 0;
    ::waitpid(pid, &status, 0);
    r.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return r;
}

std::string complete(const BusEnv& env, const std::string& line);

json parse(const Result& r)
{
    try {
        return json::parse(r.out);
    } catch (const json::exception& e) {
        ADD_FAILURE() << "not one JSON document (" << e.what() << "):\n" << r;
        return json();
    }
}

bool exists(const std::string& path)
{
    struct stat st {};
    return ::lstat(path.c_str(), &st) == 0;
}

class Layerctl : public ::testing::Test {
protected:
    void SetUp() override
    {
        env_.write_stack();
        env_.start_layerd();
    }

    // layerctl --bus ADDRESS ARGS..., which must exit 0.
    Result ok(std::vector<std::string> args, bool as_nobody = false)
    {
        Result r = run(std::move(args), as_nobody);
        EXPECT_EQ(r.status, 0) << r;
        return r;
    }
    json ok_json(std::vector<std::string> args)
    {
        args.emplace_back("--json");
        return parse(ok(std::move(args)));
    }
    Result run(std::vector<std::string> args, bool as_nobody = false)
    {
        args.insert(args.begin(), {"--bus", env_.address()});
        return layerctl(args, as_nobody);
    }

    BusEnv env_;
};

TEST_F(Layerctl, StacksAndStatus)
{
    json stacks = ok_json({"stacks"});
    ASSERT_EQ(stacks["stacks"].size(), 1u) << stacks;
    EXPECT_EQ(stacks["stacks"][0]["name"], "demo");
    EXPECT_EQ(stacks["stacks"][0]["object_path"], "/org/layerd1/stack/demo");
    EXPECT_EQ(stacks["stacks"][0]["mountpoint"], env_.mnt());
    EXPECT_EQ(stacks["stacks"][0]["mounted"], true);
    EXPECT_EQ(stacks["stacks"][0]["read_only"], false);
    EXPECT_EQ(stacks["stacks"][0]["depth"], 0);

    Result human = ok({"stacks"});
    EXPECT_EQ(human.out.rfind(" Name | Mountpoint", 0), 0u) << human;
    EXPECT_NE(human.out.find(" demo | " + env_.mnt() + " | yes     | no        |     0\n"), std::string::npos) << human;

    json status = ok_json({"status", "demo"});
    EXPECT_EQ(status["name"], "demo");
    EXPECT_EQ(status["lowers"], json::array({env_.path("lower")}));
    EXPECT_EQ(status["mounted"], true);
    EXPECT_EQ(status["snapshots"], 0);
    EXPECT_TRUE(status["newest_snapshot"].is_null());
    EXPECT_GT(status["live_layer"].get<uint64_t>(), 0u);

    // The global options go before the verb as well.
    Result all = layerctl({"--json", "--bus", env_.address(), "status"});
    ASSERT_EQ(all.status, 0) << all;
    EXPECT_EQ(parse(all)["stacks"][0]["name"], "demo");
    Result text = ok({"status"});
    EXPECT_NE(text.out.find("Stack:       demo\n"), std::string::npos) << text;
    EXPECT_NE(text.out.find("Mounted:     yes\n"), std::string::npos) << text;
}

TEST_F(Layerctl, SnapshotDiffRollbackUndoChange)
{
    json first = ok_json({"snapshot", "demo", "-d", "before", "--cleanup", "number", "--userdata", "tool=test",
                          "-u", "important=yes"});
    EXPECT_EQ(first["stack"], "demo");
    EXPECT_EQ(first["type"], "single");
    uint32_t s1 = first["number"];

    // A file through the mount, and one whose name needs the escaping.
    const std::string odd = "we\nird\\name";
    write_text(env_.mnt("new.txt"), "new\n");
    write_text(env_.mnt(odd), "odd\n");
    Result second = ok({"snapshot", "demo", "-d", "after"});
    uint32_t s2 = static_cast<uint32_t>(std::stoul(second.out));
    EXPECT_EQ(second.out, std::to_string(s2) + "\n");
    EXPECT_GT(s2, s1);

    // The diff streams decoded lines.
    Result diff = ok({"diff", "demo", std::to_string(s1), std::to_string(s2)});
    EXPECT_NE(diff.out.find("+..... /new.txt\n"), std::string::npos) << diff;
    EXPECT_NE(diff.out.find("+..... /" + odd + "\n"), std::string::npos) << diff;
    json changes = ok_json({"diff", "demo", std::to_string(s1), std::to_string(s2)});
    EXPECT_EQ(changes["a"], s1);
    EXPECT_EQ(changes["b"], s2);
    EXPECT_NE(std::find(changes["changes"].begin(), changes["changes"].end(),
                        json({{"flags", "+....."}, {"path", "/new.txt"}})),
              changes["changes"].end())
        << changes;
    EXPECT_NE(std::find(changes["changes"].begin(), changes["changes"].end(),
                        json({{"flags", "+....."}, {"path", "/" + odd}})),
              changes["changes"].end())
        << changes;
    EXPECT_EQ(ok({"diff", "demo", std::to_string(s2), "0"}).out, "");

    json list = ok_json({"snapshots", "demo"});
    EXPECT_EQ(list["stack"], "demo");
    ASSERT_EQ(list["snapshots"].size(), 2u) << list;
    const json& a = list["snapshots"][0];
    EXPECT_EQ(a["number"], s1);
    EXPECT_EQ(a["type"], "single");
    EXPECT_TRUE(a["pre_number"].is_null());
    EXPECT_EQ(a["description"], "before");
    EXPECT_EQ(a["cleanup"], "number");
    EXPECT_EQ(a["important"], true);
    EXPECT_EQ(a["userdata"]["tool"], "test");
    EXPECT_EQ(a["uid"], 0);
    EXPECT_EQ(a["user"], "root");
    EXPECT_TRUE(list["snapshots"][1]["cleanup"].is_null());
    Result table = ok({"snapshots", "demo"});
    EXPECT_EQ(table.out.rfind(" # | Type   | Pre # | Date", 0), 0u) << table;
    EXPECT_NE(table.out.find("| root | number  | before      | "), std::string::npos) << table;
    EXPECT_NE(table.out.find("tool=test"), std::string::npos) << table;

    // Back to s1: the files are gone, and the state before is a snapshot.
    json rolled = ok_json({"rollback", "demo", std::to_string(s1)});
    EXPECT_EQ(rolled["target"], s1);
    EXPECT_EQ(rolled["next_mount"], false);
    uint32_t backup = rolled["backup"];
    EXPECT_GT(backup, s2);
    EXPECT_FALSE(exists(env_.mnt("new.txt")));
    EXPECT_FALSE(exists(env_.mnt(odd)));
    EXPECT_EQ(read_text(env_.mnt("a.txt")), "lower a\n");
    Result gone = ok({"diff", "demo", std::to_string(backup), "0"});
    EXPECT_NE(gone.out.find(" /new.txt\n"), std::string::npos) << gone;

    // One file back from the backup; the other stays gone.
    json undone = ok_json({"undo-change", "demo", std::to_string(backup), "/new.txt"});
    EXPECT_EQ(undone["paths"], json::array({"/new.txt"}));
    EXPECT_EQ(read_text(env_.mnt("new.txt")), "new\n");
    EXPECT_FALSE(exists(env_.mnt(odd)));

    json deleted = ok_json({"delete", "demo", std::to_string(s2)});
    EXPECT_EQ(deleted["deleted"], json::array({s2}));
    std::vector<uint32_t> left;
    json after = ok_json({"snapshots", "demo"});
    for (const auto& s : after["snapshots"])
        left.push_back(s["number"]);
    EXPECT_EQ(left, (std::vector<uint32_t>{s1, backup}));

    Result human = ok({"rollback", "demo", std::to_string(backup)});
    EXPECT_NE(human.out.find("demo is back at snapshot " + std::to_string(backup)), std::string::npos) << human;
    EXPECT_TRUE(exists(env_.mnt(odd)));
}

TEST_F(Layerctl, PrePostTimelineCleanup)
{
    json pre = ok_json({"snapshot", "demo", "--pre", "-d", "apt install", "-c", "empty-pre-post"});
    EXPECT_EQ(pre["type"], "pre");
    uint32_t p = pre["number"];
    json post = ok_json({"snapshot", "demo", "--post", std::to_string(p), "-d", "apt install", "-c", "empty-pre-post"});
    EXPECT_EQ(post["type"], "post");
    EXPECT_EQ(post["pre_number"], p);
    json list = ok_json({"snapshots", "demo"});
    ASSERT_EQ(list["snapshots"].size(), 2u) << list;
    EXPECT_EQ(list["snapshots"][1]["type"], "post");
    EXPECT_EQ(list["snapshots"][1]["pre_number"], p);
    Result table = ok({"snapshots", "demo"});
    EXPECT_NE(table.out.find(" | post |     " + std::to_string(p) + " | "), std::string::npos) << table;

    json timeline = ok_json({"timeline", "demo"});
    ASSERT_EQ(timeline["snapshots"].size(), 1u) << timeline;
    EXPECT_EQ(timeline["snapshots"][0]["stack"], "demo");
    uint32_t t = timeline["snapshots"][0]["number"];
    list = ok_json({"snapshots", "demo"});
    EXPECT_EQ(list["snapshots"].back()["number"], t);
    EXPECT_EQ(list["snapshots"].back()["cleanup"], "timeline");
    EXPECT_EQ(list["snapshots"].back()["description"], "timeline");
    // One stack failing does not stop the others; the exit code says it.
    Result partly = run({"timeline", "nosuch", "demo"});
    EXPECT_EQ(partly.status, EX_DATAERR) << partly;
    EXPECT_NE(partly.out.find("demo "), std::string::npos) << partly;
    EXPECT_NE(partly.err.find("layerctl: no stack 'nosuch' is configured"), std::string::npos) << partly;
    // --all takes only the mounted stacks configured with timeline: true.
    json none = ok_json({"timeline", "--all"});
    EXPECT_TRUE(none["snapshots"].empty()) << none;
    env_.write_stack({}, "timeline: true\n");
    ok({"unmount", "demo"});
    int reloaded = -1;
    env_.busctl("call org.layerd1 /org/layerd1 org.layerd1.Manager Reload", &reloaded);
    ASSERT_EQ(reloaded, 0);
    ok({"mount", "demo"});
    json all_timeline = ok_json({"timeline", "--all"});
    ASSERT_EQ(all_timeline["snapshots"].size(), 1u) << all_timeline;
    EXPECT_EQ(all_timeline["snapshots"][0]["stack"], "demo");
    EXPECT_EQ(run({"timeline"}).status, EX_USAGE);
    EXPECT_EQ(run({"timeline", "--all", "demo"}).status, EX_USAGE);

    json cleaned = ok_json({"cleanup", "demo", "number"});
    EXPECT_EQ(cleaned["algorithm"], "number");
    ASSERT_EQ(cleaned["stacks"].size(), 1u) << cleaned;
    EXPECT_EQ(cleaned["stacks"][0]["stack"], "demo");
    EXPECT_TRUE(cleaned["stacks"][0]["deleted"].is_number()) << cleaned;
    cleaned = ok_json({"cleanup", "--all"});
    EXPECT_TRUE(cleaned["algorithm"].is_null());
    EXPECT_EQ(cleaned["stacks"][0]["stack"], "demo");
    Result text = ok({"cleanup", "--all", "timeline"});
    EXPECT_NE(text.out.find("demo: "), std::string::npos) << text;
    EXPECT_NE(text.out.find(" deleted\n"), std::string::npos) << text;
    EXPECT_EQ(run({"cleanup"}).status, EX_USAGE);
    EXPECT_EQ(run({"cleanup", "--all", "demo", "number"}).status, EX_USAGE);
    EXPECT_EQ(run({"cleanup", "demo", "nonsense"}).status, EX_DATAERR);
}

// What the apt hook runs: pre and post on the stacks that ask, paired by
// tag, then the number cleanup.
TEST_F(Layerctl, PackageSnapshotPairsByTagAndCleansUp)
{
    auto reload = [&] {
        int status = -1;
        std::string out = env_.busctl("call org.layerd1 /org/layerd1 org.layerd1.Manager Reload", &status);
        ASSERT_EQ(status, 0) << out;
    };
    // A number cleanup that deletes: limit 3, no min age, put in force by
    // a reload of the mounted stack.
    const std::string number_cleanup = "cleanup:\n  number: {limit: 3, min_age: 0}\n";
    env_.write_stack({}, number_cleanup);
    reload();
    // No stack asks yet: nothing taken, and said so.
    Result none = ok({"package-snapshot", "pre", "--tag", "1-1", "-d", "apt install x"});
    EXPECT_EQ(none.out, "no stack has package_snapshots: true\n");
    EXPECT_TRUE(ok_json({"snapshots", "demo"})["snapshots"].empty());

    // Switched on by a reload of the mounted stack: no remount needed.
    env_.write_stack({}, "package_snapshots: true\n" + number_cleanup);
    reload();
    EXPECT_EQ(ok_json({"status", "demo"})["mounted"], true);

    json pre = ok_json({"package-snapshot", "pre", "--tag", "100-7", "-d", "apt-get install hello"});
    EXPECT_EQ(pre["phase"], "pre");
    EXPECT_EQ(pre["tag"], "100-7");
    ASSERT_EQ(pre["snapshots"].size(), 1u) << pre;
    EXPECT_EQ(pre["snapshots"][0]["stack"], "demo");
    EXPECT_EQ(pre["snapshots"][0]["type"], "pre");
    uint32_t p1 = pre["snapshots"][0]["number"];
    write_text(env_.mnt("installed"), "hello\n");
    // Another operation's pre in between: post pairs by tag, not by order.
    uint32_t p2 = ok_json({"package-snapshot", "pre", "--tag", "200-9", "-d", "aptitude"})["snapshots"][0]["number"];

    json post = ok_json({"package-snapshot", "post", "--tag", "100-7", "-d", "apt-get install hello"});
    ASSERT_EQ(post["snapshots"].size(), 1u) << post;
    EXPECT_EQ(post["snapshots"][0]["type"], "post");
    EXPECT_EQ(post["snapshots"][0]["pre_number"], p1);
    EXPECT_TRUE(post["snapshots"][0]["cleanup_deleted"].is_number()) << post;
    uint32_t q1 = post["snapshots"][0]["number"];
    Result diff = ok({"diff", "demo", std::to_string(p1), std::to_string(q1)});
    EXPECT_NE(diff.out.find("+..... /installed\n"), std::string::npos) << diff;

    json list = ok_json({"snapshots", "demo"});
    ASSERT_EQ(list["snapshots"].size(), 3u) << list;
    for (const json& s : list["snapshots"])
        EXPECT_EQ(s["cleanup"], "number") << s;
    EXPECT_EQ(list["snapshots"][0]["userdata"]["package-tag"], "100-7");
    EXPECT_EQ(list["snapshots"][0]["description"], "apt-get install hello");
    EXPECT_EQ(list["snapshots"][2]["userdata"]["package-tag"], "100-7");
    EXPECT_EQ(list["snapshots"][2]["pre_number"], p1);

    // The same tag again: its pre has a post, so a single snapshot, said so.
    Result lone = ok({"package-snapshot", "post", "--tag", "100-7"});
    EXPECT_NE(lone.out.find("demo: no pre snapshot tagged 100-7: single snapshot "), std::string::npos) << lone;
    // The other operation ends.
    Result second = ok({"package-snapshot", "post", "--tag", "200-9", "-d", "aptitude"});
    EXPECT_NE(second.out.find("demo: post snapshot "), std::string::npos) << second;
    EXPECT_NE(second.out.find("(pre " + std::to_string(p2) + "); number cleanup deleted "), std::string::npos)
        << second;

    // A description that is not UTF-8 reaches the daemon as one that is.
    json odd = ok_json({"package-snapshot", "pre", "--tag", "300-1", "-d", "apt install caf\xe9\n"});
    uint32_t p3 = odd["snapshots"][0]["number"];
    json shown = ok_json({"snapshots", "demo"});
    EXPECT_EQ(shown["snapshots"].back()["number"], p3);
    EXPECT_EQ(shown["snapshots"].back()["description"], "apt install caf\xef\xbf\xbd");

    // One more operation; its post's number cleanup (limit 3, no min age)
    // keeps the newest three and deletes the five older ones: pairs go
    // together, and no pair was split by the limit.
    uint32_t p4 = ok_json({"package-snapshot", "pre", "--tag", "400-1"})["snapshots"][0]["number"];
    json last = ok_json({"package-snapshot", "post", "--tag", "400-1"});
    EXPECT_EQ(last["snapshots"][0]["cleanup_deleted"], 5) << last;
    std::vector<uint32_t> left;
    const json remaining = ok_json({"snapshots", "demo"});
    for (const json& s : remaining["snapshots"])
        left.push_back(s["number"]);
    EXPECT_EQ(left, (std::vector<uint32_t>{p3, p4, last["snapshots"][0]["number"]}));
}

TEST_F(Layerctl, PackageSnapshotSkipsUnmountedStacksAndGoesOnAfterAFailure)
{
    // demo asks and is mounted; two asks and refuses a second snapshot
    // (max_depth 1); three asks and is not mounted.
    env_.write_stack({}, "package_snapshots: true\n");
    for (const char* name : {"two", "three"}) {
        ::mkdir(env_.path(std::string("mnt-") + name).c_str(), 0755);
        write_text(env_.path(std::string("cfg/stacks.d/") + name + ".yaml"),
                   "mountpoint: " + env_.path(std::string("mnt-") + name) + "\nlowers: [" + env_.path("lower") +
                       "]\npackage_snapshots: true\nmax_depth: 1\n");
    }
    int status = -1;
    env_.busctl("call org.layerd1 /org/layerd1 org.layerd1.Manager Reload", &status);
    ASSERT_EQ(status, 0);
    ok({"mount", "two"});

    json first = ok_json({"package-snapshot", "pre", "--tag", "1-2"});
    ASSERT_EQ(first["snapshots"].size(), 2u) << first;
    EXPECT_EQ(first["snapshots"][0]["stack"], "demo");
    EXPECT_EQ(first["snapshots"][1]["stack"], "two");
    EXPECT_EQ(first["skipped"], json::array({{{"stack", "three"}, {"reason", "not mounted"}}}));
    // two is at its depth limit: its failure is reported with its exit
    // code, and demo still gets its post.
    Result text = run({"package-snapshot", "post", "--tag", "1-2"});
    EXPECT_EQ(text.status, EX_DATAERR) << text;
    EXPECT_NE(text.out.find("three: not mounted, no snapshot\n"), std::string::npos) << text;
    EXPECT_NE(text.out.find("demo: post snapshot "), std::string::npos) << text;
    EXPECT_EQ(text.err.rfind("layerctl: ", 0), 0u) << text;
    Result partly = run({"package-snapshot", "pre", "--tag", "3-4", "--json"});
    EXPECT_EQ(partly.status, EX_DATAERR) << partly;
    json taken = parse(partly);
    ASSERT_EQ(taken["snapshots"].size(), 1u) << partly;
    EXPECT_EQ(taken["snapshots"][0]["stack"], "demo");
    EXPECT_TRUE(ok_json({"snapshots", "three"})["snapshots"].empty());

    for (const auto& args : std::vector<std::vector<std::string>>{{"package-snapshot"},
                                                                  {"package-snapshot", "pre"},
                                                                  {"package-snapshot", "during", "--tag", "1"},
                                                                  {"package-snapshot", "pre", "--tag", ""}}) {
        Result r = run(args);
        EXPECT_EQ(r.status, EX_USAGE) << r;
    }
    Result help = ok({"package-snapshot", "--help"});
    EXPECT_NE(help.out.find("--tag"), std::string::npos) << help;
    EXPECT_EQ(complete(env_, "package-snapshot ''"), "pre\npost\n");
    EXPECT_EQ(complete(env_, "package-snapshot pre --t"), "--tag\n");
}

TEST_F(Layerctl, UnmountAndMount)
{
    json out = ok_json({"unmount", "demo"});
    EXPECT_EQ(out, json({{"stack", "demo"}, {"mounted", false}}));
    EXPECT_FALSE(is_mounted(env_.mnt()));
    EXPECT_EQ(ok_json({"status", "demo"})["mounted"], false);
    // Reads work on an unmounted stack.
    EXPECT_EQ(ok_json({"snapshots", "demo"})["snapshots"].size(), 0u);
    Result quiet = ok({"mount", "demo"});
    EXPECT_EQ(quiet.out, "");
    EXPECT_TRUE(is_mounted(env_.mnt()));
    EXPECT_EQ(read_text(env_.mnt("a.txt")), "lower a\n");
}

TEST_F(Layerctl, RollbackAtTheNextMount)
{
    uint32_t s1 = ok_json({"snapshot", "demo"})["number"];
    write_text(env_.mnt("later.txt"), "later\n");
    Result r = ok({"rollback", "demo", std::to_string(s1), "--next-mount"});
    EXPECT_NE(r.out.find("demo goes back to snapshot " + std::to_string(s1) + " at its next mount"),
              std::string::npos)
        << r;
    EXPECT_TRUE(exists(env_.mnt("later.txt"))); // not yet
    ok({"unmount", "demo"});
    ok({"mount", "demo"});
    EXPECT_FALSE(exists(env_.mnt("later.txt")));
}

// The bash completion, sourced into a bash that completes LINE (the words
// after "layerctl --bus ADDRESS"); what it offers, one a line.
std::string complete(const BusEnv& env, const std::string& line)
{
    const char* file = std::getenv("LAYERCTL_COMPLETION");
    if (!file)
        throw std::runtime_error("$LAYERCTL_COMPLETION is not set (run through meson test)");
    std::string script = std::string("source '") + file + "'; COMP_WORDS=('" + std::getenv("LAYERCTL") +
                         "' --bus '" + env.address() + "' " + line + "); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); " +
                         "_layerctl; printf '%s\\n' \"${COMPREPLY[@]}\"";
    write_text(env.path("complete.sh"), script + "\n");
    int status = 0;
    std::string out = run_shell("bash " + env.path("complete.sh"), &status);
    EXPECT_EQ(status, 0) << script;
    return out;
}

TEST_F(Layerctl, BashCompletionAsksTheDaemon)
{
    EXPECT_EQ(complete(env_, "snap"), "snapshot\nsnapshots\n");
    EXPECT_EQ(complete(env_, "snapshots ''"), "demo\n");
    EXPECT_EQ(complete(env_, "cleanup demo e"), "empty-pre-post\n");
    ok({"snapshot", "demo"});
    ok({"snapshot", "demo"});
    EXPECT_EQ(complete(env_, "delete demo ''"), "1\n2\n");
    EXPECT_EQ(complete(env_, "rollback demo 2 --n"), "--next-mount\n");
}

TEST_F(Layerctl, ExitCodesAndMessages)
{
    // What the daemon refuses: its message, and a sysexits code.
    Result r = run({"snapshots", "nosuch"});
    EXPECT_EQ(r.status, EX_DATAERR) << r;
    EXPECT_EQ(r.err, "layerctl: no stack 'nosuch' is configured (see layerctl stacks)\n") << r;
    EXPECT_EQ(r.out, "");
    r = run({"delete", "demo", "999"});
    EXPECT_EQ(r.status, EX_DATAERR) << r;
    EXPECT_EQ(r.err.rfind("layerctl: ", 0), 0u) << r;
    r = run({"rollback", "demo", "999", "--json"});
    EXPECT_EQ(r.status, EX_DATAERR) << r;
    EXPECT_EQ(r.out, "");

    // Reads are open to everyone, changes are not.
    EXPECT_EQ(ok({"snapshots", "demo"}, true).out.rfind(" # | Type", 0), 0u);
    r = run({"snapshot", "demo", "-d", "by nobody"}, true);
    EXPECT_EQ(r.status, EX_NOPERM) << r;
    EXPECT_NE(r.err.find("layerctl: uid 65534 may not change stack demo"), std::string::npos) << r;

    // Usage errors never reach the daemon.
    for (const auto& args : std::vector<std::vector<std::string>>{{"snapshot"},
                                                                  {"snapshot", "demo", "--userdata", "novalue"},
                                                                  {"snapshot", "demo", "--pre", "--post", "1"},
                                                                  {"snapshot", "demo", "--post", "x"},
                                                                  {"rollback", "demo", "one"},
                                                                  {"delete", "demo"},
                                                                  {"diff", "demo", "1"},
                                                                  {"undo-change", "demo", "1", "relative"},
                                                                  {"frobnicate"},
                                                                  {}}) {
        r = run(args);
        EXPECT_EQ(r.status, EX_USAGE) << r;
        EXPECT_EQ(r.err.rfind("layerctl: ", 0), 0u) << r;
    }
    EXPECT_EQ(ok_json({"snapshots", "demo"})["snapshots"].size(), 0u);

    r = ok({"diff", "--help"});
    EXPECT_NE(r.out.find("Usage: layerctl diff"), std::string::npos) << r;
    r = layerctl({"--bus", "nonsense", "stacks"});
    EXPECT_EQ(r.status, EX_USAGE) << r;
}

TEST(LayerctlNoDaemon, NobodyOwnsTheName)
{
    BusEnv env; // a bus, and no layerd on it
    Result r = layerctl({"--bus", env.address(), "stacks"});
    EXPECT_EQ(r.status, EX_UNAVAILABLE) << r;
    EXPECT_EQ(r.err.rfind("layerctl: layerd is not reachable on the bus", 0), 0u) << r;
    r = layerctl({"--bus", env.address(), "--json", "snapshot", "demo"});
    EXPECT_EQ(r.status, EX_UNAVAILABLE) << r;
    EXPECT_EQ(r.out, "");
}

TEST(LayerctlNoDaemon, ADaemonThatNeverAnswersIsATimeout)
{
    BusEnv env;
    // Owns the name and never reads a message: every call waits for --timeout.
    auto mute = sdbus::createSessionBusConnectionWithAddress(env.address());
    mute->requestName("org.layerd1");
    auto start = std::chrono::steady_clock::now();
    Result r = layerctl({"--bus", env.address(), "--timeout", "1", "stacks"});
    EXPECT_EQ(r.status, EX_TEMPFAIL) << r;
    EXPECT_EQ(r.err.rfind("layerctl: ", 0), 0u) << r;
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(20));
}

TEST(LayerctlNoDaemon, NoBusAtTheAddress)
{
    Result r = layerctl({"--bus", "unix:path=/nonexistent/layerd-test-bus", "stacks"});
    EXPECT_EQ(r.status, EX_UNAVAILABLE) << r;
    EXPECT_EQ(r.err.rfind("layerctl: cannot connect to the bus at unix:path=/nonexistent/layerd-test-bus", 0), 0u)
        << r;
}

} // namespace
} // namespace layerd::test

int main(int argc, char** argv)
{
    if (int skip = layerd::test::skip_unless_daemon_runs("layerctl's end-to-end tests", {"dbus-daemon"}); skip != 0)
        return skip;
    ::testing::InitGoogleTest(&argc, argv);
    return RUN_ALL_TESTS();
}
