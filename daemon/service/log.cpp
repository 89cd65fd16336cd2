// SPDX-License-Identifier: LGPL-2.1-or-later
#include "log.hpp"

#include <sys/stat.h>
#include <sys/uio.h>
#include <fuse_log.h>
#include <systemd/sd-journal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <vector>

namespace layerd::service {

namespace {

bool to_journal = false;
std::mutex stderr_mutex;

// JOURNAL_STREAM is "DEV:INO" of the stream systemd connected; it counts
// only while stderr still is that stream (a child may inherit the variable
// with a redirected stderr).
bool stderr_is_journal()
{
    const char* env = std::getenv("JOURNAL_STREAM");
    if (!env)
        return false;
    unsigned long long dev = 0, ino = 0;
    if (std::sscanf(env, "%llu:%llu", &dev, &ino) != 2)
        return false;
    struct stat st {};
    if (::fstat(STDERR_FILENO, &st) != 0)
        return false;
    return st.st_dev == dev && st.st_ino == ino;
}

// libfuse's messages and the engine's (a write-back that failed, say) go
// where the daemon's go; fuse_log_level counts as syslog's levels do.
void log_fuse_message(enum fuse_log_level level, const char* format, va_list args)
{
    char text[1024];
    int n = std::vsnprintf(text, sizeof text, format, args);
    if (n < 0)
        return;
    std::string message(text, std::min(static_cast<size_t>(n), sizeof text - 1));
    while (!message.empty() && message.back() == '\n')
        message.pop_back();
    log(static_cast<int>(level), message);
}

} // namespace

void init_log()
{
    to_journal = stderr_is_journal();
    fuse_set_log_func(log_fuse_message);
}

void log(int priority, const std::string& message, const std::string& stack, std::optional<uint32_t> snapshot)
{
    if (to_journal) {
        std::vector<std::string> fields;
        fields.push_back("MESSAGE=" + message);
        fields.push_back("PRIORITY=" + std::to_string(priority));
        fields.emplace_back("SYSLOG_IDENTIFIER=layerd");
        if (!stack.empty())
            fields.push_back("STACK=" + stack);
        if (snapshot)
            fields.push_back("SNAPSHOT=" + std::to_string(*snapshot));
        std::vector<iovec> iov;
        iov.reserve(fields.size());
        for (auto& f : fields)
            iov.push_back({f.data(), f.size()});
        if (sd_journal_sendv(iov.data(), static_cast<int>(iov.size())) >= 0)
            return;
        // The journal is gone: stderr still reaches whoever reads it.
    }
    std::string line = "<" + std::to_string(priority) + ">";
    if (!stack.empty())
        line += "stack " + stack + ": ";
    line += message;
    if (snapshot)
        line += " (snapshot " + std::to_string(*snapshot) + ")";
    line += '\n';
    std::lock_guard lock(stderr_mutex);
    std::fputs(line.c_str(), stderr);
    std::fflush(stderr);
}

} // namespace layerd::service
