// SPDX-License-Identifier: LGPL-2.1-or-later
// Who is calling, and whether they may change a stack (DESIGN §6): uid 0,
// or a user named in allow_users, or a member of a group named in
// allow_groups. Names are resolved when the call arrives, so a user created
// after the config was read needs no reload.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace sdbus {
class Message;
}

namespace layerd::service {

struct Caller {
    uid_t uid = static_cast<uid_t>(-1);
    std::vector<gid_t> gids; // effective and supplementary
};

// The sender's credentials as the bus reports them (euid, groups). Throws
// ServiceError(PermissionDenied) when the bus cannot say who sent MESSAGE.
Caller caller_of(const sdbus::Message& message);

// True when CALLER may change a stack with these lists.
bool may_change(const Caller& caller, const std::vector<std::string>& allow_users,
                const std::vector<std::string>& allow_groups);

} // namespace layerd::service
