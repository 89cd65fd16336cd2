// SPDX-License-Identifier: LGPL-2.1-or-later
#include "config.hpp"

#include "resolve.hpp"
#include "unique_fd.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <fmt/format.h>
#include <yaml-cpp/depthguard.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <climits>
#include <cstring>
#include <map>
#include <memory>
#include <span>

namespace layerd {

namespace {

std::string format_error(const std::string& file, unsigned line, unsigned column, const std::string& reason)
{
    if (line == 0)
        return fmt::format("{}: {}", file, reason);
    return fmt::format("{}:{}:{}: {}", file, line, column, reason);
}

} // namespace

ConfigError::ConfigError(std::string file, unsigned line, unsigned column, std::string reason, std::string stack)
    : std::runtime_error(format_error(file, line, column, reason)), file_(std::move(file)), line_(line),
      column_(column), reason_(std::move(reason)), stack_(std::move(stack))
{
}

namespace {

constexpr std::string_view yaml_suffix = ".yaml";
// Config files are small; a bigger one is a mistake (or not a config file).
constexpr off_t max_file_size = 1 << 20;
constexpr unsigned max_depth_limit = 4096;

// One file being read: turns yaml-cpp's 0-based marks into errors.
class Reader {
public:
    Reader(const std::string& file, const std::string& stack) : file_(file), stack_(stack) {}

    [[noreturn]] void fail(const YAML::Mark& mark, const std::string& reason) const
    {
        if (mark.line < 0 || mark.column < 0)
            throw ConfigError(file_, 0, 0, reason, stack_);
        throw ConfigError(file_, static_cast<unsigned>(mark.line) + 1, static_cast<unsigned>(mark.column) + 1,
                          reason, stack_);
    }

    // The one document of TEXT, which must be a mapping; nullopt when the
    // text holds no document at all.
    std::optional<YAML::Node> load_mapping(std::string_view text, std::string_view what) const
    {
        std::vector<YAML::Node> documents;
        try {
            documents = YAML::LoadAll(std::string(text));
        } catch (const YAML::DeepRecursion& e) {
            // yaml-cpp 0.7 gives this one the message "bad file"; its depth
            // counts parser frames, not levels a person would count.
            fail(e.mark, "invalid YAML: nested too deeply");
        } catch (const YAML::ParserException& e) {
            fail(e.mark, fmt::format("invalid YAML: {}", e.msg));
        }
        if (documents.empty())
            return std::nullopt;
        if (documents.size() > 1)
            fail(documents[1].Mark(), fmt::format("a second YAML document; {} holds exactly one", what));
        const YAML::Node& root = documents[0];
        if (!root.IsMap())
            fail(root.Mark(), fmt::format("{} must be a mapping of keys, got {}", what, describe(root)));
        return root;
    }

    // How a node reads in "got ..." of an error.
    static std::string describe(const YAML::Node& node)
    {
        switch (node.Type()) {
        case YAML::NodeType::Null:
        case YAML::NodeType::Undefined:
            return "nothing";
        case YAML::NodeType::Sequence:
            return "a list";
        case YAML::NodeType::Map:
            return "a mapping";
        case YAML::NodeType::Scalar:
            break;
        }
        const std::string& text = node.Scalar();
        constexpr size_t shown = 60;
        std::string quoted = text.size() > shown ? text.substr(0, shown) + "..." : text;
        return node.Tag() == "!" ? fmt::format("the quoted string \"{}\"", quoted) : fmt::format("'{}'", quoted);
    }

