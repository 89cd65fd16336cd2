// SPDX-License-Identifier: LGPL-2.1-or-later
// One thread that runs a stack's long work (mount, snapshots, merges,
// diffs, cleanup) in order, so the bus thread keeps answering reads while a
// stack is busy (DESIGN §10: long work runs off the bus thread).
//
// Lock order: sd-bus's connection lock (held by the bus thread while it
// dispatches a call, and taken by anything that sends, or frees a message)
// before mutex_. So nothing touches sd-bus while holding mutex_: jobs run,
// and are destroyed, with it released.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace layerd::service {

class Worker {
public:
    struct Job {
        std::string what; // for messages: "CreateSnapshot"
        std::function<void()> run;
        // Called instead of run when the worker stops first (the caller
        // must still get an answer).
        std::function<void()> abandon;
    };

    // At most MAX_QUEUED jobs wait behind the running one.
    Worker(std::string stack, size_t max_queued);
    Worker(const Worker&) = delete;
    Worker& operator=(const Worker&) = delete;
    // Finishes the running job; the queued ones are abandoned.
    ~Worker();

    // Queues JOB. Throws ServiceError(Busy) when the queue is full or the
    // worker is stopping.
    void post(Job job);
    // Nothing running or queued.
    bool idle();

private:
    void loop();

    std::string stack_;
    size_t max_queued_;
    std::mutex mutex_;
    std::condition_variable wake_;
    std::deque<Job> queue_; // guarded by mutex_
    std::string running_;   // what runs now, "" when nothing; guarded by mutex_
    bool stopping_ = false; // guarded by mutex_
    std::thread thread_;
};

} // namespace layerd::service
