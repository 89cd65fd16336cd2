// SPDX-License-Identifier: LGPL-2.1-or-later
// Snapshot rows of the benchmark (issue: snapshots): create with 1, 10k and
// 100k files in the upper; a live rollback with 100k nodes known to the
// kernel; stat-walk with the chain 1, 10 and 100 snapshots deep. Runs a
// stack in-process on real mounts and reports; it asserts nothing.
//   snapshot-bench [WORKDIR]   (default /var/tmp/layerd-snapbench; root)
#include "mounted_stack.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

using namespace layerd;
using Clock = std::chrono::steady_clock;

namespace {

double ms_since(Clock::time_point t0)
{
    return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

void write_small(const std::string& path)
{
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || ::write(fd, "x", 1) != 1) {
        std::perror(path.c_str());
        std::exit(1);
    }
    ::close(fd);
}

// N files in N/100 dirs under DIR.
void populate(const std::string& dir, int n)
{
    for (int i = 0; i < n; ++i) {
        std::string d = dir + "/d" + std::to_string(i / 100);
        if (i % 100 == 0)
            ::mkdir(d.c_str(), 0755);
        write_small(d + "/f" + std::to_string(i));
    }
}

size_t stat_walk(const std::string& dir)
{
    size_t n = 0;
    DIR* d = ::opendir(dir.c_str());
    if (!d)
        return 0;
    while (dirent* e = ::readdir(d)) {
        std::string name = e->d_name;
        if (name == "." || name == "..")
            continue;
        struct stat st;
        std::string p = dir + "/" + name;
        if (::lstat(p.c_str(), &st) == 0) {
            ++n;
            if (S_ISDIR(st.st_mode))
                n += stat_walk(p);
        }
    }
    ::closedir(d);
    return n;
}

struct Bench {
    std::string root;
    int round = 0;

    // A fresh stack: its lower holds LOWER_FILES files.
    struct Run {
        std::unique_ptr<SnapshotStore> store;
        std::unique_ptr<MountedStack> stack;
        std::string mnt;
    };
    Run fresh(int lower_files)
    {
        std::string dir = root + "/r" + std::to_string(round++);
        std::system(("rm -rf '" + dir + "' && mkdir -p '" + dir + "/lower' '" + dir + "/state' '" + dir + "/mnt'").c_str());
        populate(dir + "/lower", lower_files);
        Run run;
        run.store = std::make_unique<SnapshotStore>(SnapshotStore::open(dir + "/state/layerd.db"));
        StackConfig c;
        c.name = "bench";
        c.lowers = {dir + "/lower"};
        c.mountpoint = dir + "/mnt";
        c.state_dir = dir + "/state";
        c.max_depth = 1000;
        run.stack = std::make_unique<MountedStack>(*run.store, c);
        run.mnt = c.mountpoint;
        return run;
    }
};

void drop_caches()
{
    ::sync();
    int fd = ::open("/proc/sys/vm/drop_caches", O_WRONLY | O_CLOEXEC);
    if (fd >= 0) {
        (void)!::write(fd, "3", 1);
        ::close(fd);
    }
}

} // namespace

int main(int argc, char** argv)
{
    Bench b{argc > 1 ? argv[1] : "/var/tmp/layerd-snapbench"};
    std::system(("mkdir -p '" + b.root + "'").c_str());
    try {
        std::printf("%-52s %12s\n", "row", "result");
        for (int files : {1, 10000, 100000}) {
            auto run = b.fresh(0);
            populate(run.mnt, files);
            // Writing the data back is the writes' cost, not the snapshot's:
            // flushed first, and timed apart.
            auto t0 = Clock::now();
            ::sync();
            double flush = ms_since(t0);
            t0 = Clock::now();
            run.stack->create_snapshot({});
            std::printf("%-52s %9.2f ms (sync before: %.0f ms)\n",
                        ("snapshot create, " + std::to_string(files) + " files in the upper").c_str(), ms_since(t0),
                        flush);
            if (files == 100000) {
                size_t known = stat_walk(run.mnt); // every node known to the kernel
                uint32_t before = run.stack->create_snapshot({});
                ::sync();
                t0 = Clock::now();
                run.stack->rollback(before, false, 0);
                std::printf("%-52s %9.2f ms\n", ("live rollback, " + std::to_string(known) + " nodes known").c_str(),
                            ms_since(t0));
            }
        }
        std::vector<double> warm;
        for (int depth : {1, 10, 100}) {
            auto run = b.fresh(20000);
            for (int i = 0; i < depth; ++i) {
                write_small(run.mnt + "/d" + std::to_string(i % 200) + "/change" + std::to_string(i));
                run.stack->create_snapshot({});
            }
            drop_caches();
            auto t0 = Clock::now();
            size_t n = stat_walk(run.mnt);
            double cold = ms_since(t0);
            t0 = Clock::now();
            stat_walk(run.mnt);
            double w = ms_since(t0);
            warm.push_back(cold);
            std::printf("%-52s %9.1f ms cold, %.1f ms warm (%zu entries)\n",
                        ("stat-walk, chain " + std::to_string(run.stack->depth()) + " deep").c_str(), cold, w, n);
        }
        std::printf("%-52s %9.2fx\n", "cold stat-walk, depth 100 / depth 1", warm[2] / warm[0]);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "snapshot-bench: %s\n", e.what());
        return 1;
    }
    return 0;
}
