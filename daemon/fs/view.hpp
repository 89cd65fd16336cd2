// SPDX-License-Identifier: LGPL-2.1-or-later
#pragma once

#include "layer_set.hpp"

#include <algorithm>
#include <cstdint>
#include <memory>
#include <vector>

namespace layerd::fs {

// The immutable list of layers a mount serves: [live upper, frozen layers
// newest first…, lowers]. A swap publishes a new one; nodes made under an old
// one keep it (their open files keep reading what they opened).
struct View {
    std::vector<std::shared_ptr<Layer>> layers;
    // Bumped by a rollback: nodes of an older generation are detached from
    // the view (new lookups make new nodes; old ones can no longer change).
    uint64_t generation = 0;

    const Layer* upper() const { return layers.front()->writable ? layers.front().get() : nullptr; }
    bool is_bottom(const Layer& layer) const { return layers.back().get() == &layer; }
    size_t index_of(const Layer& layer) const
    {
        auto it = std::find_if(layers.begin(), layers.end(), [&](const auto& l) { return l.get() == &layer; });
        return static_cast<size_t>(it - layers.begin());
    }
};

} // namespace layerd::fs
