// SPDX-License-Identifier: LGPL-2.1-or-later
#include "worker.hpp"

#include "bus_error.hpp"
#include "log.hpp"

#include <fmt/format.h>

namespace layerd::service {

Worker::Worker(std::string stack, size_t max_queued) : stack_(std::move(stack)), max_queued_(max_queued)
{
    thread_ = std::thread([this] { loop(); });
}

Worker::~Worker()
{
    std::deque<Job> abandoned;
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
        abandoned.swap(queue_);
        if (!running_.empty())
            log(LOG_INFO, fmt::format("waiting for {} to finish", running_), stack_);
    }
    wake_.notify_all();
    thread_.join();
    for (auto& job : abandoned) {
        try {
            job.abandon();
        } catch (...) {
            // The caller gets no answer; nothing else is left to tell.
        }
    }
}

void Worker::post(Job job)
{
    {
        std::lock_guard lock(mutex_);
        if (stopping_)
            throw ServiceError(ErrorKind::Busy, fmt::format("stack {} is shutting down", stack_));
        if (queue_.size() >= max_queued_)
            throw ServiceError(ErrorKind::Busy, fmt::format("stack {} is busy with {} and {} more calls; try again "
                                                            "when they are done",
                                                            stack_, running_, queue_.size()));
        queue_.push_back(std::move(job));
    }
    wake_.notify_one();
}

bool Worker::idle()
{
    std::lock_guard lock(mutex_);
    return queue_.empty() && running_.empty();
}

void Worker::loop()
{
    std::unique_lock lock(mutex_);
    for (;;) {
        wake_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
        if (stopping_)
            return;
        Job job = std::move(queue_.front());
        queue_.pop_front();
        running_ = job.what.empty() ? "a call" : job.what;
        lock.unlock();
        try {
            job.run();
        } catch (...) {
            // Jobs answer their callers themselves; this is a bug's last stop.
            log(LOG_ERR, fmt::format("{} failed: {}", job.what, to_bus_error(std::current_exception()).getMessage()),
                stack_);
        }
        // The job's captures (the call's reply, its message) go now, not
        // under mutex_: freeing them takes sd-bus's lock, which the bus
        // thread holds when it calls post(). Lock order: sd-bus, then mutex_.
        job = Job{};
        lock.lock();
        running_.clear();
    }
}

} // namespace layerd::service
