// SPDX-License-Identifier: LGPL-2.1-or-later
// Keeps the engine's readers of the layers from seeing half a merge step.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>

namespace layerd::fs {

// A merge on a live mount (core merge_layer) moves a frozen layer P into its
// child C one step at a time; after every step the layers on disk show the
// same view. A reader that asks C and then P can still fall between the two
// halves of a step (a name not in C yet, already gone from P), and a grouped
// step is only consistent at its end. So steps are writers of a sequence
// lock: the counter is odd while one runs. A reader notes the counter,
// reads the layers, and reads again if the counter moved: two loads on the
// hot path and no store. Readers have no effect but their result.
//
// Lock order: a reader may hold change_mutex_ and directory and copy-up
// locks when it enters; the gate's mutex comes after those, before Node's
// and NodeTable's mutexes. A step holds no other engine lock.
class MergeGate {
public:
    // Runs `fn` as one step: no reader sees part of it. Returns its result.
    template <class F>
    auto write(F&& fn)
    {
        std::lock_guard lock(mutex_);
        // seq_cst: the counter is odd before any of the step's syscalls.
        seq_.fetch_add(1, std::memory_order_seq_cst);
        struct Even {
            std::atomic<uint64_t>& seq;
            ~Even() { seq.fetch_add(1, std::memory_order_release); }
        } even{seq_};
        return fn();
    }

    // Runs `fn(seq)` until one run fell wholly between two steps and returns
    // its result. `seq` names the state of the layers that run saw: a hint
    // drawn from one run (a listing) holds in another run of the same seq.
    template <class F>
    auto read(F&& fn) const
    {
        for (int attempt = 0; attempt < attempts; ++attempt) {
            uint64_t seq = seq_.load(std::memory_order_acquire);
            if (seq & 1) {
                // A step runs: wait for it on its mutex instead of spinning.
                std::lock_guard wait(mutex_);
                continue;
            }
            auto result = fn(seq);
            // The reads were syscalls: the compiler cannot move them past
            // this load, and the kernel's lookups and getdents end in read
            // barriers of their own, so no fence (which TSan cannot model)
            // is needed to order them before it.
            if (seq_.load(std::memory_order_seq_cst) == seq)
                return result;
        }
        // A long read (a big listing) that keeps losing to steps: the steps
        // wait for it instead.
        std::lock_guard lock(mutex_);
        return fn(seq_.load(std::memory_order_relaxed));
    }

private:
    static constexpr int attempts = 4;
    mutable std::mutex mutex_; // held by a step, or by a reader shutting steps out
    std::atomic<uint64_t> seq_{0};
};

} // namespace layerd::fs
