// SPDX-License-Identifier: LGPL-2.1-or-later
// layerd's configuration (DESIGN §4): the global file layerd.yaml and one
// YAML file per stack in stacks.d/, each read from a list of config dirs in
// precedence order, systemd style. No FUSE, no D-Bus, no daemon: the daemon
// turns what this returns into mounts.
//
// Files and precedence. Dirs are searched in order (by default /etc/layerd,
// /run/layerd, /usr/lib/layerd; --config-dir replaces the list with one dir).
// stacks.d/NAME.yaml in an earlier dir replaces NAME.yaml of every later dir,
// file by file. A replacing file that is empty (no YAML document: zero bytes,
// or only comments and blank lines) or a symlink to /dev/null masks the name:
// no stack NAME at all. Hidden files and names not ending in ".yaml" are not
// read. layerd.yaml is taken from the first dir that has one.
//
// Errors. Every refusal is a ConfigError whose text is exactly
// "FILE:LINE:COLUMN: reason", line and column 1-based and pointing at the
// offending node (at the key when the value is missing). Failures not tied
// to a place in a file (an unreadable file or dir) read "FILE: reason".
// Each stack file is all or nothing: one error per bad file, and a bad file
// never stops the others.
#pragma once

#include "cleanup.hpp"
#include "overlay_format.hpp"

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace layerd {

class ConfigError : public std::runtime_error {
public:
    // line and column are 1-based; 0 means the error has no place in the file.
    ConfigError(std::string file, unsigned line, unsigned column, std::string reason,
                std::string stack = {});

    const std::string& file() const { return file_; }
    unsigned line() const { return line_; }
    unsigned column() const { return column_; }
    const std::string& reason() const { return reason_; }
    // The stack whose file this is; empty for layerd.yaml and for dirs.
    const std::string& stack() const { return stack_; }

private:
    std::string file_;
    unsigned line_;
    unsigned column_;
    std::string reason_;
    std::string stack_;
};

// layerd.yaml. Every key is optional; a missing file is all defaults.
struct GlobalConfig {
    // state_dir: absolute path of the state (DESIGN §5). --state-dir wins.
    std::string state_dir = "/var/lib/layerd";
    std::string source; // the file read, empty when there was none
};

// One stack file. Keys and defaults:
//   mountpoint: absolute path (required)
//   lowers: non-empty list of absolute paths, top first (required); may
//     name the mountpoint itself
//   upper: true | false (true); false makes the stack read-only
//   volatile: true | false (false); true skips making copied-up data
//     durable before it is renamed into place (DESIGN §3)
//   boot: true | false (false); mounted when layerd starts at boot
//   xattr_format: trusted | user (trusted)
//   timeline: true | false (false); hourly snapshots from the timer. Needs
//     an upper: a read-only stack has nothing to snapshot.
//   package_snapshots: true | false (false); a pre and a post snapshot
//     around each package operation (the apt hook, `layerctl
//     package-snapshot`). Needs an upper, as timeline does.
//   cleanup: true | false | a mapping of
//     number: true | false | {limit, limit_important, min_age}
//     timeline: true | false | {hourly, daily, weekly, monthly, quarterly,
//                               yearly, min_age}
//     empty_pre_post: true | false | {min_age}
//     free_limit: fraction of the filesystem to keep free, 0 to 1 (0.2)
//   An algorithm whose key is absent, or true, runs with snapper's built-in
//   defaults (cleanup.hpp); given as a mapping, its missing keys take those
//   defaults; false switches it off. No cleanup key at all (or `cleanup:
//   true`) runs all three; `cleanup: false` switches all three off. Limits are a number or a
//   "MIN-MAX" range (LimitRange); ages are seconds, never negative.
//   max_depth: 1 to 4096 (128); frozen layers allowed under the live one
//   allow_users, allow_groups: lists of user / group names that may change
//     the stack over D-Bus. Only the syntax is checked here (systemd's
//     relaxed user-name rules); names are resolved when a call arrives, so
//     a user created later needs no reload.
struct StackDefinition {
    std::string name;   // the file name without ".yaml"
    std::string source; // the file it was read from
    std::string mountpoint;
    std::vector<std::string> lowers;
    bool upper = true;
    bool volatile_upper = false; // the `volatile` key
    bool boot = false;
    XattrFormat xattr_format = XattrFormat::trusted;
    bool timeline = false;
    bool package_snapshots = false;
    CleanupConfig cleanup{NumberCleanup{}, TimelineCleanup{}, EmptyPrePostCleanup{}};
    double free_limit = 0.2;
    unsigned max_depth = 128;
    std::vector<std::string> allow_users;
    std::vector<std::string> allow_groups;
};

// Paths in a definition are normalised: no repeated or trailing slash.
// "." and ".." components are refused rather than resolved, since a mount
// must not depend on what a symlink points at when the file is read.

// /etc/layerd, /run/layerd, /usr/lib/layerd.
std::vector<std::string> default_config_dirs();

// Parses the text of one stack file. FILE is only used in errors. Throws
// ConfigError; a text with no YAML document is an error here (masking is
// the loader's business). STATE_DIR is refused as a mountpoint, and so is
// anything inside it or containing it (the daemon never reaches its state
// through its own mounts); a lower inside it is refused too.
StackDefinition parse_stack(std::string_view text, const std::string& file,
                            const std::string& name, const std::string& state_dir);

// Parses the text of layerd.yaml; throws ConfigError.
GlobalConfig parse_global(std::string_view text, const std::string& file);

// True when NAME may name a stack: the store's own rule (is_valid_name)
// and not hidden, since hidden files are never read.
bool is_valid_stack_name(std::string_view name);

// systemd's relaxed user/group name syntax (valid_user_group_name with
// VALID_USER_RELAX): not empty, no surrounding spaces, UTF-8 without control
// characters, no ':' or '/', not numeric, not "." or "..".
bool is_valid_user_group_name(std::string_view name);

struct Config {
    GlobalConfig global;
    std::vector<StackDefinition> stacks; // sorted by name
    // One per bad file, sorted by file name within stacks.d. A bad
    // layerd.yaml comes first and then no stacks are loaded at all: the
    // state dir it names may not be the default one, and mounting against
    // the wrong state would start every stack's history afresh.
    std::vector<ConfigError> errors;
    bool global_failed = false;
};

// Reads layerd.yaml and stacks.d/*.yaml from CONFIG_DIRS (highest precedence
// first). STATE_DIR_OVERRIDE (--state-dir) replaces layerd.yaml's state_dir.
// Two stacks on one mountpoint: the first by name is kept, the other is an
// error. Never throws ConfigError; std::bad_alloc may pass.
Config load_config(const std::vector<std::string>& config_dirs,
                   const std::optional<std::string>& state_dir_override = std::nullopt);

} // namespace layerd
