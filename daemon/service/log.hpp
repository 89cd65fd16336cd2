// SPDX-License-Identifier: LGPL-2.1-or-later
// Logging of the daemon (DESIGN §8): to the journal with STACK= and
// SNAPSHOT= fields when stderr is connected to it (JOURNAL_STREAM names
// stderr), otherwise to stderr with sd-daemon "<N>" priority prefixes.
#pragma once

#include <syslog.h>

#include <cstdint>
#include <optional>
#include <string>

namespace layerd::service {

// Decides once where the log goes, libfuse's messages too; call before any
// thread starts.
void init_log();

// PRIORITY is a syslog level (LOG_ERR, LOG_WARNING, LOG_INFO, ...).
void log(int priority, const std::string& message, const std::string& stack = {},
         std::optional<uint32_t> snapshot = std::nullopt);

} // namespace layerd::service
