// SPDX-License-Identifier: LGPL-2.1-or-later
// The layerd-fs command line (DESIGN.md §3): on bad input it prints ONE line
// to stderr naming the offending path or option and the reason, exits
// non-zero and mounts nothing. It is run as a user runs it: without -f, so on
// success it goes to the background once the mount is live. Also the good
// corner cases: a stack mounted over its own lower dir, and mount(8) through
// mount.fuse3 with a plain umount(8) ending the daemon.
#include "mount_fixture.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <initializer_list>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace layerd::test {
namespace {

// "mountpoint fstype" of every mount at or below dir, in mount order.
std::vector<std::string> mounts_below(const std::string& dir)
{
    std::vector<std::string> out;
    for (const auto& m : mount_table())
        if (m.mountpoint == dir || m.mountpoint.rfind(dir + "/", 0) == 0)
            out.push_back(m.mountpoint + " " + m.fstype);
    return out;
}

bool layerd_mounted_at(const std::string& mp)
{
    for (const auto& m : mount_table())
        if (m.mountpoint == mp && m.fstype == "fuse.layerd-fs")
            return true;
    return false;
}

std::string basename_of(const std::string& p)
{
    auto s = p.rfind('/');
    return s == std::string::npos ? p : p.substr(s + 1);
}

std::string dirname_of(const std::string& p)
{
    auto s = p.rfind('/');
    return s == std::string::npos ? "." : (s == 0 ? "/" : p.substr(0, s));
}

std::vector<std::string> cmdline_of(pid_t pid)
{
    std::ifstream in("/proc/" + std::to_string(pid) + "/cmdline", std::ios::binary);
    std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::vector<std::string> args;
    for (size_t pos = 0; pos < all.size();) {
        auto end = all.find('\0', pos);
        if (end == std::string::npos)
            end = all.size();
        args.push_back(all.substr(pos, end - pos));
        pos = end + 1;
    }
    return args;
}

// Pids of layerd-fs processes (argv[0] named layerd-fs) that have an argument
// equal to `arg` (a mountpoint) or, with `substring`, containing it.
std::vector<pid_t> layerd_processes(const std::string& arg, bool substring = false)
{
    std::vector<pid_t> out;
    DIR* d = ::opendir("/proc");
    if (!d)
        return out;
    while (dirent* de = ::readdir(d)) {
        char* end = nullptr;
        long pid = std::strtol(de->d_name, &end, 10);
        if (*end != '\0' || pid <= 0 || pid == ::getpid())
            continue;
        auto args = cmdline_of(static_cast<pid_t>(pid));
        if (args.empty() || basename_of(args[0]) != "layerd-fs")
            continue;
        for (size_t i = 1; i < args.size(); ++i)
            if (substring ? args[i].find(arg) != std::string::npos : args[i] == arg) {
                out.push_back(static_cast<pid_t>(pid));
                break;
            }
    }
    ::closedir(d);
    return out;
}

// Waits up to `seconds` for no layerd-fs process to have `arg` as an
// argument (or, with `substring`, in one).
std::vector<pid_t> lingering_processes(const std::string& arg, double seconds, bool substring = false)
{
    auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    for (;;) {
        auto pids = layerd_processes(arg, substring);
        if (pids.empty() || std::chrono::steady_clock::now() > deadline)
            return pids;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
}

std::string pids_text(const std::vector<pid_t>& pids)
{
    std::string s;
    for (pid_t p : pids) {
        s += (s.empty() ? "" : "; ") + std::to_string(p) + ":";
        for (const auto& a : cmdline_of(p))
            s += " " + a;
    }
    return s;
}

bool entries_empty(const std::string& dir)
{
    DIR* d = ::opendir(dir.c_str());
    if (!d)
        return true;
    bool empty = true;
    while (dirent* de = ::readdir(d))
        if (std::strcmp(de->d_name, ".") != 0 && std::strcmp(de->d_name, "..") != 0)
            empty = false;
    ::closedir(d);
    return empty;
}

std::string lower_case(std::string s)
{
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
    return s;
}

struct RunResult {
    bool exited = false;
    bool timed_out = false;
    int status = -1;
    std::string out, err;
    std::string command;
};

class BadInputTest : public OverlayTest {
protected:
    void SetUp() override
    {
        OverlayTest::SetUp();
        ASSERT_FALSE(HasFatalFailure());
        write_file(lower(0, "own.txt"), "top lower\n");
        write_file(lower(1, "bottom.txt"), "bottom lower\n");
    }

    void TearDown() override
    {
        // Tear down whatever is still mounted under the test dir, FUSE first
        // aborted so nothing can hang, then kill layerd-fs processes left for
        // it (all started by this test).
        for (int i = 0; i < 20; ++i) {
            std::vector<MountEntry> mine;
            for (const auto& m : mount_table())
                if (m.mountpoint.rfind(root_ + "/", 0) == 0)
                    mine.push_back(m);
            if (mine.empty())
                break;
            const MountEntry& m = mine.back();
            if (m.fstype.rfind("fuse", 0) == 0) {
                std::ofstream abort("/sys/fs/fuse/connections/" + std::to_string(m.minor) + "/abort");
                abort << "1";
            }
            ::umount2(m.mountpoint.c_str(), MNT_DETACH);
        }
        for (pid_t p : layerd_processes(root_ + "/", true)) {
            ::kill(p, SIGKILL);
            ::waitpid(p, nullptr, WNOHANG);
        }
        OverlayTest::TearDown();
    }

    // Runs argv (argv[0] looked up in PATH) with stdio in files, waits up to 10 s.
    RunResult run(const std::vector<std::string>& args, const std::string& path_prefix = "")
    {
        RunResult r;
        for (const auto& a : args)
            r.command += (r.command.empty() ? "" : " ") + a;
        std::string out_path = root_ + "/run" + std::to_string(runs_) + ".out";
        std::string err_path = root_ + "/run" + std::to_string(runs_++) + ".err";
        std::vector<std::string> env_strings;
        for (char** e = environ; *e; ++e) {
            std::string s = *e;
            if (!path_prefix.empty() && s.rfind("PATH=", 0) == 0)
                continue;
            env_strings.push_back(s);
        }
        if (!path_prefix.empty()) {
            const char* old = std::getenv("PATH");
            env_strings.push_back("PATH=" + path_prefix + ":" + (old ? old : "/usr/sbin:/usr/bin:/sbin:/bin"));
        }
        std::vector<char*> envp;
        for (auto& s : env_strings)
            envp.push_back(s.data());
        envp.push_back(nullptr);
        std::vector<std::string> argv_strings = args;
        std::vector<char*> argv;
        for (auto& a : argv_strings)
            argv.push_back(a.data());
        argv.push_back(nullptr);

        posix_spawn_file_actions_t actions;
        posix_spawn_file_actions_init(&actions);
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
        posix_spawn_file_actions_addopen(&actions, 1, out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        posix_spawn_file_actions_addopen(&actions, 2, err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        pid_t pid = -1;
        int rc = posix_spawnp(&pid, argv[0], &actions, nullptr, argv.data(), envp.data());
        posix_spawn_file_actions_destroy(&actions);
        if (rc != 0) {
            r.err = std::string("spawn failed: ") + strerror(rc);
            return r;
        }
        int status = 0;
        for (int i = 0; i < 1000; ++i) {
            if (::waitpid(pid, &status, WNOHANG) == pid) {
                r.exited = WIFEXITED(status);
                r.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
                break;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        if (r.status == -1) {
            r.timed_out = true;
            ::kill(pid, SIGKILL);
            ::waitpid(pid, nullptr, 0);
        }
        r.out = read_file(out_path);
        r.err = read_file(err_path);
        return r;
    }

    RunResult run_layerd(const std::vector<std::string>& args)
    {
        std::vector<std::string> all{layerd_fs_binary()};
        all.insert(all.end(), args.begin(), args.end());
        return run(all);
    }

    std::string layers() const
    {
        return "lowerdir=" + lower(0) + ":" + lower(1) + ",upperdir=" + upper() + ",workdir=" + work();
    }

    // Runs layerd-fs with args and checks that it refused: non-zero exit, one
    // stderr line naming one of `names` (paths or options) and giving a reason
    // (one of `reasons` when given, case-insensitive), nothing mounted under
    // the test dir, no daemon left behind for `mountpoint`.
    void expect_refused(const std::vector<std::string>& args, const std::string& mountpoint,
                        const std::vector<std::string>& names, const std::vector<std::string>& reasons = {})
    {
        std::vector<std::string> before = mounts_below(root_);
        RunResult r = run_layerd(args);
        SCOPED_TRACE("command: " + r.command);
        ASSERT_FALSE(r.timed_out) << "layerd-fs did not exit within 10 s; stderr: " << r.err;
        EXPECT_TRUE(r.exited) << "killed by a signal: status " << r.status;
        EXPECT_NE(r.status, 0) << "exit status 0 for bad input; stderr: " << r.err;

        std::string line = r.err;
        if (!line.empty() && line.back() == '\n')
            line.pop_back();
        EXPECT_FALSE(line.empty()) << "nothing on stderr";
        EXPECT_EQ(line.find('\n'), std::string::npos) << "stderr is not exactly one line:\n" << r.err;

        bool named = false;
        for (const auto& n : names)
            named = named || line.find(n) != std::string::npos;
        std::string wanted;
        for (const auto& n : names)
            wanted += (wanted.empty() ? "" : " or ") + ("'" + n + "'");
        EXPECT_TRUE(named) << "stderr does not name " << wanted << ": " << r.err;

        // A reason: words left once the names and the program name are taken out.
        std::string rest = line;
        std::vector<std::string> strip = names;
        strip.push_back(layerd_fs_binary());
        strip.push_back("layerd-fs");
        std::sort(strip.begin(), strip.end(), [](const auto& a, const auto& b) { return a.size() > b.size(); });
        for (const auto& s : strip)
            for (size_t p; !s.empty() && (p = rest.find(s)) != std::string::npos;)
                rest.erase(p, s.size());
        int words = 0;
        std::istringstream ws(rest);
        for (std::string w; ws >> w;)
            words += std::count_if(w.begin(), w.end(), [](unsigned char c) { return std::isalpha(c); }) >= 2;
        EXPECT_GE(words, 2) << "stderr gives no reason: " << r.err;
        if (!reasons.empty()) {
            std::string lc = lower_case(line);
            bool any = false;
            std::string listed;
            for (const auto& k : reasons) {
                any = any || lc.find(lower_case(k)) != std::string::npos;
                listed += (listed.empty() ? "" : "|") + k;
            }
            EXPECT_TRUE(any) << "stderr does not say why (expected one of: " << listed << "): " << r.err;
        }

        EXPECT_EQ(mounts_below(root_), before) << "the mounts under " << root_ << " changed";
        EXPECT_FALSE(layerd_mounted_at(mountpoint)) << "something got mounted at " << mountpoint;
        auto left = lingering_processes(root_ + "/", 1.0, true);
        EXPECT_TRUE(left.empty()) << "layerd-fs processes left behind: " << pids_text(left);
    }

    // Mounts a small tmpfs at dir (created if needed); TearDown removes it.
    void mount_tmpfs(const std::string& dir)
    {
        ::mkdir(dir.c_str(), 0755);
        ASSERT_EQ(::mount("tmpfs", dir.c_str(), "tmpfs", 0, "size=4m"), 0) << dir << ": " << strerror(errno);
    }

    int runs_ = 0;
};

const std::vector<std::string> kNoSuchFile{"no such file", "not exist", "doesn't exist", "not found", "missing",
                                           "nonexistent", "non-existent"};

TEST_F(BadInputTest, NoLowerdirOption)
{
    expect_refused({"-o", "upperdir=" + upper() + ",workdir=" + work(), mnt()}, mnt(), {"lowerdir"});
}

TEST_F(BadInputTest, LowerdirDoesNotExist)
{
    std::string missing = root_ + "/no-such-lower";
    expect_refused({"-o", "lowerdir=" + missing + ":" + lower(1) + ",upperdir=" + upper() + ",workdir=" + work(),
                    mnt()},
                   mnt(), {missing}, kNoSuchFile);
}

TEST_F(BadInputTest, LowerdirIsARegularFile)
{
    std::string file = root_ + "/a-file";
    write_file(file, "not a dir\n");
    expect_refused({"-o", "lowerdir=" + lower(0) + ":" + file + ",upperdir=" + upper() + ",workdir=" + work(),
                    mnt()},
                   mnt(), {file}, {"not a dir"});
}

TEST_F(BadInputTest, UpperdirDoesNotExist)
{
    std::string missing = root_ + "/no-such-upper";
    expect_refused({"-o", "lowerdir=" + lower(0) + ":" + lower(1) + ",upperdir=" + missing + ",workdir=" + work(),
                    mnt()},
                   mnt(), {missing}, kNoSuchFile);
}

TEST_F(BadInputTest, UpperdirWithoutWorkdir)
{
    expect_refused({"-o", "lowerdir=" + lower(0) + ":" + lower(1) + ",upperdir=" + upper(), mnt()}, mnt(),
                   {"workdir"});
}

TEST_F(BadInputTest, UpperdirInsideALowerdir)
{
    std::string up = lower(1, "up");
    ASSERT_EQ(::mkdir(up.c_str(), 0755), 0);
    expect_refused({"-o", "lowerdir=" + lower(0) + ":" + lower(1) + ",upperdir=" + up + ",workdir=" + work(), mnt()},
                   mnt(), {up, lower(1)});
}

TEST_F(BadInputTest, LowerdirInsideUpperdir)
{
    std::string low = upper("low");
    ASSERT_EQ(::mkdir(low.c_str(), 0755), 0);
    write_file(upper("low/x"), "x\n");
    expect_refused({"-o", "lowerdir=" + lower(0) + ":" + low + ",upperdir=" + upper() + ",workdir=" + work(), mnt()},
                   mnt(), {low, upper()});
}

TEST_F(BadInputTest, WorkdirOnAnotherFilesystem)
{
    std::string fs = root_ + "/tmpfs";
    mount_tmpfs(fs);
    ASSERT_FALSE(HasFatalFailure());
    std::string w = fs + "/work";
    ASSERT_EQ(::mkdir(w.c_str(), 0755), 0);
    expect_refused({"-o", "lowerdir=" + lower(0) + ":" + lower(1) + ",upperdir=" + upper() + ",workdir=" + w, mnt()},
                   mnt(), {w, upper()});
    EXPECT_TRUE(entries_empty(w)) << "layerd-fs wrote into the refused workdir";
}

TEST_F(BadInputTest, WorkdirInsideUpperdir)
{
    std::string w = upper("work");
    ASSERT_EQ(::mkdir(w.c_str(), 0755), 0);
    expect_refused({"-o", "lowerdir=" + lower(0) + ":" + lower(1) + ",upperdir=" + upper() + ",workdir=" + w, mnt()},
                   mnt(), {w, upper()});
}

TEST_F(BadInputTest, NonEmptyMountpoint)
{
    write_file(mnt("occupied"), "something\n");
    expect_refused({"-o", layers(), mnt()}, mnt(), {mnt()}, {"empty"});
    EXPECT_EQ(read_file(mnt("occupied")), "something\n");
}

TEST_F(BadInputTest, MountpointIsAlreadyAMountPoint)
{
    mount_tmpfs(mnt());
    ASSERT_FALSE(HasFatalFailure());
    expect_refused({"-o", layers(), mnt()}, mnt(), {mnt()});
}

TEST_F(BadInputTest, UnknownOption)
{
    expect_refused({"-o", layers() + ",frobnicate=1", mnt()}, mnt(), {"frobnicate"},
                   {"unknown", "unrecognized", "unrecognised", "invalid", "unsupported", "not supported", "bad"});
}

TEST_F(BadInputTest, NoMountpoint)
{
    expect_refused({"-o", layers()}, mnt(), {"mountpoint", "mount point", "MOUNTPOINT", "Mountpoint", "Mount point"});
}

// The same refusal in the form mount.fuse3 uses (source argument first,
// generic mount options mixed in).
TEST_F(BadInputTest, BadLowerdirInMountHelperForm)
{
    std::string missing = root_ + "/no-such-lower";
    expect_refused({"layerd-fs", mnt(), "-o",
                    "rw,lowerdir=" + missing + ",upperdir=" + upper() + ",workdir=" + work() + ",dev,suid"},
                   mnt(), {missing}, kNoSuchFile);
}

// A stack mounted over its own top lower dir (as /etc over /etc): the daemon
// opened the layers before mounting and never resolves through its mount.
TEST_F(BadInputTest, MountOverOwnLowerDir)
{
    RunResult r = run_layerd({"-o", layers(), lower(0)});
    ASSERT_FALSE(r.timed_out) << "layerd-fs did not go to the background within 10 s";
    ASSERT_EQ(r.status, 0) << "stderr: " << r.err;
    ASSERT_TRUE(layerd_mounted_at(lower(0))) << "exited 0 before the mount was live (or mounted nothing)";
    auto daemons = layerd_processes(lower(0));
    EXPECT_EQ(daemons.size(), 1u) << pids_text(daemons);

    // Through the mount (in a child with a hard timeout, in case it deadlocks
    // on its own mountpoint).
    auto q = [](const std::string& p) { return "'" + p + "'"; };
    EXPECT_EQ(sh_out("timeout -s KILL 10 cat " + q(lower(0, "own.txt"))), "top lower\n");
    EXPECT_EQ(sh_out("timeout -s KILL 10 cat " + q(lower(0, "bottom.txt"))), "bottom lower\n");
    EXPECT_EQ(sh("timeout -s KILL 10 sh -c \"echo appended >> " + q(lower(0, "own.txt")) + "\""), 0);
    EXPECT_EQ(sh("timeout -s KILL 10 sh -c \"echo new > " + q(lower(0, "new.txt")) + "\""), 0);
    EXPECT_EQ(sh_out("timeout -s KILL 10 cat " + q(lower(0, "own.txt"))), "top lower\nappended\n");
    EXPECT_EQ(sh_out("timeout -s KILL 10 ls " + q(lower(0))), "bottom.txt\nnew.txt\nown.txt\n");
    EXPECT_EQ(read_file(upper("own.txt")), "top lower\nappended\n");
    EXPECT_EQ(read_file(upper("new.txt")), "new\n");

    ASSERT_EQ(::umount2(lower(0).c_str(), 0), 0) << strerror(errno);
    auto left = lingering_processes(lower(0), 5.0);
    EXPECT_TRUE(left.empty()) << "layerd-fs still running after umount: " << pids_text(left);
    // The lower dir itself is untouched underneath.
    EXPECT_EQ(read_file(lower(0, "own.txt")), "top lower\n");
    EXPECT_FALSE(exists(lower(0, "new.txt")));
    EXPECT_FALSE(exists(lower(0, "bottom.txt")));
}

// The directory holding the layerd-fs under test, absolute.
std::string binary_dir()
{
    std::string dir = dirname_of(layerd_fs_binary());
    if (dir.empty() || dir[0] != '/') {
        char cwd[4096];
        if (::getcwd(cwd, sizeof cwd))
            dir = std::string(cwd) + "/" + dir;
    }
    return dir;
}

// mount.fuse3 as mount(8) runs it for `mount -t fuse.layerd-fs layerd-fs MNT
// -o …` (seen with strace: `/sbin/mount.fuse layerd-fs MNT -o rw,… -t
// fuse.layerd-fs`); it in turn runs `layerd-fs layerd-fs MNT -o rw,…,dev,suid`
// through /bin/sh and PATH. A plain umount then ends the daemon.
TEST_F(BadInputTest, MountFuse3HelperStartsAndUmountEndsIt)
{
    ASSERT_EQ(basename_of(layerd_fs_binary()), "layerd-fs") << "mount.fuse3 runs the binary named after the fs type";
    ASSERT_EQ(::access("/sbin/mount.fuse3", X_OK), 0) << "mount.fuse3 (fuse3) is not installed";

    RunResult r = run({"/sbin/mount.fuse3", "layerd-fs", mnt(), "-o", "rw," + layers(), "-t", "fuse.layerd-fs"},
                      binary_dir());
    SCOPED_TRACE("command: PATH=" + binary_dir() + ":$PATH " + r.command);
    ASSERT_FALSE(r.timed_out) << "mount.fuse3 did not return within 10 s";
    ASSERT_EQ(r.status, 0) << "stderr: " << r.err;
    ASSERT_TRUE(layerd_mounted_at(mnt())) << "mount.fuse3 returned before the mount was live (or mounted nothing)";
    auto daemons = layerd_processes(mnt());
    EXPECT_EQ(daemons.size(), 1u) << pids_text(daemons);

    EXPECT_EQ(read_file(mnt("own.txt")), "top lower\n");
    EXPECT_EQ(read_file(mnt("bottom.txt")), "bottom lower\n");
    write_file(mnt("via-helper"), "helper\n");
    EXPECT_EQ(read_file(upper("via-helper")), "helper\n");

    RunResult u = run({"umount", mnt()});
    EXPECT_EQ(u.status, 0) << "umount: " << u.err;
    EXPECT_FALSE(layerd_mounted_at(mnt()));
    auto left = lingering_processes(mnt(), 5.0);
    EXPECT_TRUE(left.empty()) << "layerd-fs still running after a plain umount: " << pids_text(left);
}

// The real `mount -t fuse.layerd-fs layerd-fs MNT -o …` and `umount MNT`.
// mount(8) drops PATH from the environment (util-linux sanitize_env), so the
// helper's /bin/sh only searches its default PATH, whose first entry is
// /usr/local/sbin: in a private mount namespace a dir holding a `layerd-fs`
// symlink is bind-mounted there, as if installed. The mount, the checks
// through it and the umount all run inside that namespace; the daemon must
// be gone afterwards (processes are visible from here).
TEST_F(BadInputTest, MountCommandThroughMountFuse3AndPlainUmount)
{
    ASSERT_EQ(::access("/sbin/mount.fuse3", X_OK), 0) << "mount.fuse3 (fuse3) is not installed";
    std::string bindir = root_ + "/sbin";
    ASSERT_EQ(::mkdir(bindir.c_str(), 0755), 0);
    std::string bin = layerd_fs_binary();
    if (bin[0] != '/')
        bin = binary_dir() + "/" + basename_of(bin);
    ASSERT_EQ(::symlink(bin.c_str(), (bindir + "/layerd-fs").c_str()), 0);

    auto q = [](const std::string& p) { return "'" + p + "'"; };
    std::string out = root_ + "/ns.out";
    std::string script =
        "set -u; mount --bind " + q(bindir) + " /usr/local/sbin || exit 10; "
        "mount -t fuse.layerd-fs layerd-fs " + q(mnt()) + " -o " + q(layers()) + " || exit 11; "
        "grep -q ' " + mnt() + " .* - fuse.layerd-fs ' /proc/self/mountinfo || exit 12; "
        "cat " + q(mnt("own.txt")) + " " + q(mnt("bottom.txt")) + " > " + q(out) + " || exit 13; "
        "echo ns > " + q(mnt("via-mount")) + " || exit 14; "
        "umount " + q(mnt()) + " || exit 15; "
        "grep -q ' " + mnt() + " ' /proc/self/mountinfo && exit 16; exit 0";
    RunResult r = run({"unshare", "--mount", "--propagation", "private", "sh", "-c", script});
    ASSERT_FALSE(r.timed_out) << "the mount/umount script did not finish within 10 s";
    const char* what[] = {"bind mount over /usr/local/sbin", "mount -t fuse.layerd-fs", "mount not in mountinfo",
                          "read through the mount", "write through the mount", "umount", "still mounted after umount"};
    EXPECT_EQ(r.status, 0) << (r.status >= 10 && r.status <= 16 ? what[r.status - 10] : "unshare")
                           << " failed; stderr: " << r.err;
    EXPECT_EQ(read_file(out), "top lower\nbottom lower\n");
    EXPECT_EQ(read_file(upper("via-mount")), "ns\n");
    auto left = lingering_processes(mnt(), 5.0);
    EXPECT_TRUE(left.empty()) << "layerd-fs still running after a plain umount: " << pids_text(left);
    for (pid_t p : left)
        ::kill(p, SIGKILL); // its namespace is private: TearDown cannot reach the mount
}

} // namespace
} // namespace layerd::test
