// SPDX-License-Identifier: LGPL-2.1-or-later
// Runs the real-mount suites; exits 77 (meson: SKIP) with the reason when
// this machine cannot mount FUSE as root, so a skip is never a silent pass.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>

int main(int argc, char** argv)
{
    if (geteuid() != 0) {
        std::fprintf(stderr, "SKIP: the FUSE mount tests need root\n");
        return 77;
    }
    if (access("/dev/fuse", R_OK | W_OK) != 0) {
        std::fprintf(stderr, "SKIP: /dev/fuse is not usable here\n");
        return 77;
    }
    // Line-buffered even into meson's log file: a suite killed on its
    // timeout (SIGTERM, then SIGKILL) keeps everything printed before.
    std::setvbuf(stdout, nullptr, _IOLBF, 0);
    ::testing::InitGoogleTest(&argc, argv);
    return RUN_ALL_TESTS();
}
