// SPDX-License-Identifier: LGPL-2.1-or-later
// The layerd daemon on a private D-Bus bus (DESIGN §6, §9): every method of
// org.layerd1.Manager and org.layerd1.Stack through the generated proxy and
// through busctl, the signals, the diff through its fd, errors by name,
// authorisation of an unprivileged caller, and a clean stop with a busy
// mount. Needs root and /dev/fuse (exits 77 otherwise).
#include "bus_env.hpp"
#include "manager_proxy.h"
#include "stack_proxy.h"

#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <functional>
#include <mutex>
#include <set>
#include <thread>

#include <gtest/gtest.h>
#include <sdbus-c++/sdbus-c++.h>

namespace layerd::test {
namespace {

constexpr const char* stack_path = "/org/layerd1/stack/demo";
using Userdata = std::map<std::string, std::string>;

// Everything a test saw arrive, in order, as "Signal arg arg".
class Seen {
public:
    void add(std::string s)
    {
        std::lock_guard lock(mutex_);
        events_.push_back(std::move(s));
        cv_.notify_all();
    }
    // Waits up to 10 s for an event EVENT.
    bool wait_for(const std::string& event)
    {
        std::unique_lock lock(mutex_);
        return cv_.wait_for(lock, std::chrono::seconds(10), [&] {
            return std::find(events_.begin(), events_.end(), event) != events_.end();
        });
    }
    std::string all()
    {
        std::lock_guard lock(mutex_);
        std::string out;
        for (const auto& e : events_)
            out += e + "\n";
        return out;
    }

private:
    std::mutex mutex_;
    std::condition_variable cv_;
    std::vector<std::string> events_;
};

class Manager final : public sdbus::ProxyInterfaces<org::layerd1::Manager_proxy> {
public:
    Manager(sdbus::IConnection& bus, Seen* seen) : ProxyInterfaces(bus, "org.layerd1", "/org/layerd1"), seen_(seen)
    {
        registerProxy();
    }
    ~Manager() { unregisterProxy(); }

private:
    void onStackMounted(const std::string& stack) override { note("StackMounted " + stack); }
    void onStackUnmounted(const std::string& stack) override { note("StackUnmounted " + stack); }
    void onSnapshotCreated(const std::string& stack, const uint32_t& n) override
    {
        note("SnapshotCreated " + stack + " " + std::to_string(n));
    }
    void onSnapshotsDeleted(const std::string& stack, const std::vector<uint32_t>& numbers) override
    {
        std::string s = "SnapshotsDeleted " + stack;
        for (uint32_t n : numbers)
            s += " " + std::to_string(n);
        note(s);
    }
    void onRolledBack(const std::string& stack, const uint32_t& target, const uint32_t& backup) override
    {
        note("RolledBack " + stack + " " + std::to_string(target) + " " + std::to_string(backup));
    }
    void note(std::string s)
    {
        if (seen_)
            seen_->add(std::move(s));
    }
    Seen* seen_;
};

class Stack final : public sdbus::ProxyInterfaces<org::layerd1::Stack_proxy, sdbus::Properties_proxy> {
public:
    Stack(sdbus::IConnection& bus, Seen* seen) : ProxyInterfaces(bus, "org.layerd1", stack_path), seen_(seen)
    {
        registerProxy();
    }
    ~Stack() { unregisterProxy(); }

private:
    void onPropertiesChanged(const std::string& interface, const std::map<std::string, sdbus::Variant>& changed,
                             const std::vector<std::string>& invalidated) override
    {
        if (!seen_ || interface != org::layerd1::Stack_proxy::INTERFACE_NAME)
            return;
        for (const auto& [name, value] : changed)
            seen_->add("PropertiesChanged " + name);
        for (const auto& name : invalidated)
            seen_->add("PropertiesChanged " + name);
    }
    Seen* seen_;
};

// The name of the D-Bus error F throws; "" when it throws none.
std::string error_of(const std::function<void()>& f)
{
    try {
        f();
    } catch (const sdbus::Error& e) {
        return e.getName();
    }
    return "";
}

std::string fd_contents(const sdbus::UnixFd& fd)
{
    ::lseek(fd.get(), 0, SEEK_SET);
    return read_all(fd.get());
}

// The members (methods, properties, signals) an interface XML declares.
std::set<std::string> xml_members(const std::string& file)
{
    std::string xml = read_text(std::string(LAYERD_DBUS_DIR) + "/" + file);
    std::set<std::string> out;
    // Plain finds, not <regex>: GCC 12's regex trips -Wmaybe-uninitialized
    // (so -Werror) in the sanitizer builds.
    for (const char* tag : {"<method name=\"", "<property name=\"", "<signal name=\""}) {
        for (size_t at = xml.find(tag); at != std::string::npos; at = xml.find(tag, at + 1)) {
            size_t start = at + std::strlen(tag);
            out.insert(xml.substr(start, xml.find('"', start) - start));
        }
    }
    return out;
}

class Daemon : public ::testing::Test {
protected:
    void SetUp() override
    {
        env_.write_stack();
        env_.start_layerd();
    }
    std::unique_ptr<sdbus::IConnection> connect() { return sdbus::createSessionBusConnectionWithAddress(env_.address()); }

