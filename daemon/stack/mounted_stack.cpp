// SPDX-License-Identifier: LGPL-2.1-or-later
#include "mounted_stack.hpp"

#include "layer_merge.hpp"
#include "stack_io.hpp"
#include "layer_view.hpp"
#include "remove_tree.hpp"
#include "resolve.hpp"
#include "session.hpp"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <fmt/format.h>
#include <fstream>
#include <set>
#include <sstream>

namespace layerd {

void fail_io(const std::string& what, int err)
{
    throw SnapshotError(SnapshotError::Kind::Io, fmt::format("{}: {}", what, std::strerror(err)));
}

void fail_store(const std::string& stack, const StoreError& e)
{
    throw SnapshotError(SnapshotError::Kind::Io, fmt::format("stack {}: the state database: {}", stack, e.what()));
}

UniqueFd open_dir_or_fail(const std::string& path, int flags)
{
    int fd = ::open(path.c_str(), flags | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        fail_io("open " + path, errno);
    return UniqueFd(fd);
}

namespace {

void make_dir(const std::string& path)
{
    if (::mkdir(path.c_str(), 0700) != 0 && errno != EEXIST)
        fail_io("mkdir " + path, errno);
}

bool dir_is_empty(const std::string& path)
{
    int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return false;
    std::vector<LayerDirEntry> entries;
    int r = read_layer_dir(fd, &entries);
    ::close(fd);
    return r == 0 && entries.empty();
}

// The device of the layerd-fs mount at PATH, if there is one.
std::optional<dev_t> mounted_device(const std::string& path)
{
    std::ifstream in("/proc/self/mountinfo");
    std::string line;
    std::optional<dev_t> found;
    while (std::getline(in, line)) {
        std::istringstream ls(line);
        std::string id, parent, devno, root, mp;
        ls >> id >> parent >> devno >> root >> mp;
        auto sep = line.find(" - ");
        if (mp != path || sep == std::string::npos)
            continue;
        std::istringstream rest(line.substr(sep + 3));
        std::string fstype;
        rest >> fstype;
        if (fstype != "fuse.layerd-fs")
            continue;
        auto colon = devno.find(':');
        found = makedev(std::stoul(devno.substr(0, colon)), std::stoul(devno.substr(colon + 1)));
    }
    return found;
}

int64_t now() { return static_cast<int64_t>(std::time(nullptr)); }

} // namespace

MountedStack::MountedStack(SnapshotStore& store, StackConfig config)
    : store_(store), config_(std::move(config))
{
    if (!is_valid_name(config_.name))
        throw SnapshotError(SnapshotError::Kind::InvalidArgument, "invalid stack name '" + config_.name + "'");
    char* real = ::realpath(config_.mountpoint.c_str(), nullptr);
    if (!real)
        throw LayerError(fmt::format("mountpoint '{}': {}", config_.mountpoint, std::strerror(errno)));
    config_.mountpoint = real;
    std::free(real);
    if (config_.read_only) {
        mount();
        return;
    }
    stack_dir_ = config_.state_dir + "/stacks/" + config_.name;
    make_dir(config_.state_dir + "/stacks");
    make_dir(stack_dir_);
    make_dir(stack_dir_ + "/layers");
    make_dir(stack_dir_ + "/work");
    make_dir(stack_dir_ + "/merge");

    store_.ensure_stack(config_.name);
    if (!store_.live_layer(config_.name)) {
        store_.transaction([&] {
            int64_t id = store_.create_layer(config_.name, std::nullopt, LayerState::Live);
            mkdir_layer(id);
            store_.set_live_layer(config_.name, id);
        });
    }
    recover();
    mount();
}

MountedStack::~MountedStack()
{
    unmount();
}

void MountedStack::set_limits(const CleanupConfig& cleanup, double free_limit, unsigned max_depth)
{
    config_.cleanup = cleanup;
    config_.free_limit = free_limit;
    config_.max_depth = max_depth;
}

void MountedStack::require_upper() const
{
    if (config_.read_only)
        throw SnapshotError(SnapshotError::Kind::InvalidArgument,
                            fmt::format("stack {} is read-only (upper: false): it has no snapshots", config_.name));
}

std::string MountedStack::layer_dir(int64_t id) const
{
    return fmt::format("{}/layers/{}", stack_dir_, id);
}

int64_t MountedStack::mkdir_layer(int64_t id)
{
    std::string dir = layer_dir(id);
    if (::mkdir(dir.c_str(), 0755) == 0)
        return id;
    // A transaction that died after its mkdir gives back its id: its empty
    // directory is the new layer's.
    if (errno == EEXIST && dir_is_empty(dir))
        return id;
    fail_io("mkdir " + dir, errno == EEXIST ? ENOTEMPTY : errno);
}

std::vector<int64_t> MountedStack::chain_of(int64_t layer)
{
    std::vector<int64_t> chain;
    for (std::optional<int64_t> l = layer; l;) {
        chain.push_back(*l);
        auto rec = store_.get_layer(*l);
        if (!rec)
            throw SnapshotError(SnapshotError::Kind::Io, fmt::format("layer {} is missing from the database", *l));
        l = rec->parent;
    }
    return chain;
}

unsigned MountedStack::depth()
{
    if (config_.read_only)
        return 0;
    return static_cast<unsigned>(chain_of(*store_.live_layer(config_.name)).size() - 1);
}

std::vector<SnapshotRecord> MountedStack::snapshots()
{
    if (config_.read_only)
        return {};
    return store_.list_snapshots(config_.name);
}

void MountedStack::recover()
{
    // Layers a crash left between their removal from disk and from the
    // database: finish removing them.
    for (const LayerRecord& l : store_.list_layers(config_.name))
        if (l.state == LayerState::Removing)
            remove_layer_dir_and_row(l.id);
    note_unknown_layer_dirs();
    // Merges a crash interrupted: merge_layer resumes where it stopped.
    for (const MergeRecord& m : store_.merges_in_progress())
        if (m.stack == config_.name)
            merge_into_child(m.layer, m.into_layer);
    // A rollback recorded for this mount: keep the current state as a
    // snapshot, then continue on a new layer over the target.
    if (auto target = store_.pending_rollback(config_.name)) {
        int64_t live = *store_.live_layer(config_.name);
        if (!dir_is_empty(layer_dir(live))) {
            store_.transaction([&] {
                switch_live(*target, "changes before the rollback applied at mount", 0);
                store_.clear_pending_rollback(config_.name);
            });
        } else {
            // Nothing changed since the rollback was asked for (and its
            // snapshot taken): the empty live layer just goes.
            store_.transaction([&] {
                int64_t id = store_.create_layer(config_.name, *target, LayerState::Live);
                mkdir_layer(id);
                store_.set_live_layer(config_.name, id);
                store_.delete_layer(live);
                store_.clear_pending_rollback(config_.name);
            });
            ::rmdir(layer_dir(live).c_str());
        }
    }
}

void MountedStack::note_unknown_layer_dirs()
{
    std::set<std::string> known;
    for (const LayerRecord& l : store_.list_layers(config_.name)) {
        known.insert(std::to_string(l.id));
        struct stat st;
        if (::lstat(layer_dir(l.id).c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
            recovery_notes_.push_back(fmt::format("layer {} ({}) has no directory {}", l.id, to_string(l.state),
                                                  layer_dir(l.id)));
    }
    UniqueFd layers = open_dir_or_fail(stack_dir_ + "/layers", O_RDONLY);
    std::vector<LayerDirEntry> entries;
    if (int r = read_layer_dir(layers.get(), &entries); r < 0)
        fail_io("reading " + stack_dir_ + "/layers", -r);
    for (const LayerDirEntry& e : entries)
        if (!known.contains(e.name))
            recovery_notes_.push_back(
                fmt::format("{}/layers/{} is not a layer of the database; left alone", stack_dir_, e.name));
}

void MountedStack::mount()
{
    LayerSetConfig lc;
    if (!config_.read_only) {
        int64_t live = *store_.live_layer(config_.name);
        std::vector<int64_t> chain = chain_of(live);
        lc.upper = layer_dir(live);
        lc.work = stack_dir_ + "/work";
        lc.is_volatile = config_.volatile_upper;
        for (size_t i = 1; i < chain.size(); ++i)
            lc.lowers.push_back(layer_dir(chain[i]));
    }
    lc.lowers.insert(lc.lowers.end(), config_.lowers.begin(), config_.lowers.end());
    lc.mountpoint = config_.mountpoint;
    fs::OverlayOptions options;
    options.xattr_format = config_.xattr_format;
    LayerSet layers = LayerSet::open(lc);
    // The configured lowers as opened now, before the mount may cover one of
    // them (/etc over /etc): rollbacks and diffs reach them through these.
    lowers_.assign(layers.layers.end() - static_cast<std::ptrdiff_t>(config_.lowers.size()), layers.layers.end());
    overlay_ = std::make_unique<fs::Overlay>(std::move(layers), options);

    fs::MountConfig mc;
    mc.mountpoint = config_.mountpoint;
    mc.fsname = "layerd:" + config_.name;
    mc.foreground = true;
    mc.signal_handlers = false;
    if (geteuid() == 0)
        mc.options.emplace_back("allow_other");
    loop_done_ = false;
    loop_ = std::thread([this, mc] {
        loop_status_ = fs::mount_and_serve(*overlay_, mc);
        loop_done_ = true;
    });
    for (int i = 0; i < 1000; ++i) {
        if (mounted_device(config_.mountpoint))
            return;
        if (loop_done_)
            break;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    unmount();
    throw SnapshotError(SnapshotError::Kind::Io, "mounting stack " + config_.name + " at " + config_.mountpoint +
                                                     " failed");
}

void MountedStack::unmount()
{
    if (!loop_.joinable())
        return;
    auto dev = mounted_device(config_.mountpoint);
    if (dev && ::umount2(config_.mountpoint.c_str(), 0) != 0) {
        // Busy: users keep their files, but the loop must end; abort the
        // connection so the detached mount cannot hang them.
        std::ofstream(fmt::format("/sys/fs/fuse/connections/{}/abort", minor(*dev))) << "1";
        ::umount2(config_.mountpoint.c_str(), MNT_DETACH);
    }
    loop_.join();
    overlay_.reset();
}

void sync_mount(const std::string& mountpoint)
{
    UniqueFd fd = open_dir_or_fail(mountpoint, O_RDONLY);
    (void)::syncfs(fd.get());
}

uint32_t MountedStack::freeze_live(const NewSnapshot& s, int64_t* new_live)
{
    if (unsigned d = depth(); d >= config_.max_depth)
        throw SnapshotError(SnapshotError::Kind::DepthLimit,
                            fmt::format("stack {} is {} snapshots deep (the limit is {}): delete snapshots or run "
                                        "'layerctl cleanup {} number' first",
                                        config_.name, d, config_.max_depth, config_.name));
    if (s.pre && !store_.get_snapshot(config_.name, *s.pre))
        throw SnapshotError(SnapshotError::Kind::NoSuchSnapshot,
                            fmt::format("stack {} has no snapshot {}", config_.name, *s.pre));
    sync_mount(config_.mountpoint);
    int64_t old = *store_.live_layer(config_.name);
    auto [number, id] = store_.transaction([&] {
        int64_t id = store_.create_layer(config_.name, old, LayerState::Live);
        mkdir_layer(id);
        store_.set_layer_state(old, LayerState::Frozen);
        SnapshotRecord r;
        r.stack = config_.name;
        r.type = s.type;
        r.pre_number = s.pre;
        r.layer = old;
        r.time = now();
        r.uid = s.uid;
        r.description = s.description;
        r.cleanup = s.cleanup;
        r.userdata = s.userdata;
        uint32_t n = store_.record_snapshot(r);
        store_.set_live_layer(config_.name, id);
        return std::pair{n, id};
    });
    int r = overlay_->freeze_upper(LayerSet::open_layer("layer", layer_dir(id), false));
    if (r < 0) {
        // The mount still writes to the old layer: so must the database say.
        store_.transaction([&, n = number, id = id] {
            store_.delete_snapshot_row(config_.name, n);
            store_.set_layer_state(old, LayerState::Live);
            store_.set_live_layer(config_.name, old);
            store_.delete_layer(id);
        });
        ::rmdir(layer_dir(id).c_str());
        fail_io("freezing the live layer of " + config_.name, -r);
    }
    *new_live = id;
    return number;
}

std::pair<uint32_t, int64_t> MountedStack::switch_live(int64_t parent, const std::string& description, uint32_t uid)
{
    int64_t old = *store_.live_layer(config_.name);
    int64_t id = store_.create_layer(config_.name, parent, LayerState::Live);
    mkdir_layer(id);
    store_.set_layer_state(old, LayerState::Frozen);
    SnapshotRecord backup;
    backup.stack = config_.name;
    backup.layer = old;
    backup.time = now();
    backup.uid = uid;
    backup.description = description;
    backup.cleanup = "number";
    uint32_t n = store_.record_snapshot(backup);
    store_.set_live_layer(config_.name, id);
    return {n, id};
}

uint32_t MountedStack::create_snapshot(const NewSnapshot& snapshot)
try {
    require_upper();
    int64_t old = *store_.live_layer(config_.name);
    int64_t live;
    uint32_t number = freeze_live(snapshot, &live);
    // A deleted snapshot's layer left waiting over the live one can merge
    // now. The snapshot is taken whatever happens here: a merge that fails
    // is recorded and resumes at the next start.
    try {
        if (auto rec = store_.get_layer(old); rec && rec->parent)
            remove_layer_if_unused(*rec->parent);
    } catch (const std::exception&) {
    }
    return number;
} catch (const StoreError& e) {
    fail_store(config_.name, e);
}

uint32_t MountedStack::rollback(uint32_t number, bool next_mount, uint32_t uid)
try {
    require_upper();
    auto snap = store_.get_snapshot(config_.name, number);
    if (!snap)
        throw SnapshotError(SnapshotError::Kind::NoSuchSnapshot,
                            fmt::format("stack {} has no snapshot {}", config_.name, number));
    if (next_mount) {
        // The state now is kept as a snapshot (what changes until the next
        // mount is kept there too, as another one).
        NewSnapshot before;
        before.description = fmt::format("before the rollback to {} at the next mount", number);
        before.cleanup = "number";
        before.uid = uid;
        int64_t live;
        uint32_t backup = freeze_live(before, &live);
        store_.transaction([&] { store_.set_pending_rollback(config_.name, snap->layer); });
        return backup;
    }
    sync_mount(config_.mountpoint);
    auto [backup, id] =
        store_.transaction([&] { return switch_live(snap->layer, fmt::format("before the rollback to {}", number), uid); });
    std::vector<std::shared_ptr<Layer>> layers;
    try {
        layers.push_back(LayerSet::open_layer("layer", layer_dir(id), true));
        for (int64_t l : chain_of(snap->layer))
            layers.push_back(LayerSet::open_layer("layer", layer_dir(l), false));
        for (const auto& lower : lowers_)
            layers.push_back(LayerSet::reopen_layer(*lower, false));
    } catch (const LayerError& e) {
        throw SnapshotError(SnapshotError::Kind::Io, e.what());
    }
    if (int r = overlay_->replace_view(std::move(layers)); r < 0)
        fail_io(fmt::format("switching {} to snapshot {}", config_.name, number), -r);
    return backup;
} catch (const StoreError& e) {
    fail_store(config_.name, e);
}

void MountedStack::delete_snapshots(const std::vector<uint32_t>& numbers)
{
    require_upper();
    std::string failures;
    std::optional<SnapshotError::Kind> kind; // the failures' kind, if they share one
    for (uint32_t n : numbers) {
        try {
            auto snap = store_.get_snapshot(config_.name, n);
            if (!snap)
                throw SnapshotError(SnapshotError::Kind::NoSuchSnapshot,
                                    fmt::format("stack {} has no snapshot {}", config_.name, n));
            store_.transaction([&] { store_.delete_snapshot_row(config_.name, n); });
            remove_layer_if_unused(snap->layer);
        } catch (const SnapshotError& e) {
            kind = failures.empty() || kind == e.kind() ? std::optional(e.kind()) : SnapshotError::Kind::Io;
            failures += failures.empty() ? e.what() : std::string("; ") + e.what();
        } catch (const std::exception& e) {
            kind = SnapshotError::Kind::Io;
            failures += failures.empty() ? e.what() : std::string("; ") + e.what();
        }
    }
    if (!failures.empty())
        throw SnapshotError(kind.value_or(SnapshotError::Kind::Io), failures);
}

void MountedStack::remove_layer_if_unused(int64_t layer)
{
    for (;;) {
        auto rec = store_.get_layer(layer);
        if (!rec || rec->state == LayerState::Live || !store_.snapshots_using_layer(layer).empty() ||
            store_.pending_rollback(config_.name) == layer)
            return;
        std::vector<LayerRecord> children = store_.children_of(layer);
        if (children.size() > 1) {
            store_.transaction([&] { store_.set_layer_state(layer, LayerState::Hidden); });
            return;
        }
        // The live layer is the engine's to change, never the merge's: a
        // layer whose only child is live waits, hidden, for the next
        // snapshot to freeze that child.
        if (children.size() == 1 && children.front().state == LayerState::Live) {
            if (rec->state != LayerState::Hidden)
                store_.transaction([&] { store_.set_layer_state(layer, LayerState::Hidden); });
            return;
        }
        if (children.size() == 1) {
            merge_into_child(layer, children.front().id);
            return;
        }
        // A leaf no view uses: gone (files still open in it stay readable).
        store_.transaction([&] { store_.set_layer_state(layer, LayerState::Removing); });
        remove_layer_dir_and_row(layer);
        if (!rec->parent)
            return;
        layer = *rec->parent; // may now be unused or have one child left
    }
}

void MountedStack::remove_layer_dir_and_row(int64_t layer)
{
    UniqueFd dir = open_dir_or_fail(stack_dir_ + "/layers", O_PATH);
    if (int r = remove_tree_at(dir.get(), std::to_string(layer).c_str()); r < 0)
        fail_io("removing " + layer_dir(layer), -r);
    store_.transaction([&] { store_.delete_layer(layer); });
}

void MountedStack::merge_into_child(int64_t layer, int64_t child)
{
    bool resumed = false;
    for (const MergeRecord& m : store_.merges_in_progress())
        resumed |= m.layer == layer;
    if (!resumed)
        store_.transaction([&] { store_.begin_merge(layer, child); });
    int layers = ::open((stack_dir_ + "/layers").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int child_fd = ::open(layer_dir(child).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int work = ::open((stack_dir_ + "/merge").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int r = (layers < 0 || child_fd < 0 || work < 0) ? -errno : 0;
    if (r == 0) {
        store_.transaction([&] { store_.set_merge_state(layer, MergeState::Moving); });
        std::string name = std::to_string(layer);
        // The layer that leaves the engine's view at the end (already gone
        // from disk when a merge resumes after its last step).
        struct stat pst {};
        bool in_view = overlay_ && ::fstatat(layers, name.c_str(), &pst, AT_SYMLINK_NOFOLLOW) == 0;
        // Mounted, both layers are in the engine's view: its lookups must see
        // each step whole. Before the mount (recovery) nobody looks.
        r = merge_layer(layers, name.c_str(), child_fd, work, OverlayXattrs(config_.xattr_format),
                        [this](const MergeStep& step) {
                            if (overlay_)
                                overlay_->run_merge_step(step);
                            else
                                step();
                        });
        if (r == 0 && in_view)
            r = overlay_->drop_merged_layer(pst.st_dev, pst.st_ino);
    }
    for (int fd : {layers, child_fd, work})
        if (fd >= 0)
            ::close(fd);
    if (r < 0)
        fail_io(fmt::format("merging layer {} into {} (resumes at the next start)", layer, child), -r);
    store_.transaction([&] {
        store_.finish_merge(layer);
        store_.delete_layer(layer);
    });
}

int64_t MountedStack::layer_of_snapshot(uint32_t number)
{
    require_upper();
    if (number == 0)
        return *store_.live_layer(config_.name);
    auto snap = store_.get_snapshot(config_.name, number);
    if (!snap)
        throw SnapshotError(SnapshotError::Kind::NoSuchSnapshot,
                            fmt::format("stack {} has no snapshot {}", config_.name, number));
    return snap->layer;
}

MountedStack::Views MountedStack::open_views(uint32_t a, uint32_t b)
{
    std::vector<int64_t> ca = chain_of(layer_of_snapshot(a)), cb = chain_of(layer_of_snapshot(b));
    Views views;
    // The shared part: the common tail of both chains, then the lowers.
    size_t shared = 0;
    while (shared < ca.size() && shared < cb.size() && ca[ca.size() - 1 - shared] == cb[cb.size() - 1 - shared])
        ++shared;
    auto open_dir = [&](const std::string& path) {
        views.fds.push_back(open_dir_or_fail(path, O_PATH));
        return views.fds.back().get();
    };
    views.fds.reserve(ca.size() + cb.size());
    std::vector<int> lowers;
    lowers.reserve(lowers_.size());
    for (const auto& l : lowers_)
        lowers.push_back(l->root.get());
    auto view_of = [&](const std::vector<int64_t>& chain) {
        std::vector<int> v;
        v.reserve(chain.size() + lowers.size());
        for (int64_t l : chain)
            v.push_back(open_dir(layer_dir(l)));
        v.insert(v.end(), lowers.begin(), lowers.end());
        return v;
    };
    views.a = view_of(ca);
    views.b = view_of(cb);
    // The shared layers must be the same fds on both sides.
    for (size_t i = 0; i < shared; ++i)
        views.b[cb.size() - 1 - i] = views.a[ca.size() - 1 - i];
    views.shared = shared + lowers.size();
    return views;
}

int MountedStack::diff_until(uint32_t a, uint32_t b, const DiffCallback& out)
{
    // The live layer on disk lags the kernel's write-back cache.
    if (a == 0 || b == 0)
        sync_mount(config_.mountpoint);
    Views views = open_views(a, b);
    int r = diff_views(views.a, views.b, views.shared, OverlayXattrs(config_.xattr_format), out);
    if (r < 0)
        fail_io(fmt::format("diff {}..{} of {}", a, b, config_.name), -r);
    return r;
}

void MountedStack::diff(uint32_t a, uint32_t b, const std::function<void(const DiffEntry&)>& out)
try {
    diff_until(a, b, [&](const DiffEntry& e) {
        out(e);
        return 0;
    });
} catch (const StoreError& e) {
    fail_store(config_.name, e);
}

} // namespace layerd
