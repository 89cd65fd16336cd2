// SPDX-License-Identifier: LGPL-2.1-or-later
// layerctl: the command-line client of layerd (DESIGN §7). It talks only
// D-Bus; the verbs are in verbs/, the table in verbs.cpp.
#include "run.hpp"

int main(int argc, char** argv)
{
    return layerd::cli::run(argc, argv);
}