    BusEnv env_;
};

TEST_F(Daemon, IntrospectionListsEveryMemberOfTheXml)
{
    for (auto [path, xml] : {std::pair{"/org/layerd1", "org.layerd1.Manager.xml"},
                             std::pair{stack_path, "org.layerd1.Stack.xml"}}) {
        int status = 0;
        std::string out = env_.busctl(std::string("introspect --xml-interface org.layerd1 ") + path, &status);
        ASSERT_EQ(status, 0) << out;
        auto members = xml_members(xml);
        ASSERT_GE(members.size(), 3u);
        for (const auto& m : members)
            EXPECT_NE(out.find("name=\"" + m + "\""), std::string::npos) << m << " missing from " << path;
    }
    // The list view: every Stack method with its signature.
    std::string out = env_.busctl(std::string("introspect org.layerd1 ") + stack_path);
    EXPECT_NE(out.find(".ListSnapshots"), std::string::npos) << out;
    EXPECT_NE(out.find("a(usuxussba{ss})"), std::string::npos) << out;
}

TEST_F(Daemon, EveryMethodThroughTheProxyWithSignals)
{
    Seen seen;
    auto bus = connect();
    Manager manager(*bus, &seen);
    Stack stack(*bus, &seen);
    bus->enterEventLoopAsync();

    auto stacks = manager.ListStacks();
    ASSERT_EQ(stacks.size(), 1u);
    EXPECT_EQ(stacks[0].get<0>(), "demo");
    EXPECT_EQ(std::string(stacks[0].get<1>()), stack_path);
    EXPECT_EQ(std::string(manager.GetStack("demo")), stack_path);

    EXPECT_EQ(stack.Name(), "demo");
    EXPECT_EQ(stack.Mountpoint(), env_.mnt());
    EXPECT_EQ(stack.Lowers(), std::vector<std::string>{env_.path("lower")});
    EXPECT_TRUE(stack.Mounted());
    EXPECT_FALSE(stack.ReadOnly());
    EXPECT_EQ(stack.Depth(), 0u);
    EXPECT_GT(stack.LiveLayer(), 0u);
    EXPECT_EQ(read_text(env_.mnt("a.txt")), "lower a\n");

    uint32_t s1 = stack.CreateSnapshot("first", "number", Userdata{{"important", "yes"}, {"tool", "test"}});
    EXPECT_TRUE(seen.wait_for("SnapshotCreated demo " + std::to_string(s1))) << seen.all();
    EXPECT_TRUE(seen.wait_for("PropertiesChanged Depth")) << seen.all();
    EXPECT_EQ(stack.Depth(), 1u);

    write_text(env_.mnt("a.txt"), "changed a\n");
    write_text(env_.mnt("new.txt"), "new\n");
    uint32_t s2 = stack.CreateSnapshot("second", "", {});
    EXPECT_GT(s2, s1);

    auto list = stack.ListSnapshots();
    ASSERT_EQ(list.size(), 2u);
    EXPECT_EQ(list[0].get<0>(), s1);
    EXPECT_EQ(list[0].get<1>(), "single");
    EXPECT_EQ(list[0].get<5>(), "first");
    EXPECT_EQ(list[0].get<6>(), "number");
    EXPECT_TRUE(list[0].get<7>());
    EXPECT_EQ(list[0].get<8>().at("tool"), "test");
    EXPECT_EQ(list[1].get<5>(), "second");
    EXPECT_FALSE(list[1].get<7>());

    auto got = stack.GetSnapshot(s2);
    EXPECT_EQ(got.get<0>(), s2);
    EXPECT_EQ(got.get<4>(), 0u); // created by root

    stack.SetSnapshot(s2, "renamed", "timeline", Userdata{{"k", "v"}});
    got = stack.GetSnapshot(s2);
    EXPECT_EQ(got.get<5>(), "renamed");
    EXPECT_EQ(got.get<6>(), "timeline");
    EXPECT_EQ(got.get<8>(), (Userdata{{"k", "v"}}));

    // The diff comes as an fd of "FLAGS PATH" lines.
    std::string diff = fd_contents(stack.Diff(s1, s2));
    EXPECT_NE(diff.find("c..... /a.txt\n"), std::string::npos) << diff;
    EXPECT_NE(diff.find("+..... /new.txt\n"), std::string::npos) << diff;
    EXPECT_EQ(fd_contents(stack.Diff(s2, s2)), "");
    write_text(env_.mnt("live.txt"), "live\n");
    EXPECT_NE(fd_contents(stack.Diff(s2, 0)).find("+..... /live.txt\n"), std::string::npos);

    uint32_t pre = stack.CreatePreSnapshot("before", "empty-pre-post", {});
    uint32_t post = stack.CreatePostSnapshot(pre, "after", "empty-pre-post", {});
    got = stack.GetSnapshot(post);
    EXPECT_EQ(got.get<1>(), "post");
    EXPECT_EQ(got.get<2>(), pre);

    // Back to the first snapshot; the state before is kept as a new one.
    uint32_t backup = stack.Rollback(s1, false);
    EXPECT_TRUE(seen.wait_for("RolledBack demo " + std::to_string(s1) + " " + std::to_string(backup))) << seen.all();
    EXPECT_EQ(read_text(env_.mnt("a.txt")), "lower a\n");
    EXPECT_FALSE(access(env_.mnt("new.txt").c_str(), F_OK) == 0);

    // Undo a change: live.txt back from the backup.
    stack.UndoChange(backup, {"/live.txt"});
    EXPECT_EQ(read_text(env_.mnt("live.txt")), "live\n");

    stack.DeleteSnapshots({s2});
    EXPECT_TRUE(seen.wait_for("SnapshotsDeleted demo " + std::to_string(s2))) << seen.all();
    EXPECT_EQ(error_of([&] { stack.GetSnapshot(s2); }), "org.layerd1.Error.NoSuchSnapshot");

    // Nothing is old enough for the algorithms' min ages: none go.
    EXPECT_EQ(stack.Cleanup("number"), 0u);
    EXPECT_EQ(stack.Cleanup(""), 0u);

    stack.Unmount();
    EXPECT_TRUE(seen.wait_for("StackUnmounted demo")) << seen.all();
    EXPECT_TRUE(seen.wait_for("PropertiesChanged Mounted")) << seen.all();
    EXPECT_FALSE(stack.Mounted());
    EXPECT_FALSE(is_mounted(env_.mnt()));
    // Reads still work on an unmounted stack.
    EXPECT_EQ(stack.ListSnapshots().size(), 4u); // s1, pre, post, backup

    stack.Mount();
    EXPECT_TRUE(seen.wait_for("StackMounted demo")) << seen.all();
    EXPECT_TRUE(stack.Mounted());
    EXPECT_TRUE(is_mounted(env_.mnt()));
    EXPECT_EQ(read_text(env_.mnt("live.txt")), "live\n");

    manager.Reload();
    EXPECT_EQ(manager.ListStacks().size(), 1u);
    bus->leaveEventLoop();
}

TEST_F(Daemon, DiffLinesEscapeNewlinesAndBackslashes)
{
    auto bus = connect();
    Stack stack(*bus, nullptr);
    uint32_t before = stack.CreateSnapshot("", "", {});
    write_text(env_.mnt("new\nline"), "1");
    write_text(env_.mnt("back\\slash"), "2");
    ::unlink(env_.mnt("a.txt").c_str());
    std::string diff = fd_contents(stack.Diff(before, 0));
    EXPECT_EQ(diff, "-..... /a.txt\n"
                    "+..... /back\\\\slash\n"
                    "+..... /new\\nline\n") << diff;
}

TEST_F(Daemon, EveryMethodThroughBusctl)
{
    const std::string call = std::string("call org.layerd1 ") + stack_path + " org.layerd1.Stack ";
    auto ok = [&](const std::string& args) {
        int status = 0;
        std::string out = env_.busctl(args, &status);
        EXPECT_EQ(status, 0) << args << ": " << out;
        return out;
    };
    EXPECT_EQ(ok("call org.layerd1 /org/layerd1 org.layerd1.Manager ListStacks"),
              std::string("a(so) 1 \"demo\" \"") + stack_path + "\"\n");
    EXPECT_EQ(ok("call org.layerd1 /org/layerd1 org.layerd1.Manager GetStack s demo"),
              std::string("o \"") + stack_path + "\"\n");
    ok("call org.layerd1 /org/layerd1 org.layerd1.Manager Reload");
    EXPECT_EQ(ok(std::string("get-property org.layerd1 ") + stack_path + " org.layerd1.Stack Name Mounted Depth"),
              "s \"demo\"\nb true\nu 0\n");
    ok(std::string("get-property org.layerd1 ") + stack_path + " org.layerd1.Stack Mountpoint Lowers ReadOnly LiveLayer");
    EXPECT_EQ(ok(std::string("get-property org.layerd1 ") + stack_path + " org.layerd1.Stack Timeline PackageSnapshots"),
              "b false\nb false\n");

    EXPECT_EQ(ok(call + "CreateSnapshot ssa{ss} one number 1 important yes"), "u 1\n");
    write_text(env_.mnt("x.txt"), "x\n");
    EXPECT_EQ(ok(call + "CreatePreSnapshot ssa{ss} pre '' 0"), "u 2\n");
    EXPECT_EQ(ok(call + "CreatePostSnapshot ussa{ss} 2 post '' 0"), "u 3\n");
    std::string list = ok(call + "ListSnapshots");
    EXPECT_EQ(list.rfind("a(usuxussba{ss}) 3 1 \"single\" 0 ", 0), 0u) << list;
    EXPECT_NE(ok(call + "GetSnapshot u 3").find("\"post\" 2"), std::string::npos);
    ok(call + "SetSnapshot ussa{ss} 1 renamed '' 0");
    EXPECT_NE(ok(call + "GetSnapshot u 1").find("\"renamed\""), std::string::npos);
    EXPECT_EQ(ok(call + "Diff uu 1 2").rfind("h ", 0), 0u);
    EXPECT_EQ(ok(call + "Rollback ub 1 false"), "u 4\n");
    ok(call + "UndoChange uas 4 1 /x.txt");
    EXPECT_EQ(read_text(env_.mnt("x.txt")), "x\n");
    ok(call + "DeleteSnapshots au 1 3");
    EXPECT_EQ(ok(call + "Cleanup s timeline"), "u 0\n");
    ok(call + "Unmount");
    EXPECT_FALSE(is_mounted(env_.mnt()));
    ok(call + "Mount");
    EXPECT_TRUE(is_mounted(env_.mnt()));
    // A failure shows its message.
    int status = 0;
    std::string out = env_.busctl(call + "GetSnapshot u 99", &status);
    EXPECT_NE(status, 0);
    EXPECT_NE(out.find("no snapshot 99"), std::string::npos) << out;
}

TEST_F(Daemon, ErrorsByName)
{
    auto bus = connect();
    Manager manager(*bus, nullptr);
    Stack stack(*bus, nullptr);
    const std::string prefix = "org.layerd1.Error.";

    EXPECT_EQ(error_of([&] { manager.GetStack("nope"); }), prefix + "NoSuchStack");
    EXPECT_EQ(error_of([&] { manager.GetStack(std::string(5000, 'x')); }), prefix + "InvalidArgument");
    {
        auto other = sdbus::createProxy(*bus, "org.layerd1", "/org/layerd1/stack/nope");
        EXPECT_EQ(error_of([&] {
                      other->callMethod("ListSnapshots").onInterface("org.layerd1.Stack");
                  }),
                  "org.freedesktop.DBus.Error.UnknownObject");
    }

    EXPECT_EQ(error_of([&] { stack.GetSnapshot(99); }), prefix + "NoSuchSnapshot");
    EXPECT_EQ(error_of([&] { stack.Rollback(99, false); }), prefix + "NoSuchSnapshot");
    EXPECT_EQ(error_of([&] { stack.Diff(0, 99); }), prefix + "NoSuchSnapshot");
    EXPECT_EQ(error_of([&] { stack.SetSnapshot(99, "", "", {}); }), prefix + "NoSuchSnapshot");
    EXPECT_EQ(error_of([&] { stack.DeleteSnapshots({99}); }), prefix + "NoSuchSnapshot");
    EXPECT_EQ(error_of([&] { stack.CreatePostSnapshot(99, "", "", {}); }), prefix + "NoSuchSnapshot");
    uint32_t single = stack.CreateSnapshot("", "", {});
    EXPECT_EQ(error_of([&] { stack.CreatePostSnapshot(single, "", "", {}); }), prefix + "InvalidArgument");

    // Oversized or malformed input.
    EXPECT_EQ(error_of([&] { stack.CreateSnapshot(std::string(4097, 'd'), "", {}); }), prefix + "InvalidArgument");
    EXPECT_EQ(error_of([&] { stack.CreateSnapshot(std::string(4096, 'd'), "", {}); }), "");
    EXPECT_EQ(error_of([&] { stack.CreateSnapshot("", "bogus", {}); }), prefix + "InvalidArgument");
    Userdata many;
    for (int i = 0; i < 65; ++i)
        many["k" + std::to_string(i)] = "v";
    EXPECT_EQ(error_of([&] { stack.CreateSnapshot("", "", many); }), prefix + "InvalidArgument");
    EXPECT_EQ(error_of([&] { stack.CreateSnapshot("", "", {{std::string(257, 'k'), "v"}}); }),
              prefix + "InvalidArgument");
    EXPECT_EQ(error_of([&] { stack.CreateSnapshot("", "", {{"k", std::string(257, 'v')}}); }),
              prefix + "InvalidArgument");
    EXPECT_EQ(error_of([&] { stack.CreateSnapshot("", "", {{"a=b", "v"}}); }), prefix + "InvalidArgument");
    EXPECT_EQ(error_of([&] { stack.CreateSnapshot("", "", {{"", "v"}}); }), prefix + "InvalidArgument");
    EXPECT_EQ(error_of([&] { stack.SetSnapshot(single, "", "", many); }), prefix + "InvalidArgument");
    EXPECT_EQ(error_of([&] { stack.DeleteSnapshots(std::vector<uint32_t>(4097, 1)); }), prefix + "InvalidArgument");
    EXPECT_EQ(error_of([&] { stack.UndoChange(single, {"relative"}); }), prefix + "InvalidArgument");
    EXPECT_EQ(error_of([&] { stack.UndoChange(single, std::vector<std::string>(4097, "/a")); }),
              prefix + "InvalidArgument");
    EXPECT_EQ(error_of([&] { stack.Cleanup("bogus"); }), prefix + "InvalidArgument");

    // An unmounted stack refuses what needs the mount.
    stack.Unmount();
    EXPECT_EQ(error_of([&] { stack.Unmount(); }), prefix + "NotMounted");
    EXPECT_EQ(error_of([&] { stack.CreateSnapshot("", "", {}); }), prefix + "NotMounted");
    EXPECT_EQ(error_of([&] { stack.Rollback(single, false); }), prefix + "NotMounted");
    EXPECT_EQ(error_of([&] { stack.Diff(single, 0); }), prefix + "NotMounted");
    EXPECT_EQ(error_of([&] { stack.Cleanup(""); }), prefix + "NotMounted");
    // The daemon survived all of it.
    EXPECT_EQ(manager.ListStacks().size(), 1u);
}

// Runs FN in a child as nobody (uid and gid 65534, no supplementary
// groups) on its own bus connection; "" or what went wrong.
std::string as_nobody(const std::string& address, const std::function<std::string(sdbus::IConnection&, Manager&, Stack&)>& fn)
{
    int pipefd[2];
    if (::pipe2(pipefd, O_CLOEXEC) != 0)
        return "pipe failed";
    pid_t pid = ::fork();
    if (pid == 0) {
        ::close(pipefd[0]);
        std::string result;
        if (::setgroups(0, nullptr) != 0 || ::setgid(65534) != 0 || ::setuid(65534) != 0) {
            result = "cannot become nobody";
        } else {
            try {
                auto bus = sdbus::createSessionBusConnectionWithAddress(address);
                Manager manager(*bus, nullptr);
                Stack stack(*bus, nullptr);
                result = fn(*bus, manager, stack);
            } catch (const std::exception& e) {
                result = std::string("exception: ") + e.what();
            }
        }
        (void)!::write(pipefd[1], result.data(), result.size());
        ::_exit(0);
    }
    ::close(pipefd[1]);
    std::string result = read_all(pipefd[0]);
    ::close(pipefd[0]);
    int status = 0;
    ::waitpid(pid, &status, 0);
    return result;
}

TEST_F(Daemon, NobodyReadsButChangesOnlyOnceAllowed)
{
    auto bus = connect();
    Stack root_stack(*bus, nullptr);
    uint32_t s1 = root_stack.CreateSnapshot("by root", "", {});

    std::string problems = as_nobody(env_.address(), [&](sdbus::IConnection& conn, Manager& manager, Stack& stack) {
        std::string out;
        auto expect = [&](const char* what, const std::string& want, const std::function<void()>& f) {
            std::string got = error_of(f);
            if (got != want)
                out += std::string(what) + ": got '" + got + "', want '" + want + "'\n";
        };
        const std::string denied = "org.layerd1.Error.PermissionDenied";
        // The reads.
        expect("ListStacks", "", [&] { manager.ListStacks(); });
        expect("GetStack", "", [&] { manager.GetStack("demo"); });
        expect("ListSnapshots", "", [&] { stack.ListSnapshots(); });
        expect("GetSnapshot", "", [&] { stack.GetSnapshot(s1); });
        expect("Diff", "", [&] { stack.Diff(s1, 0); });
        expect("Get Depth", "", [&] { stack.Depth(); });
        expect("GetAll", "", [&] { stack.GetAll("org.layerd1.Stack"); });
        expect("Introspect", "", [&] {
            sdbus::createProxy(conn, "org.layerd1", stack_path)
                ->callMethod("Introspect")
                .onInterface("org.freedesktop.DBus.Introspectable");
        });
        // Every changing method.
        expect("Reload", denied, [&] { manager.Reload(); });
        expect("Mount", denied, [&] { stack.Mount(); });
        expect("Unmount", denied, [&] { stack.Unmount(); });
        expect("CreateSnapshot", denied, [&] { stack.CreateSnapshot("", "", {}); });
        expect("CreatePreSnapshot", denied, [&] { stack.CreatePreSnapshot("", "", {}); });
        expect("CreatePostSnapshot", denied, [&] { stack.CreatePostSnapshot(s1, "", "", {}); });
        expect("SetSnapshot", denied, [&] { stack.SetSnapshot(s1, "mine", "", {}); });
        expect("DeleteSnapshots", denied, [&] { stack.DeleteSnapshots({s1}); });
        expect("Rollback", denied, [&] { stack.Rollback(s1, false); });
        expect("UndoChange", denied, [&] { stack.UndoChange(s1, {"/a.txt"}); });
        expect("Cleanup", denied, [&] { stack.Cleanup(""); });
        return out;
    });
    EXPECT_EQ(problems, "");
    EXPECT_EQ(root_stack.ListSnapshots().size(), 1u);
    EXPECT_TRUE(root_stack.Mounted());

    // Listed in allow_users, after a Reload by root: allowed.
    env_.write_stack({"nobody"});
    Manager manager(*bus, nullptr);
    manager.Reload();
    problems = as_nobody(env_.address(), [&](sdbus::IConnection&, Manager&, Stack& stack) -> std::string {
        try {
            uint32_t n = stack.CreateSnapshot("by nobody", "", {});
            if (stack.GetSnapshot(n).get<4>() != 65534)
                return "the snapshot does not record uid 65534";
            stack.SetSnapshot(n, "still nobody", "", {});
            stack.DeleteSnapshots({n});
        } catch (const sdbus::Error& e) {
            return e.getName() + ": " + e.getMessage();
        }
        return "";
    });
    EXPECT_EQ(problems, "");

    // Through its group instead, nogroup (65534), and refused again once
    // neither list names it.
    env_.write_stack({}, "allow_groups: [nogroup]\n");
    manager.Reload();
    problems = as_nobody(env_.address(), [&](sdbus::IConnection&, Manager&, Stack& stack) -> std::string {
        return error_of([&] { stack.SetSnapshot(s1, "via nogroup", "", {}); });
    });
    EXPECT_EQ(problems, "");
    EXPECT_EQ(root_stack.GetSnapshot(s1).get<5>(), "via nogroup");
    env_.write_stack();
    manager.Reload();
    problems = as_nobody(env_.address(), [&](sdbus::IConnection&, Manager&, Stack& stack) -> std::string {
        return error_of([&] { stack.SetSnapshot(s1, "again", "", {}); });
    });
    EXPECT_EQ(problems, "org.layerd1.Error.PermissionDenied");
}

TEST_F(Daemon, SigtermWithABusyMountExitsZeroAndLeavesNoMount)
{
    int fd = ::open(env_.mnt("a.txt").c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    ASSERT_TRUE(is_mounted(env_.mnt()));
    int status = env_.stop_layerd();
    ::close(fd);
    ASSERT_NE(status, -1) << "layerd did not exit on SIGTERM\n" << env_.layerd_log();
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status << "\n" << env_.layerd_log();
    EXPECT_FALSE(is_mounted(env_.mnt()));
    EXPECT_NE(env_.layerd_log().find("busy"), std::string::npos) << env_.layerd_log();
}

TEST_F(Daemon, ReadsAnswerWhileAStackIsBusy)
{
    // A big file changed in its last byte: the diff compares it byte by
    // byte, which takes a while. Reads on the bus must not wait for it (the
    // diffs run on the stack's worker).
    {
        std::string chunk(1 << 20, 'a');
        int fd = ::open(env_.path("lower/big").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        ASSERT_GE(fd, 0);
        for (int i = 0; i < 512; ++i)
            ASSERT_EQ(::write(fd, chunk.data(), chunk.size()), static_cast<ssize_t>(chunk.size()));
        ::close(fd);
    }
    auto bus = connect();
    Stack stack(*bus, nullptr);
    Manager manager(*bus, nullptr);
    uint32_t s0 = stack.CreateSnapshot("", "", {});
    {
        int fd = ::open(env_.mnt("big").c_str(), O_WRONLY | O_CLOEXEC);
        ASSERT_GE(fd, 0);
        ASSERT_EQ(::pwrite(fd, "b", 1, (512 << 20) - 1), 1);
        ::close(fd);
    }
    uint32_t s1 = stack.CreateSnapshot("", "", {});
    ASSERT_EQ(fd_contents(stack.Diff(s0, s1)), "c..... /big\n");
    using Clock = std::chrono::steady_clock;
    std::atomic<bool> done{false};
    Clock::duration diff_time{};
    constexpr int diffs = 4;
    std::string slow_error;
    std::thread slow([&] {
        try {
            auto bus2 = connect();
            Stack s(*bus2, nullptr);
            auto start = Clock::now();
            for (int i = 0; i < diffs; ++i)
                (void)s.Diff(s0, s1);
            diff_time = Clock::now() - start;
        } catch (const std::exception& e) {
            slow_error = e.what();
        }
        done = true;
    });
    Clock::duration worst{};
    unsigned reads = 0;
    auto timed = [&](const std::function<void()>& read) {
        auto start = Clock::now();
        read();
        worst = std::max(worst, Clock::now() - start);
        ++reads;
    };
    std::string read_error;
    try {
        while (!done) {
            timed([&] { manager.ListStacks(); });
            timed([&] { stack.ListSnapshots(); });
            timed([&] { stack.Depth(); });
        }
    } catch (const std::exception& e) {
        read_error = e.what();
    }
    slow.join();
    ASSERT_EQ(slow_error, "") << env_.layerd_log();
    ASSERT_EQ(read_error, "") << env_.layerd_log();
    auto ms = [](Clock::duration d) { return std::chrono::duration_cast<std::chrono::milliseconds>(d).count(); };
    auto one_diff = diff_time / diffs;
    std::printf("%d diffs in %lld ms; %u reads, the slowest %lld ms\n", diffs, static_cast<long long>(ms(diff_time)),
                reads, static_cast<long long>(ms(worst)));

    // More calls than a stack queues: the rest are refused as Busy, at once.
    auto bus3 = connect();
    auto proxy = sdbus::createProxy(*bus3, "org.layerd1", stack_path);
    bus3->enterEventLoopAsync();
    struct Burst {
        int ok = 0, busy = 0;
        std::string other;
        bool all_answered = false;
    };
    auto burst = [&](uint32_t a, uint32_t b, int calls) {
        std::mutex mutex;
        std::condition_variable cv;
        int answered = 0;
        Burst r;
        for (int i = 0; i < calls; ++i) {
            proxy->callMethodAsync("Diff")
                .onInterface("org.layerd1.Stack")
                .withArguments(a, b)
                .uponReplyInvoke([&](const sdbus::Error* error, const sdbus::UnixFd&) {
                    std::lock_guard lock(mutex);
                    ++answered;
                    if (!error)
                        ++r.ok;
                    else if (error->getName() == "org.layerd1.Error.Busy")
                        ++r.busy;
                    else if (r.other.find(error->getName()) == std::string::npos)
                        r.other += error->getName() + " ";
                    cv.notify_all();
                });
        }
        std::unique_lock lock(mutex);
        r.all_answered = cv.wait_for(lock, std::chrono::seconds(60), [&] { return answered == calls; });
        return r;
    };
    constexpr int calls = 40;
    Burst slow_burst = burst(s0, s1, calls);
    // Many quick calls (fewer than the bus's 128 pending replies per
    // connection): the bus thread queues while the worker finishes and
    // frees jobs, over and over (a lock-order deadlock showed here).
    Burst quick_burst = burst(s1, s1, 100);
    // Before anything can return: the callbacks use this frame.
    bus3->leaveEventLoop();
    ASSERT_TRUE(slow_burst.all_answered) << env_.layerd_log();
    ASSERT_TRUE(quick_burst.all_answered) << env_.layerd_log();
    EXPECT_GE(slow_burst.ok, 1);
    EXPECT_GE(slow_burst.busy, 1);
    EXPECT_EQ(slow_burst.other, "");
    EXPECT_EQ(slow_burst.ok + slow_burst.busy, calls);
    EXPECT_EQ(quick_burst.other, "");
    EXPECT_GE(quick_burst.ok, 1);

    // A read that waited for a diff would take as long as one.
    if (one_diff < std::chrono::milliseconds(20))
        GTEST_SKIP() << "diffs are too fast here (" << ms(one_diff) << " ms) to tell whether reads waited";
    EXPECT_LT(worst, one_diff / 2);
    EXPECT_GE(reads, static_cast<unsigned>(diffs));
}

TEST_F(Daemon, SighupReloadsTheConfiguration)
{
    ::mkdir(env_.path("mnt2").c_str(), 0755);
    write_text(env_.path("cfg/stacks.d/two.yaml"),
               "mountpoint: " + env_.path("mnt2") + "\nlowers: [" + env_.path("lower") + "]\n");
    ASSERT_EQ(::kill(env_.layerd_pid(), SIGHUP), 0);
    auto bus = connect();
    Manager manager(*bus, nullptr);
    auto wait_for_count = [&](size_t n) {
        for (int i = 0; i < 200; ++i) {
            if (manager.ListStacks().size() == n)
                return true;
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
        return false;
    };
    ASSERT_TRUE(wait_for_count(2)) << env_.layerd_log();
    EXPECT_EQ(std::string(manager.GetStack("two")), "/org/layerd1/stack/two");
    auto two = sdbus::createProxy(*bus, "org.layerd1", "/org/layerd1/stack/two");
    sdbus::Variant mounted;
    two->callMethod("Get")
        .onInterface("org.freedesktop.DBus.Properties")
        .withArguments(std::string("org.layerd1.Stack"), std::string("Mounted"))
        .storeResultsTo(mounted);
    EXPECT_FALSE(mounted.get<bool>()); // a reload mounts nothing by itself
    two->callMethod("Mount").onInterface("org.layerd1.Stack");
    EXPECT_TRUE(is_mounted(env_.path("mnt2")));
    EXPECT_EQ(read_text(env_.path("mnt2/a.txt")), "lower a\n");
    // Gone from the config while mounted: the reload refuses to drop it
    // and says what to do; it stays, mounted, until unmounted.
    ::unlink(env_.path("cfg/stacks.d/two.yaml").c_str());
    std::string refused;
    try {
        manager.Reload();
    } catch (const sdbus::Error& e) {
        refused = e.getName() + ": " + e.getMessage();
    }
    EXPECT_NE(refused.find("org.layerd1.Error.Busy: "), std::string::npos) << refused;
    EXPECT_NE(refused.find("layerctl unmount two"), std::string::npos) << refused;
    EXPECT_EQ(manager.ListStacks().size(), 2u);
    EXPECT_TRUE(is_mounted(env_.path("mnt2")));
    two->callMethod("Unmount").onInterface("org.layerd1.Stack");
    EXPECT_FALSE(is_mounted(env_.path("mnt2")));
    // The Unmount's reply may come before its worker is done with it: a
    // reload then says so, and the next one removes the stack.
    for (int i = 0;; ++i) {
        try {
            manager.Reload();
            break;
        } catch (const sdbus::Error& e) {
            ASSERT_NE(e.getMessage().find("is still finishing a call: reload again in a moment"), std::string::npos)
                << e.getName() << ": " << e.getMessage();
            ASSERT_LT(i, 100) << "the stack's worker never finished its Unmount";
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
    }
    EXPECT_EQ(manager.ListStacks().size(), 1u);
    EXPECT_EQ(error_of([&] { manager.GetStack("two"); }), "org.layerd1.Error.NoSuchStack");
}

TEST_F(Daemon, ReloadRefusesAChangeThatNeedsARemountOfAMountedStack)
{
    auto bus = connect();
    Manager manager(*bus, nullptr);
    Stack stack(*bus, nullptr);
    ASSERT_TRUE(stack.Mounted());
    const std::string before = stack.Mountpoint();
    ::mkdir(env_.path("elsewhere").c_str(), 0755);
    // A new mountpoint, and a key a mounted stack can take as it is.
    write_text(env_.path("cfg/stacks.d/demo.yaml"), "mountpoint: " + env_.path("elsewhere") + "\nlowers: [" +
                                                        env_.path("lower") + "]\nboot: true\n");
    std::string refused;
    try {
        manager.Reload();
    } catch (const sdbus::Error& e) {
        refused = e.getName() + ": " + e.getMessage();
    }
    EXPECT_NE(refused.find("org.layerd1.Error.Busy: "), std::string::npos) << refused;
    EXPECT_NE(refused.find("mountpoint"), std::string::npos) << refused;
    EXPECT_NE(refused.find("remount"), std::string::npos) << refused;
    // Nothing moved: still mounted where it was, serving the same files.
    EXPECT_TRUE(stack.Mounted());
    EXPECT_EQ(stack.Mountpoint(), before);
    EXPECT_TRUE(is_mounted(before));
    EXPECT_EQ(read_text(before + "/a.txt"), "lower a\n");
    // Unmounted, the same reload goes through and the next mount uses it.
    stack.Unmount();
    manager.Reload();
    EXPECT_EQ(stack.Mountpoint(), env_.path("elsewhere"));
    stack.Mount();
    EXPECT_TRUE(is_mounted(env_.path("elsewhere")));
    EXPECT_FALSE(is_mounted(before));
    stack.Unmount();
}

TEST_F(Daemon, ReloadSwitchesTimelineAndPackageSnapshotsOfAMountedStack)
{
    Seen seen;
    auto bus = connect();
    Manager manager(*bus, nullptr);
    Stack stack(*bus, &seen);
    bus->enterEventLoopAsync();
    ASSERT_TRUE(stack.Mounted());
    EXPECT_FALSE(stack.PackageSnapshots());
    EXPECT_FALSE(stack.Timeline());
    const uint64_t live = stack.LiveLayer();
    env_.write_stack({}, "timeline: true\npackage_snapshots: true\n");
    manager.Reload();
    // Live keys: no remount, the same live layer, and the signal says so.
    EXPECT_TRUE(seen.wait_for("PropertiesChanged PackageSnapshots")) << seen.all();
    EXPECT_TRUE(seen.wait_for("PropertiesChanged Timeline")) << seen.all();
    EXPECT_TRUE(stack.PackageSnapshots());
    EXPECT_TRUE(stack.Timeline());
    EXPECT_TRUE(stack.Mounted());
    EXPECT_EQ(stack.LiveLayer(), live);
    env_.write_stack();
    manager.Reload();
    EXPECT_FALSE(stack.PackageSnapshots());
    EXPECT_FALSE(stack.Timeline());
    bus->leaveEventLoop();
}

TEST(DaemonStart, BadStackFilesAndMissingDirsDoNotStopTheOthers)
{
    BusEnv env;
    env.write_stack();
    write_text(env.path("cfg/stacks.d/bad.yaml"), "mountpoint: /x\nlowers: [/a\n");
    write_text(env.path("cfg/stacks.d/gone.yaml"),
               "mountpoint: " + env.path("no/mnt") + "\nlowers: [" + env.path("no/lower") + "]\nboot: true\n");
    env.start_layerd();
    auto bus = sdbus::createSessionBusConnectionWithAddress(env.address());
    Manager manager(*bus, nullptr);
    std::vector<std::string> names;
    for (const auto& s : manager.ListStacks())
        names.push_back(s.get<0>());
    EXPECT_EQ(names, (std::vector<std::string>{"demo", "gone"}));
    EXPECT_TRUE(is_mounted(env.mnt()));
    std::string log = env.layerd_log();
    EXPECT_NE(log.find(env.path("cfg/stacks.d/bad.yaml") + ":"), std::string::npos) << log;
    EXPECT_NE(log.find("<3>stack gone: cannot mount"), std::string::npos) << log;
    std::string notes = env.notifications();
    EXPECT_NE(notes.find("READY=1"), std::string::npos) << notes;
    EXPECT_NE(notes.find("STATUS=1 of 2 boot stacks mounted"), std::string::npos) << notes;
}

TEST(DaemonStart, MountsFirstAndJoinsTheBusWhenItAppears)
{
    BusEnv env(false);
    env.write_stack();
    env.start_layerd(false);
    std::string notes;
    for (int i = 0; i < 200 && notes.find("READY=1") == std::string::npos; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        notes += env.notifications();
    }
    EXPECT_NE(notes.find("READY=1"), std::string::npos) << env.layerd_log();
    EXPECT_TRUE(is_mounted(env.mnt())); // before any bus exists
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    env.start_bus();
    env.wait_for_name();
    auto bus = sdbus::createSessionBusConnectionWithAddress(env.address());
    Manager manager(*bus, nullptr);
    EXPECT_EQ(manager.ListStacks().size(), 1u);
}

TEST(DaemonStart, SigtermBeforeTheBusUnmountsAndExitsZero)
{
    BusEnv env(false);
    env.write_stack();
    env.set_layerd_env("WATCHDOG_USEC", "200000");
    env.start_layerd(false);
    std::string notes;
    for (int i = 0; i < 200 && notes.find("WATCHDOG=1") == std::string::npos; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        notes += env.notifications();
    }
    EXPECT_NE(notes.find("READY=1"), std::string::npos) << env.layerd_log();
    // Fed while it waits for the bus.
    EXPECT_NE(notes.find("WATCHDOG=1"), std::string::npos) << notes;
    ASSERT_TRUE(is_mounted(env.mnt()));
    int status = env.stop_layerd();
    EXPECT_TRUE(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0) << status << env.layerd_log();
    EXPECT_FALSE(is_mounted(env.mnt()));
    EXPECT_NE(env.notifications().find("STOPPING=1"), std::string::npos);
}

TEST(DaemonStart, ReadOnlyStackServesItsLowersAndRefusesSnapshots)
{
    BusEnv env;
    env.write_stack({}, "upper: false\n");
    env.start_layerd();
    ASSERT_TRUE(is_mounted(env.mnt())) << env.layerd_log();
    auto bus = sdbus::createSessionBusConnectionWithAddress(env.address());
    Stack stack(*bus, nullptr);
    EXPECT_TRUE(stack.ReadOnly());
    EXPECT_TRUE(stack.Mounted());
    EXPECT_EQ(stack.Depth(), 0u);
    // What the lower holds, and nothing can be written.
    EXPECT_EQ(read_text(env.mnt("a.txt")), "lower a\n");
    int fd = ::open(env.mnt("new-file").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    int err = errno;
    if (fd >= 0)
        ::close(fd);
    EXPECT_EQ(fd, -1);
    EXPECT_EQ(err, EROFS);
    std::string error = error_of([&] { stack.CreateSnapshot("", "", {}); });
    EXPECT_EQ(error, "org.layerd1.Error.InvalidArgument");
    EXPECT_TRUE(stack.ListSnapshots().empty());
}

TEST(DaemonLimits, DepthLimitIsNamedAndSaysWhatToRun)
{
    BusEnv env;
    env.write_stack({}, "max_depth: 2\n");
    env.start_layerd();
    auto bus = sdbus::createSessionBusConnectionWithAddress(env.address());
    Stack stack(*bus, nullptr);
    stack.CreateSnapshot("", "", {});
    stack.CreateSnapshot("", "", {});
    EXPECT_EQ(stack.Depth(), 2u);
    try {
        stack.CreateSnapshot("", "", {});
        ADD_FAILURE() << "a third snapshot went past max_depth 2";
    } catch (const sdbus::Error& e) {
        EXPECT_EQ(e.getName(), "org.layerd1.Error.DepthLimit");
        EXPECT_NE(e.getMessage().find("cleanup"), std::string::npos) << e.getMessage();
    }
}

TEST(DaemonCleanup, NumberCleanupDeletesBeyondTheLimit)
{
    BusEnv env;
    env.write_stack({}, "cleanup:\n  number: {limit: 1, min_age: 0}\n");
    env.start_layerd();
    Seen seen;
    auto bus = sdbus::createSessionBusConnectionWithAddress(env.address());
    Manager manager(*bus, &seen);
    Stack stack(*bus, nullptr);
    bus->enterEventLoopAsync();
    uint32_t a = stack.CreateSnapshot("a", "number", {});
    uint32_t b = stack.CreateSnapshot("b", "number", {});
    uint32_t c = stack.CreateSnapshot("c", "number", {});
    uint32_t keep = stack.CreateSnapshot("unmarked", "", {});
    EXPECT_EQ(stack.Cleanup("timeline"), 0u);
    EXPECT_EQ(stack.Cleanup("number"), 2u);
    EXPECT_TRUE(seen.wait_for("SnapshotsDeleted demo " + std::to_string(a) + " " + std::to_string(b))) << seen.all();
    std::vector<uint32_t> left;
    for (const auto& s : stack.ListSnapshots())
        left.push_back(s.get<0>());
    EXPECT_EQ(left, (std::vector<uint32_t>{c, keep}));
    bus->leaveEventLoop();
}

} // namespace
} // namespace layerd::test

int main(int argc, char** argv)
{
    if (int skip = layerd::test::skip_unless_daemon_runs("the D-Bus daemon tests", {"dbus-daemon", "busctl"}); skip != 0)
        return skip;
    ::testing::InitGoogleTest(&argc, argv);
    return RUN_ALL_TESTS();
}
