// SPDX-License-Identifier: LGPL-2.1-or-later
// Merging a deleted snapshot's layer P into its only child layer C by
// rename(2) of P's entries (DESIGN.md §2 "delete", §10 "Chained uppers lose
// data"): no data is copied and every moved object keeps its inode.
//
// The contract: for every layer stack A below P and every stack U above C,
// the overlay view of [U…, C', A…] after the merge equals the view of
// [U…, C, P, A…] before it, path by path; then P's directory is gone.
// "View" means kernel overlayfs's lookup (fs/overlayfs/namei.c), including
// absolute redirects walked component by component with the intermediate
// components' whiteouts, opaque flags and redirects applied.
//
// How C and P combine (the model the code and its comments use)
// --------------------------------------------------------------
// Any lookup that reaches P goes through C first, and C's answer for a
// directory Y of C is: its entry, plus how the kernel continues below C: not
// at all (C's dir is opaque), or with a name: Y's own name or C's redirect of
// Y (relative: a name in the parent's lower dir; absolute: a path walked from
// the lower layer's root). P answers that name with an entry q ("Y's P
// entry", which the view merges under Y when it is a directory) and, in turn,
// how the kernel continues below P: stop (q is a whiteout, a non-directory or
// an opaque dir, or the absolute walk crossed one) or a name (q's redirect
// composed onto the name C passed, or the name unchanged). What is below P
// only ever sees that final name. So C' must give Y:
//   * every visible entry of q (a name C's Y lacks) moved into Y, and
//   * Y's "composite" xattrs: opaque when P stops the lookup, otherwise the
//     redirect that yields the name P would have passed below (none when that
//     is Y's own name; relative stays relative, absolute stays absolute).
// Entries of P that no directory of C looks at (shadowed by a C whiteout, a C
// non-dir, a C opaque dir, or left behind at a directory's old name after C
// renamed it) are invisible and are thrown away with P.
//
// Per name m in a directory Y of C whose lookup reaches P's directory q
// (the rules the brief lists, as implemented; the arguments are in the .cpp):
//
//   P entry q/m | C entry Y/m                    | action
//   ------------+--------------------------------+-------------------------------
//   absent      | anything                       | nothing
//   any type    | absent                         | rename q/m to Y/m (subtree,
//               |                                | whiteout, opaque dir… as is)
//   any type    | whiteout, non-dir, opaque dir, | C wins; q/m is dropped
//               | or a dir redirected elsewhere  | (unless something else looks
//               |                                | at it: see "held" below)
//   whiteout,   | non-opaque dir looking it up   | Y/m set opaque (P stopped the
//   non-dir     |                                | lookup already), then dropped
//   dir         | non-opaque dir looking it up   | recurse, then Y/m gets the
//               |                                | composite xattrs (inherits P's
//               |                                | opaque / P's redirect), then
//               |                                | q/m dropped
//
// "Looking it up" follows C's redirect: a C dir redirected to R does not
// merge with P's same-name entry but with the P entry the kernel finds
// through R (relative: R in the parent's P dir; absolute: R walked from P's
// root, honouring P's redirects, opaque dirs and whiteouts on the way).
//
// Live safety
// -----------
// The merge is a sequence of steps; each step runs inside the caller's
// `run_step` (which takes the stack's writer lock, runs it, releases). Almost
// every step is ONE syscall after which the layers on disk form the same
// view as before (a rename of one P entry into C, a rename of an invisible P
// entry into work_fd's trash, one setxattr/removexattr on a C dir). The order
// makes that possible: a C dir's redirect is read relative to P as long as P
// is in the view, so a C dir only switches to its composite redirect once P
// holds nothing at the new name (P's "old place" whiteouts are moved or
// dropped first), and an entry moved from P into C must not start meaning
// something different there (its redirects are checked the same way).
// Where no such order exists (e.g. P swapped two directories and C changed
// both: each switch would need the other first) the rest of the merge is
// done as ONE grouped step (journaled, see below): the view is only
// guaranteed at the end of that step, so the caller's lock must cover it.
//
// Crash safety
// ------------
// Every single-syscall step leaves a correct (C, P) pair, and the algorithm
// works from whatever pair it finds, so running merge_layer again after a
// crash between any two syscalls simply finishes the merge. The grouped step
// first writes its complete plan to work_fd (write, fsync, rename), applies
// it, then removes the plan; a rerun replays a plan it finds (each operation
// is idempotent). Removing P is a rename of P's directory into the trash;
// a missing P means that happened and only the trash is left to clear.
//
// Preconditions: P and C are layer directories on one filesystem, both
// frozen (nobody else writes to them during the merge; when P's only child is
// the live upper, freeze it first), P has no other child, and work_fd is a
// directory on the same filesystem that no other merge uses at the same time.
// Running as root (trusted.* xattrs, whiteouts) unless the format is `user`.
// A mounted stack that caches lookups must drop what it cached about P and C
// after each step (entries move from P to C; C dirs change xattrs).
//
// What does change: a C dir that receives entries gets a new mtime/ctime,
// moved entries a new ctime, and a file that also had a hard link in P at a
// place nobody sees loses that link (st_nlink drops). Names, types, modes,
// owners, sizes, contents, symlink targets, xattrs and inode numbers of
// everything shown stay as they were.
//
// Cost: each pass reads every directory of C (an absolute redirect can sit
// anywhere); passes repeat only while a switch waits for another one (1.15
// passes per merge over 2,300 random kernel-made merges). Steps are one per
// entry at the boundary between C and P (moved or dropped subtrees are one
// rename each), not one per file.
#pragma once

#include "overlay_format.hpp"

#include <cstddef>
#include <functional>

namespace layerd {

// One step of a merge. Returns 0 or -errno.
using MergeStep = std::function<int()>;
// Runs one step, normally under the stack's writer lock. A runner that does
// not call the step cancels the merge (merge_layer returns -ECANCELED and the
// layers stay a correct, resumable half-merged pair).
using MergeStepRunner = std::function<void(const MergeStep& step)>;
// Called after every change merge_layer makes on disk (including changes to
// work_fd), with whether the layers on disk form the unchanged view at that
// point (false only between the syscalls of a grouped step). For progress
// reporting and for fault-injection tests.
using MergeChangeHook = std::function<void(bool view_consistent)>;

struct MergeStats {
    std::size_t steps = 0;      // steps handed to run_step
    std::size_t moved = 0;      // P entries renamed into C
    std::size_t dropped = 0;    // invisible P entries thrown away before P itself
    std::size_t switched = 0;   // C dirs given their composite opaque/redirect
    std::size_t grouped = 0;    // grouped (journaled) steps
    std::size_t replayed = 0;   // journals replayed from an interrupted run
    std::size_t passes = 0;     // scans of C
};

// Merges layer P (entry `parent_name` of directory `parent_dirfd`) into layer
// C (`child_fd`, a directory fd) as described above, then removes P's
// directory. Resumable: call it again with the same arguments after any
// interruption. Returns 0 (also when P is already gone) or -errno; on error
// the layers form the same view as before and a later call resumes.
// -EXDEV: P and C are on different filesystems, or the pair cannot be merged
// by rename alone (a directory of P is shown at two places, which kernel
// overlayfs never writes); nothing that changes the view has been done.
// -EINVAL: a redirect the kernel would refuse, or P and C are one directory.
int merge_layer(int parent_dirfd, const char* parent_name, int child_fd, int work_fd,
                const OverlayXattrs& xattrs, const MergeStepRunner& run_step,
                const MergeChangeHook& on_change = {}, MergeStats* stats = nullptr);

} // namespace layerd