    // Tags (!!str, !custom) change how a value reads; layerd's files use
    // none, so one is more likely a mistake than a wish.
    void check_tag(const YAML::Node& node) const
    {
        const std::string& tag = node.Tag();
        if (!tag.empty() && tag != "?" && tag != "!")
            fail(node.Mark(), fmt::format("unsupported tag '{}'", tag));
    }

private:
    const std::string& file_;
    const std::string& stack_;
};

size_t edit_distance(std::string_view a, std::string_view b)
{
    std::vector<size_t> row(b.size() + 1);
    for (size_t j = 0; j <= b.size(); ++j)
        row[j] = j;
    for (size_t i = 1; i <= a.size(); ++i) {
        size_t diagonal = row[0];
        row[0] = i;
        for (size_t j = 1; j <= b.size(); ++j) {
            size_t above = row[j];
            row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
            diagonal = above;
        }
    }
    return row[b.size()];
}

// One key of a mapping with its value.
struct Entry {
    YAML::Node key;
    YAML::Node value;
    std::string name; // qualified, as errors name it: "cleanup.number.limit"
};

// A mapping whose keys were all checked: known, scalar, given once.
class Mapping {
public:
    Mapping(const Reader& reader, const YAML::Node& node, const std::string& prefix,
            std::span<const std::string_view> known)
        : node_(node)
    {
        for (const auto& pair : node) {
            // Copies: yaml-cpp's iterator hands out temporaries.
            const YAML::Node key = pair.first;
            const YAML::Node value = pair.second;
            reader.check_tag(key);
            reader.check_tag(value);
            if (!key.IsScalar())
                reader.fail(key.Mark(), fmt::format("a key must be a name, got {}", Reader::describe(key)));
            const std::string& text = key.Scalar();
            auto match = std::find(known.begin(), known.end(), text);
            if (match == known.end())
                reader.fail(key.Mark(), unknown_key(text, prefix, known));
            auto seen = std::find_if(entries_.begin(), entries_.end(),
                                     [&](const Entry& e) { return e.key.Scalar() == text; });
            if (seen != entries_.end())
                reader.fail(key.Mark(), fmt::format("duplicate key '{}' (first given on line {})", text,
                                                    seen->key.Mark().line + 1));
            entries_.push_back({key, value, prefix.empty() ? text : fmt::format("{}.{}", prefix, text)});
        }
    }

    const Entry* find(std::string_view key) const
    {
        auto it = std::find_if(entries_.begin(), entries_.end(), [&](const Entry& e) { return e.key.Scalar() == key; });
        return it == entries_.end() ? nullptr : &*it;
    }

    const YAML::Node& node() const { return node_; }
    const std::vector<Entry>& entries() const { return entries_; }

private:
    static std::string unknown_key(const std::string& key, const std::string& prefix,
                                   std::span<const std::string_view> known)
    {
        std::string where = prefix.empty() ? std::string() : fmt::format(" in '{}'", prefix);
        std::string_view best;
        size_t best_distance = 3; // a suggestion further off than 2 edits is noise
        for (std::string_view candidate : known) {
            size_t d = edit_distance(key, candidate);
            if (d < best_distance && d < candidate.size()) {
                best = candidate;
                best_distance = d;
            }
        }
        if (best.empty())
            return fmt::format("unknown key '{}'{}", key, where);
        return fmt::format("unknown key '{}'{} (did you mean '{}'?)", key, where, best);
    }

