// SPDX-License-Identifier: LGPL-2.1-or-later
#include "daemon.hpp"

#include "bus_error.hpp"
#include "config_diff.hpp"
#include "log.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <time.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fmt/format.h>
#include <set>

namespace layerd::service {

namespace {

int64_t monotonic_usec()
{
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<int64_t>(ts.tv_sec) * 1000000 + ts.tv_nsec / 1000;
}

void notify_status(const std::string& status)
{
    sd_notify(0, ("STATUS=" + status).c_str());
}

} // namespace

Daemon::Daemon(Options options) : options_(std::move(options)) {}

Daemon::~Daemon()
{
    disconnect();
}

Config Daemon::load() const
{
    std::vector<std::string> dirs = options_.config_dirs.empty() ? default_config_dirs() : options_.config_dirs;
    Config config = load_config(dirs, options_.state_dir);
    for (const auto& e : config.errors)
        log(LOG_ERR, e.what(), e.stack());
    if (config.global_failed)
        log(LOG_ERR, "layerd.yaml is not valid: no stack is loaded until it is fixed (then reload)");
    return config;
}

std::vector<std::string> Daemon::stack_names() const
{
    std::vector<std::string> names;
    for (const auto& [name, stack] : stacks_)
        names.push_back(name);
    return names;
}

bool Daemon::has_stack(const std::string& name) const
{
    return stacks_.count(name) != 0;
}

void Daemon::add_stack(StackDefinition definition)
{
    std::string name = definition.name;
    auto stack = std::make_unique<ManagedStack>(std::move(definition), *store_, state_dir_);
    if (bus_ && manager_)
        objects_[name] = std::make_unique<StackObject>(*bus_, *stack, *manager_);
    stacks_[name] = std::move(stack);
}

void Daemon::mount_boot_stacks()
{
    unsigned boot = 0, mounted = 0;
    for (auto& [name, stack] : stacks_) {
        if (!stack->definition().boot)
            continue;
        ++boot;
        try {
            stack->mount();
            ++mounted;
            log(LOG_INFO, "mounted at " + stack->active().mountpoint, name);
        } catch (...) {
            log(LOG_ERR, "cannot mount: " + to_bus_error(std::current_exception()).getMessage(), name);
        }
    }
    notify_status(fmt::format("{} of {} boot stacks mounted", mounted, boot));
}

void Daemon::reload()
{
    Config now = load();
    if (now.global_failed)
        throw ServiceError(ErrorKind::InvalidArgument,
                           "layerd.yaml is not valid (see the log): nothing was reloaded");
    // What is in force: every stack's definition as last accepted.
    Config old;
    old.global.state_dir = state_dir_;
    for (const auto& [name, stack] : stacks_)
        old.stacks.push_back(stack->definition());
    ConfigChange change = diff(old, now);
    std::vector<std::string> refusals;
    if (!change.global_keys.empty())
        refusals.push_back(restart_refusal(change));

    std::map<std::string, StackDefinition> defined;
    for (auto& d : now.stacks)
        defined.emplace(d.name, std::move(d));
    for (const StackChange& c : change.stacks) {
        auto it = stacks_.find(c.name);
        switch (c.kind) {
        case StackChange::Kind::added:
            log(LOG_INFO, "added by the reload", c.name);
            add_stack(std::move(defined.at(c.name)));
            break;
        case StackChange::Kind::invalid:
            // Its file is bad now (the error is logged): the stack keeps
            // the definition it had.
            break;
        case StackChange::Kind::changed: {
            ManagedStack& stack = *it->second;
            if (stack.is_mounted() && c.needs_remount()) {
                refusals.push_back(remount_refusal(c));
                break;
            }
            stack.set_definition(std::move(defined.at(c.name)));
            // A mounted stack takes the live keys (Timeline,
            // PackageSnapshots) at once, so it signals too.
            if (auto o = objects_.find(c.name); o != objects_.end())
                o->second->definition_changed();
            break;
        }
        case StackChange::Kind::removed: {
            auto o = objects_.find(c.name);
            if (it->second->is_mounted()) {
                refusals.push_back(fmt::format("stack '{}' is no longer configured but is mounted: run 'layerctl "
                                               "unmount {}' and reload again",
                                               c.name, c.name));
                break;
            }
            // Its worker may still be on a call, or just past the reply of
            // its last one (an Unmount, say): it goes when that is done.
            // The bus thread cannot wait for it here, as the worker's last
            // step takes sd-bus's lock, which this thread holds.
            if (o != objects_.end() && !o->second->idle()) {
                refusals.push_back(fmt::format("stack '{}' is no longer configured and is still finishing a call: "
                                               "reload again in a moment",
                                               c.name));
                break;
            }
            if (o != objects_.end())
                objects_.erase(o);
            stacks_.erase(it);
            log(LOG_INFO, "removed by the reload", c.name);
            break;
        }
        }
    }
    if (!refusals.empty()) {
        std::string all;
        for (const std::string& r : refusals)
            all += (all.empty() ? "" : "; ") + r;
        throw ServiceError(ErrorKind::Busy, "the rest is reloaded, but " + all);
    }
}

bool Daemon::connect()
{
    try {
        if (options_.bus == "system")
            bus_ = sdbus::createSystemBusConnection();
        else if (options_.bus == "session")
            bus_ = sdbus::createSessionBusConnection();
        else
            bus_ = sdbus::createSessionBusConnectionWithAddress(options_.bus);
        manager_ = std::make_unique<ManagerObject>(*bus_, *this);
        for (auto& [name, stack] : stacks_)
            objects_[name] = std::make_unique<StackObject>(*bus_, *stack, *manager_);
        // Last: once the name is ours, calls arrive for objects that exist.
        bus_->requestName(bus_name);
        return true;
    } catch (const std::exception& e) {
        disconnect();
        log(LOG_WARNING, fmt::format("cannot join the {} bus yet: {}", options_.bus, e.what()));
        return false;
    }
}

void Daemon::disconnect()
{
    objects_.clear(); // each waits for its running call
    manager_.reset();
    bus_.reset();
}

void Daemon::feed_watchdog()
{
    if (watchdog_usec_ == 0)
        return;
    int64_t now = monotonic_usec();
    if (now - last_ping_usec_ < static_cast<int64_t>(watchdog_usec_ / 2))
        return;
    sd_notify(0, "WATCHDOG=1");
    last_ping_usec_ = now;
}

void Daemon::notify_serving()
{
    size_t mounted = std::count_if(stacks_.begin(), stacks_.end(), [](const auto& s) { return s.second->is_mounted(); });
    notify_status(fmt::format("serving {}; {} of {} stacks mounted", bus_name, mounted, stacks_.size()));
}

Daemon::Wait Daemon::wait(int timeout_ms)
{
    feed_watchdog();
    if (watchdog_usec_ != 0)
        timeout_ms = std::min(timeout_ms, static_cast<int>(std::max<uint64_t>(watchdog_usec_ / 4000, 1)));
    pollfd fds[2] = {{signal_fd_.get(), POLLIN, 0}, {-1, 0, 0}};
    nfds_t n = 1;
    if (bus_) {
        auto pd = bus_->getEventLoopPollData();
        fds[1] = {pd.fd, pd.events, 0};
        n = 2;
        if (pd.timeout_usec != UINT64_MAX) {
            int64_t left = (static_cast<int64_t>(pd.timeout_usec) - monotonic_usec() + 999) / 1000;
            timeout_ms = static_cast<int>(std::clamp<int64_t>(left, 0, timeout_ms));
        }
    }
    int r = ::poll(fds, n, timeout_ms);
    feed_watchdog();
    if (r < 0 && errno != EINTR)
        throw std::runtime_error(fmt::format("poll: {}", std::strerror(errno)));
    if (r > 0 && (fds[0].revents & POLLIN)) {
        signalfd_siginfo info{};
        if (::read(signal_fd_.get(), &info, sizeof info) == static_cast<ssize_t>(sizeof info)) {
            if (info.ssi_signo == SIGHUP) {
                log(LOG_INFO, "SIGHUP: reloading the configuration");
                try {
                    reload();
                } catch (...) {
                    log(LOG_ERR, "the reload failed: " + to_bus_error(std::current_exception()).getMessage());
                }
            } else {
                log(LOG_INFO, fmt::format("{}: stopping", strsignal(static_cast<int>(info.ssi_signo))));
                return Wait::stop;
            }
        }
    }
    return bus_ ? Wait::bus : Wait::timeout;
}

void Daemon::serve()
{
    for (;;) {
        // Everything pending first, then sleep.
        while (bus_->processPendingRequest()) {
        }
        // Capped, so a reply a worker queued is never left unsent for long.
        if (wait(1000) == Wait::stop)
            return;
    }
}

void Daemon::shutdown()
{
    sd_notify(0, "STOPPING=1");
    disconnect();
    for (auto& [name, stack] : stacks_) {
        if (!stack->is_mounted())
            continue;
        try {
            bool lazy = false;
            stack->unmount(&lazy);
            if (lazy)
                log(LOG_WARNING,
                    "the mount was busy: detached lazily and its FUSE connection aborted (files still open on it "
                    "fail from now on)",
                    name);
            else
                log(LOG_INFO, "unmounted", name);
        } catch (...) {
            log(LOG_ERR, "cannot unmount: " + to_bus_error(std::current_exception()).getMessage(), name);
        }
    }
    stacks_.clear();
    store_.reset();
}

int Daemon::run()
{
    sigset_t mask;
    sigemptyset(&mask);
    for (int s : {SIGTERM, SIGINT, SIGHUP})
        sigaddset(&mask, s);
    // Before any thread starts, so every thread inherits the mask.
    if (pthread_sigmask(SIG_BLOCK, &mask, nullptr) != 0) {
        log(LOG_ERR, "cannot block signals");
        return 1;
    }
    signal_fd_ = UniqueFd(::signalfd(-1, &mask, SFD_CLOEXEC));
    if (!signal_fd_) {
        log(LOG_ERR, fmt::format("signalfd: {}", std::strerror(errno)));
        return 1;
    }

    Config config = load();
    state_dir_ = config.global.state_dir;
    if (::mkdir(state_dir_.c_str(), 0700) != 0 && errno != EEXIST) {
        log(LOG_ERR, fmt::format("cannot create the state dir {}: {}", state_dir_, std::strerror(errno)));
        return 1;
    }
    try {
        store_.emplace(SnapshotStore::open(state_dir_ + "/layerd.db"));
    } catch (const std::exception& e) {
        log(LOG_ERR, fmt::format("cannot open the state database {}/layerd.db: {}", state_dir_, e.what()));
        return 1;
    }
    for (auto& d : config.stacks)
        add_stack(std::move(d));
    mount_boot_stacks();
    // Ready once the boot stacks are mounted: local-fs.target may go on.
    // The bus comes later (it may not run yet this early in the boot).
    sd_notify(0, "READY=1");
    if (sd_watchdog_enabled(0, &watchdog_usec_) <= 0)
        watchdog_usec_ = 0;

    int backoff_ms = 100;
    for (;;) {
        if (!connect()) {
            if (wait(backoff_ms) == Wait::stop)
                break;
            backoff_ms = std::min(backoff_ms * 2, 5000);
            continue;
        }
        log(LOG_INFO, fmt::format("serving {} on the {} bus", bus_name, options_.bus));
        notify_serving();
        try {
            serve();
            break; // asked to stop
        } catch (const std::exception& e) {
            log(LOG_ERR, fmt::format("lost the bus: {}; reconnecting", e.what()));
            disconnect();
            backoff_ms = 100;
        }
    }
    shutdown();
    return 0;
}

} // namespace layerd::service
