// SPDX-License-Identifier: LGPL-2.1-or-later
// The stack worker of the daemon (daemon/service/worker.hpp): order, the
// Busy limit, abandoned jobs, and its lock order: a job's captures are
// freed with the worker's lock released (freeing a call's reply takes
// sd-bus's lock, which the bus thread holds while it posts). No bus, no root.
#include "bus_error.hpp"
#include "worker.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace layerd::service {
namespace {

using namespace std::chrono_literals;

// Blocks jobs until opened.
class Gate {
public:
    void wait()
    {
        std::unique_lock lock(mutex_);
        cv_.wait(lock, [&] { return open_; });
    }
    void open()
    {
        std::lock_guard lock(mutex_);
        open_ = true;
        cv_.notify_all();
    }

private:
    std::mutex mutex_;
    std::condition_variable cv_;
    bool open_ = false;
};

Worker::Job job(std::function<void()> run, std::function<void()> abandon = [] {})
{
    return Worker::Job{"test", std::move(run), std::move(abandon)};
}

TEST(Worker, RunsJobsInOrder)
{
    std::vector<int> order;
    std::promise<void> done;
    {
        Worker worker("demo", 16);
        for (int i = 0; i < 5; ++i)
            worker.post(job([&order, i] { order.push_back(i); }));
        worker.post(job([&] { done.set_value(); }));
        ASSERT_EQ(done.get_future().wait_for(10s), std::future_status::ready);
    }
    EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 3, 4}));
}

TEST(Worker, BusyWhenTheQueueIsFull)
{
    Gate gate;
    std::promise<void> started;
    Worker worker("demo", 2);
    worker.post(job([&] {
        started.set_value();
        gate.wait();
    }));
    ASSERT_EQ(started.get_future().wait_for(10s), std::future_status::ready);
    worker.post(job([] {}));
    worker.post(job([] {}));
    EXPECT_FALSE(worker.idle());
    try {
        worker.post(job([] {}));
        ADD_FAILURE() << "a third queued job was accepted";
    } catch (const ServiceError& e) {
        EXPECT_EQ(e.kind(), ErrorKind::Busy);
    }
    gate.open();
}

TEST(Worker, StoppingFinishesTheRunningJobAndAbandonsTheQueued)
{
    Gate gate;
    std::promise<void> started;
    bool ran_second = false, abandoned_second = false, finished_first = false;
    auto worker = std::make_unique<Worker>("demo", 4);
    worker->post(job([&] {
        started.set_value();
        gate.wait();
        finished_first = true;
    }));
    worker->post(job([&] { ran_second = true; }, [&] { abandoned_second = true; }));
    ASSERT_EQ(started.get_future().wait_for(10s), std::future_status::ready);
    std::thread opener([&] {
        std::this_thread::sleep_for(100ms);
        gate.open();
    });
    worker.reset();
    opener.join();
    EXPECT_TRUE(finished_first);
    EXPECT_FALSE(ran_second);
    EXPECT_TRUE(abandoned_second);
}

// Its destructor asks the worker, from another thread, whether it is idle:
// that takes the worker's lock, so it answers only once the lock is free.
struct LockProbe {
    Worker* worker = nullptr;
    std::promise<bool>* free_in_time = nullptr;
    std::promise<void>* answered = nullptr;
    ~LockProbe()
    {
        auto got = std::make_shared<std::promise<void>>();
        auto future = got->get_future();
        std::thread([w = worker, got, answered = answered] {
            (void)w->idle();
            got->set_value();
            answered->set_value();
        }).detach();
        free_in_time->set_value(future.wait_for(2s) == std::future_status::ready);
    }
};

TEST(Worker, FreesAJobWithoutHoldingItsLock)
{
    std::promise<bool> free_in_time;
    std::promise<void> answered;
    Worker worker("demo", 4);
    {
        auto probe = std::make_shared<LockProbe>();
        probe->worker = &worker;
        probe->free_in_time = &free_in_time;
        probe->answered = &answered;
        worker.post(job([probe] {}));
    }
    auto result = free_in_time.get_future();
    ASSERT_EQ(result.wait_for(10s), std::future_status::ready);
    EXPECT_TRUE(result.get()) << "the job's captures were freed under the worker's lock";
    // The probe's thread is done with the worker before it goes.
    answered.get_future().wait();
}

} // namespace
} // namespace layerd::service
