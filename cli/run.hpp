// SPDX-License-Identifier: LGPL-2.1-or-later
#pragma once

namespace layerd::cli {

// Parses ARGV, runs the verb and reports its failure: the exit code.
// Never throws.
int run(int argc, char** argv) noexcept;

} // namespace layerd::cli