    YAML::Node node_;
    std::vector<Entry> entries_;
};

[[noreturn]] void wrong_value(const Reader& reader, const Entry& entry, std::string_view expected)
{
    reader.fail(entry.value.Mark(),
                fmt::format("'{}' must be {}, got {}", entry.name, expected, Reader::describe(entry.value)));
}

// The checks every value shares: present, and a scalar unless a collection
// is wanted.
const YAML::Node& scalar(const Reader& reader, const Entry& entry, std::string_view expected)
{
    if (entry.value.IsNull())
        reader.fail(entry.key.Mark(), fmt::format("'{}' has no value (expected {})", entry.name, expected));
    if (!entry.value.IsScalar())
        wrong_value(reader, entry, expected);
    return entry.value;
}

// A scalar that must be written plainly: true, 12, 0.5.
const std::string& plain_scalar(const Reader& reader, const Entry& entry, std::string_view expected)
{
    const YAML::Node& node = scalar(reader, entry, expected);
    if (node.Tag() == "!")
        wrong_value(reader, entry, expected);
    return node.Scalar();
}

bool read_bool(const Reader& reader, const Entry& entry)
{
    constexpr std::string_view expected = "true or false";
    const std::string& text = plain_scalar(reader, entry, expected);
    if (text == "true")
        return true;
    if (text == "false")
        return false;
    wrong_value(reader, entry, expected);
}

bool all_digits(std::string_view s)
{
    return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// A decimal integer as YAML's core schema writes it ([-+]?[0-9]+) within
// [MIN, MAX]. RANGE says what is allowed, for the error.
int64_t read_integer(const Reader& reader, const Entry& entry, std::string_view expected, int64_t min, int64_t max,
                     std::string_view range)
{
    const std::string& text = plain_scalar(reader, entry, expected);
    std::string_view digits = text;
    if (!digits.empty() && (digits[0] == '-' || digits[0] == '+'))
        digits.remove_prefix(1);
    if (!all_digits(digits))
        wrong_value(reader, entry, expected);
    if (text[0] == '-' && min >= 0)
        reader.fail(entry.value.Mark(), fmt::format("'{}' must not be negative, got {}", entry.name, text));
    int64_t value = 0;
    std::string_view parsed = text[0] == '+' ? digits : std::string_view(text);
    auto [end, ec] = std::from_chars(parsed.data(), parsed.data() + parsed.size(), value);
    if (ec != std::errc() || end != parsed.data() + parsed.size() || value < min || value > max)
        reader.fail(entry.value.Mark(), fmt::format("'{}' must be {}, got {}", entry.name, range, text));
    return value;
}

int64_t read_age(const Reader& reader, const Entry& entry)
{
    return read_integer(reader, entry, "a number of seconds", 0, INT64_MAX,
                        fmt::format("at most {} seconds", INT64_MAX));
}

LimitRange read_limit(const Reader& reader, const Entry& entry)
{
    constexpr std::string_view expected = "a number or a range MIN-MAX";
    const std::string& text = scalar(reader, entry, expected).Scalar();
    if (auto range = LimitRange::parse(text))
        return *range;
    const YAML::Mark mark = entry.value.Mark();
    // LimitRange::parse says only no; say why, so the fix is obvious.
    const size_t dash = text.find('-');
    std::string_view lo = std::string_view(text).substr(0, dash);
    std::string_view hi = dash == std::string::npos ? std::string_view() : std::string_view(text).substr(dash + 1);
    if (dash == 0 && all_digits(hi))
        reader.fail(mark, fmt::format("'{}' must not be negative, got {}", entry.name, text));
    bool number = dash == std::string::npos && all_digits(lo);
    bool pair = dash != std::string::npos && all_digits(lo) && all_digits(hi);
    if (!number && !pair)
        wrong_value(reader, entry, expected);
    auto lo_range = LimitRange::parse(lo);
    auto hi_range = pair ? LimitRange::parse(hi) : lo_range;
    if (lo_range && hi_range)
        reader.fail(mark, fmt::format("'{}' range {} has its minimum above its maximum", entry.name, text));
    reader.fail(mark, fmt::format("'{}' is out of range (limits go up to {}), got {}", entry.name, UINT32_MAX, text));
}

double read_fraction(const Reader& reader, const Entry& entry)
{
    constexpr std::string_view expected = "a fraction from 0 to 1";
    const std::string& text = plain_scalar(reader, entry, expected);
    // YAML's decimal notation only: no exponent, inf or nan to surprise anyone.
    std::string_view number = text;
    if (!number.empty() && (number[0] == '-' || number[0] == '+'))
        number.remove_prefix(1);
    const size_t point = number.find('.');
    std::string_view whole = number.substr(0, point);
    std::string_view fraction = point == std::string_view::npos ? std::string_view() : number.substr(point + 1);
    bool decimal = (whole.empty() || all_digits(whole)) && (fraction.empty() || all_digits(fraction)) &&
                   !(whole.empty() && fraction.empty());
    double value = 0;
    if (decimal) {
        auto [end, ec] = std::from_chars(text.data() + (text[0] == '+' ? 1 : 0), text.data() + text.size(), value);
        decimal = ec == std::errc() && end == text.data() + text.size();
    }
    if (!decimal || value < 0 || value > 1)
        wrong_value(reader, entry, expected);
    return value;
}

// An absolute path, normalised; WHAT names it in errors ("'lowers' entry").
std::string read_path(const Reader& reader, const YAML::Node& node, const std::string& what)
{
    const std::string& text = node.Scalar();
    if (text.empty() || text[0] != '/')
        reader.fail(node.Mark(), fmt::format("{} must be an absolute path, got {}", what, Reader::describe(node)));
    if (text.find('\0') != std::string::npos)
        reader.fail(node.Mark(), fmt::format("{} must not contain a NUL character", what));
    if (text.size() >= PATH_MAX)
        reader.fail(node.Mark(), fmt::format("{} is longer than {} bytes", what, PATH_MAX - 1));
    std::optional<std::string> path = normalized_absolute_path(text);
    if (!path)
        reader.fail(node.Mark(), fmt::format("{} must not contain '.' or '..' components, got {}", what,
                                             Reader::describe(node)));
    return *path;
}

const YAML::Node& sequence(const Reader& reader, const Entry& entry, std::string_view expected)
{
    if (entry.value.IsNull())
        reader.fail(entry.key.Mark(), fmt::format("'{}' has no value (expected {})", entry.name, expected));
    if (!entry.value.IsSequence())
        wrong_value(reader, entry, expected);
    return entry.value;
}

// The scalars of a list, each checked by READ, none given twice.
template <typename ReadItem>
std::vector<std::string> read_list(const Reader& reader, const Entry& entry, std::string_view expected,
                                   ReadItem read_item)
{
    std::vector<std::string> items;
    const std::string what = fmt::format("'{}' entry", entry.name);
    for (const YAML::Node& item : sequence(reader, entry, expected)) {
        reader.check_tag(item);
        if (!item.IsScalar())
            reader.fail(item.Mark(), fmt::format("{} must be a single value, got {}", what, Reader::describe(item)));
        std::string value = read_item(item, what);
        if (std::find(items.begin(), items.end(), value) != items.end())
            reader.fail(item.Mark(), fmt::format("'{}' names '{}' twice", entry.name, value));
        items.push_back(std::move(value));
    }
    return items;
}

std::vector<std::string> read_names(const Reader& reader, const Entry& entry, std::string_view kind)
{
    const std::string expected = fmt::format("a list of {} names", kind);
    return read_list(reader, entry, expected, [&](const YAML::Node& item, const std::string& what) {
        if (!is_valid_user_group_name(item.Scalar()))
            reader.fail(item.Mark(), fmt::format("{} '{}' is not a valid {} name", what, item.Scalar(), kind));
        return item.Scalar();
    });
}

XattrFormat read_xattr_format(const Reader& reader, const Entry& entry)
{
    constexpr std::string_view expected = "trusted or user";
    const std::string& text = scalar(reader, entry, expected).Scalar();
    if (text == "trusted")
        return XattrFormat::trusted;
    if (text == "user")
        return XattrFormat::user;
    wrong_value(reader, entry, expected);
}

// An algorithm's section: true (snapper's defaults), false (off) or a
// mapping of keys. Returns the mapping, or nullopt for true/false with
// ENABLED set.
std::optional<Mapping> read_algorithm(const Reader& reader, const Entry& entry,
                                      std::span<const std::string_view> keys, bool& enabled)
{
    if (entry.value.IsMap()) {
        enabled = true;
        return Mapping(reader, entry.value, entry.name, keys);
    }
    constexpr std::string_view expected = "true, false or a mapping";
    const std::string& text = plain_scalar(reader, entry, expected);
    if (text != "true" && text != "false")
        wrong_value(reader, entry, expected);
    enabled = text == "true";
    return std::nullopt;
}

constexpr std::array<std::string_view, 3> number_keys{"limit", "limit_important", "min_age"};
constexpr std::array<std::string_view, 7> timeline_keys{"hourly",    "daily",  "weekly", "monthly",
                                                        "quarterly", "yearly", "min_age"};
constexpr std::array<std::string_view, 1> empty_pre_post_keys{"min_age"};
constexpr std::array<std::string_view, 4> cleanup_keys{"number", "timeline", "empty_pre_post", "free_limit"};

void read_number(const Reader& reader, const Entry& entry, CleanupConfig& cleanup)
{
    bool enabled = false;
    auto section = read_algorithm(reader, entry, number_keys, enabled);
    cleanup.number.reset();
    if (!enabled)
        return;
    NumberCleanup& number = cleanup.number.emplace();
    if (!section)
        return;
    if (const Entry* e = section->find("limit"))
        number.limit = read_limit(reader, *e);
    if (const Entry* e = section->find("limit_important"))
        number.limit_important = read_limit(reader, *e);
    if (const Entry* e = section->find("min_age"))
        number.min_age = read_age(reader, *e);
}

void read_timeline(const Reader& reader, const Entry& entry, CleanupConfig& cleanup)
{
    bool enabled = false;
    auto section = read_algorithm(reader, entry, timeline_keys, enabled);
    cleanup.timeline.reset();
    if (!enabled)
        return;
    TimelineCleanup& timeline = cleanup.timeline.emplace();
    if (!section)
        return;
    const std::array<std::pair<std::string_view, LimitRange*>, 6> limits{{
        {"hourly", &timeline.hourly},
        {"daily", &timeline.daily},
        {"weekly", &timeline.weekly},
        {"monthly", &timeline.monthly},
        {"quarterly", &timeline.quarterly},
        {"yearly", &timeline.yearly},
    }};
    for (const auto& [key, limit] : limits)
        if (const Entry* e = section->find(key))
            *limit = read_limit(reader, *e);
    if (const Entry* e = section->find("min_age"))
        timeline.min_age = read_age(reader, *e);
}

void read_empty_pre_post(const Reader& reader, const Entry& entry, CleanupConfig& cleanup)
{
    bool enabled = false;
    auto section = read_algorithm(reader, entry, empty_pre_post_keys, enabled);
    cleanup.empty_pre_post.reset();
    if (!enabled)
        return;
    EmptyPrePostCleanup& empty = cleanup.empty_pre_post.emplace();
    if (!section)
        return;
    if (const Entry* e = section->find("min_age"))
        empty.min_age = read_age(reader, *e);
}

void read_cleanup(const Reader& reader, const Entry& entry, StackDefinition& stack)
{
    if (!entry.value.IsMap()) {
        constexpr std::string_view expected = "true, false or a mapping";
        const std::string& text = plain_scalar(reader, entry, expected);
        if (text != "true" && text != "false")
            wrong_value(reader, entry, expected);
        if (text == "false")
            stack.cleanup = CleanupConfig{};
        return;
    }
    Mapping section(reader, entry.value, entry.name, cleanup_keys);
    if (const Entry* e = section.find("number"))
        read_number(reader, *e, stack.cleanup);
    if (const Entry* e = section.find("timeline"))
        read_timeline(reader, *e, stack.cleanup);
    if (const Entry* e = section.find("empty_pre_post"))
        read_empty_pre_post(reader, *e, stack.cleanup);
    if (const Entry* e = section.find("free_limit"))
        stack.free_limit = read_fraction(reader, *e);
}

// A inside B, or A == B.
bool is_within(std::string_view a, std::string_view b)
{
    if (b == "/")
        return true;
    return a.starts_with(b) && (a.size() == b.size() || a[b.size()] == '/');
}

constexpr std::array<std::string_view, 12> stack_keys{
    "mountpoint", "lowers",  "upper",     "volatile",    "boot",         "xattr_format",
    "timeline",   "cleanup", "max_depth", "allow_users", "allow_groups", "package_snapshots"};

// A key that asks for snapshots must not be true on a read-only stack.
bool read_snapshot_switch(const Reader& reader, const Entry& entry, const StackDefinition& stack)
{
    bool on = read_bool(reader, entry);
    if (on && !stack.upper)
        reader.fail(entry.value.Mark(), fmt::format("'{}' needs an upper: a read-only stack (upper: false) has "
                                                    "nothing to snapshot",
                                                    entry.name));
    return on;
}

struct ParsedStack {
    StackDefinition stack;
    YAML::Mark mountpoint_mark;
};

std::optional<ParsedStack> parse_stack_at(std::string_view text, const std::string& file, const std::string& name,
                                          const std::string& state_dir)
{
    if (!is_valid_stack_name(name))
        throw ConfigError(file, 0, 0, fmt::format("'{}' is not a valid stack name", name), name);
    Reader reader(file, name);
    auto root = reader.load_mapping(text, "a stack file");
    if (!root)
        return std::nullopt;
    Mapping keys(reader, *root, {}, stack_keys);

    ParsedStack parsed;
    StackDefinition& stack = parsed.stack;
    stack.name = name;
    stack.source = file;

    const Entry* mountpoint = keys.find("mountpoint");
    if (!mountpoint)
        reader.fail(root->Mark(), "missing required key 'mountpoint'");
    const Entry* lowers = keys.find("lowers");
    if (!lowers)
        reader.fail(root->Mark(), "missing required key 'lowers'");

    stack.mountpoint = read_path(reader, scalar(reader, *mountpoint, "an absolute path"), "'mountpoint'");
    parsed.mountpoint_mark = mountpoint->value.Mark();
    if (stack.mountpoint == state_dir)
        reader.fail(parsed.mountpoint_mark, fmt::format("'mountpoint' {} is the state dir", stack.mountpoint));
    if (is_within(stack.mountpoint, state_dir))
        reader.fail(parsed.mountpoint_mark,
                    fmt::format("'mountpoint' {} is inside the state dir {}", stack.mountpoint, state_dir));
    if (is_within(state_dir, stack.mountpoint))
        reader.fail(parsed.mountpoint_mark,
                    fmt::format("'mountpoint' {} would cover the state dir {}", stack.mountpoint, state_dir));

    stack.lowers = read_list(reader, *lowers, "a list of absolute paths",
                             [&](const YAML::Node& item, const std::string& what) {
                                 std::string path = read_path(reader, item, what);
                                 if (is_within(path, state_dir))
                                     reader.fail(item.Mark(), fmt::format("{} {} is inside the state dir {}", what,
                                                                          path, state_dir));
                                 return path;
                             });
    if (stack.lowers.empty())
        reader.fail(lowers->value.Mark(), "'lowers' must name at least one directory");

    if (const Entry* e = keys.find("upper"))
        stack.upper = read_bool(reader, *e);
    if (const Entry* e = keys.find("volatile"))
        stack.volatile_upper = read_bool(reader, *e);
    if (const Entry* e = keys.find("boot"))
        stack.boot = read_bool(reader, *e);
    if (const Entry* e = keys.find("xattr_format"))
        stack.xattr_format = read_xattr_format(reader, *e);
    if (const Entry* e = keys.find("timeline"))
        stack.timeline = read_snapshot_switch(reader, *e, stack);
    if (const Entry* e = keys.find("package_snapshots"))
        stack.package_snapshots = read_snapshot_switch(reader, *e, stack);
    if (const Entry* e = keys.find("cleanup"))
        read_cleanup(reader, *e, stack);
    if (const Entry* e = keys.find("max_depth"))
        stack.max_depth = static_cast<unsigned>(read_integer(reader, *e, "a number", 1, max_depth_limit,
                                                             fmt::format("from 1 to {}", max_depth_limit)));
    if (const Entry* e = keys.find("allow_users"))
        stack.allow_users = read_names(reader, *e, "user");
    if (const Entry* e = keys.find("allow_groups"))
        stack.allow_groups = read_names(reader, *e, "group");
    return parsed;
}

} // namespace

StackDefinition parse_stack(std::string_view text, const std::string& file, const std::string& name,
                            const std::string& state_dir)
{
    auto parsed = parse_stack_at(text, file, name, state_dir);
    if (!parsed)
        throw ConfigError(file, 0, 0, "no YAML document (an empty stack file masks the stack)", name);
    return std::move(parsed->stack);
}

GlobalConfig parse_global(std::string_view text, const std::string& file)
{
    GlobalConfig global;
    global.source = file;
    const std::string no_stack;
    Reader reader(file, no_stack);
    auto root = reader.load_mapping(text, "layerd.yaml");
    if (!root)
        return global;
    constexpr std::array<std::string_view, 1> global_keys{"state_dir"};
    Mapping keys(reader, *root, {}, global_keys);
    if (const Entry* e = keys.find("state_dir"))
        global.state_dir = read_path(reader, scalar(reader, *e, "an absolute path"), "'state_dir'");
    return global;
}

bool is_valid_stack_name(std::string_view name)
{
    return is_valid_name(name) && name[0] != '.';
}

namespace {

// Length of the UTF-8 sequence starting at S[I], 0 when it is not valid
// (overlong forms, surrogates and code points past U+10FFFF included).
size_t utf8_sequence(std::string_view s, size_t i)
{
    const auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
    const unsigned char lead = byte(i);
    if (lead < 0x80)
        return 1;
    size_t length = 0;
    uint32_t code = 0;
    if ((lead & 0xE0) == 0xC0) {
        length = 2;
        code = lead & 0x1F;
    } else if ((lead & 0xF0) == 0xE0) {
        length = 3;
        code = lead & 0x0F;
    } else if ((lead & 0xF8) == 0xF0) {
        length = 4;
        code = lead & 0x07;
    } else {
        return 0;
    }
    if (i + length > s.size())
        return 0;
    for (size_t k = 1; k < length; ++k) {
        if ((byte(i + k) & 0xC0) != 0x80)
            return 0;
        code = (code << 6) | (byte(i + k) & 0x3F);
    }
    constexpr std::array<uint32_t, 5> shortest{0, 0, 0x80, 0x800, 0x10000};
    if (code < shortest[length] || code > 0x10FFFF || (code >= 0xD800 && code <= 0xDFFF))
        return 0;
    return length;
}

} // namespace

bool is_valid_user_group_name(std::string_view name)
{
    if (name.empty() || name.front() == ' ' || name.back() == ' ')
        return false;
    for (size_t i = 0; i < name.size();) {
        const unsigned char c = static_cast<unsigned char>(name[i]);
        if (c < 0x20 || c == 0x7F || c == ':' || c == '/')
            return false;
        size_t length = utf8_sequence(name, i);
        if (length == 0)
            return false;
        i += length;
    }
    std::string_view unsigned_part = name[0] == '-' ? name.substr(1) : name;
    if (all_digits(unsigned_part))
        return false; // it would read as a uid (or as -1)
    return name != "." && name != "..";
}

std::vector<std::string> default_config_dirs()
{
    return {"/etc/layerd", "/run/layerd", "/usr/lib/layerd"};
}

namespace {

// What a config file path holds.
struct FileContents {
    enum class State { missing, masked, text } state = State::missing;
    std::string text;
};

// Reads PATH, following symlinks as systemd does. /dev/null (a symlink to
// it, usually) and an empty file mask; a missing file is not an error.
FileContents read_config_file(const std::string& path)
{
    FileContents contents;
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
    if (!fd) {
        if (errno == ENOENT && ::faccessat(AT_FDCWD, path.c_str(), F_OK, AT_SYMLINK_NOFOLLOW) != 0)
            return contents;
        throw ConfigError(path, 0, 0, fmt::format("cannot open: {}", std::strerror(errno)));
    }
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0)
        throw ConfigError(path, 0, 0, fmt::format("cannot stat: {}", std::strerror(errno)));
    if (S_ISCHR(st.st_mode) && st.st_rdev == makedev(1, 3)) {
        contents.state = FileContents::State::masked;
        return contents;
    }
    if (!S_ISREG(st.st_mode))
        throw ConfigError(path, 0, 0, "not a regular file");
    if (st.st_size > max_file_size)
        throw ConfigError(path, 0, 0, fmt::format("larger than {} bytes", max_file_size));
    std::string text(static_cast<size_t>(st.st_size), '\0');
    size_t have = 0;
    for (;;) {
        // The file may grow while it is read: read until EOF, within the cap.
        if (have == text.size())
            text.resize(std::min<size_t>(text.size() + 4096, max_file_size + 1));
        ssize_t n = ::read(fd.get(), text.data() + have, text.size() - have);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            throw ConfigError(path, 0, 0, fmt::format("cannot read: {}", std::strerror(errno)));
        if (n == 0)
            break;
        have += static_cast<size_t>(n);
        if (have > static_cast<size_t>(max_file_size))
            throw ConfigError(path, 0, 0, fmt::format("larger than {} bytes", max_file_size));
    }
    text.resize(have);
    contents.state = text.empty() ? FileContents::State::masked : FileContents::State::text;
    contents.text = std::move(text);
    return contents;
}

// stacks.d/*.yaml of every dir, by stack name; the first dir wins.
std::map<std::string, std::string> stack_files(const std::vector<std::string>& config_dirs,
                                               std::vector<ConfigError>& errors)
{
    std::map<std::string, std::string> files;
    for (const std::string& dir : config_dirs) {
        const std::string stacks_dir = dir + "/stacks.d";
        std::unique_ptr<DIR, int (*)(DIR*)> listing(::opendir(stacks_dir.c_str()), ::closedir);
        if (!listing) {
            if (errno != ENOENT)
                errors.emplace_back(stacks_dir, 0, 0, fmt::format("cannot list: {}", std::strerror(errno)));
            continue;
        }
        errno = 0;
        while (const dirent* entry = ::readdir(listing.get())) {
            std::string_view file = entry->d_name;
            if (file.starts_with('.') || !file.ends_with(yaml_suffix) || file.size() == yaml_suffix.size())
                continue;
            std::string name(file.substr(0, file.size() - yaml_suffix.size()));
            files.try_emplace(std::move(name), fmt::format("{}/{}", stacks_dir, file));
        }
        if (errno != 0)
            errors.emplace_back(stacks_dir, 0, 0, fmt::format("cannot list: {}", std::strerror(errno)));
    }
    return files;
}

} // namespace

Config load_config(const std::vector<std::string>& config_dirs, const std::optional<std::string>& state_dir_override)
{
    Config config;
    try {
        for (const std::string& dir : config_dirs) {
            const std::string path = dir + "/layerd.yaml";
            FileContents contents = read_config_file(path);
            if (contents.state == FileContents::State::missing)
                continue;
            if (contents.state == FileContents::State::text)
                config.global = parse_global(contents.text, path);
            else
                config.global.source = path;
            break;
        }
    } catch (const ConfigError& e) {
        config.errors.push_back(e);
        config.global_failed = true;
        return config;
    }
    if (state_dir_override)
        config.global.state_dir = *state_dir_override;

    std::map<std::string, std::string> mountpoints; // mountpoint -> stack
    for (const auto& [name, path] : stack_files(config_dirs, config.errors)) {
        try {
            FileContents contents = read_config_file(path);
            if (contents.state != FileContents::State::text)
                continue;
            auto parsed = parse_stack_at(contents.text, path, name, config.global.state_dir);
            if (!parsed)
                continue;
            auto [owner, fresh] = mountpoints.try_emplace(parsed->stack.mountpoint, name);
            if (!fresh)
                Reader(path, name).fail(parsed->mountpoint_mark,
                                        fmt::format("'mountpoint' {} is already the mountpoint of stack '{}'",
                                                    parsed->stack.mountpoint, owner->second));
            config.stacks.push_back(std::move(parsed->stack));
        } catch (const ConfigError& e) {
            if (e.stack().empty())
                config.errors.emplace_back(e.file(), e.line(), e.column(), e.reason(), name);
            else
                config.errors.push_back(e);
        }
    }
    return config;
}

} // namespace layerd
