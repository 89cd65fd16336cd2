// SPDX-License-Identifier: LGPL-2.1-or-later
// Merging a layer into its only child by rename(2). The header states the
// contract, the model and the rule table; this file carries the arguments.
//
// Vocabulary used below
//   C, P, A      the child layer, the parent layer (merged away), and
//                whatever lies below P (unknown here, never touched).
//   lookup of Y  what kernel overlayfs does in P for a directory Y of C: the
//                name Y passes down (its own name or C's redirect of it), the
//                P entry found for it, and what P passes further down
//                (stop, or a possibly rewritten name). See walk_rel/walk_abs.
//   effect       a lookup has an effect when P changes anything about it: an
//                entry exists, or a whiteout/non-dir/opaque dir/redirect on
//                the way rewrote the name or stopped the lookup. A C dir whose
//                lookup has no effect is DONE: nothing of P is in its view,
//                and removing things from P can never give it an effect
//                (walks only end earlier, at a missing component).
//   pending      a C dir whose lookup has an effect.
//   held         every P path a pending lookup looks at (its entry and, for
//                absolute walks, each component on the way). A held path is
//                neither moved nor dropped: that would change the lookup.
//   natural      an entry q/m of the P dir q that a C dir Y merges with,
//                where Y has no entry m: the view shows q/m at Y/m.
//   junk         an entry q/m where Y has an entry m (C wins; whatever C's
//                entry is, the kernel never reaches q/m through Y/m unless
//                Y/m's own lookup names it, and then it is held).
//
// The algorithm, repeated until done: scan all of C (every directory: an
// absolute redirect can sit anywhere, even below an opaque dir) computing
// each directory's lookup; then, deepest pending dirs first,
//   1. move natural entries into C and drop unheld junk (one rename each);
//   2. finalize pending dirs: switch the C dir to its composite xattrs (one
//      setxattr/removexattr) or, when those equal its current ones, drop P's
//      entry; then drop the entry it no longer looks at.
// When nothing pending is left and P's root holds no natural entry, P is
// renamed into the trash: it only holds junk. When a pass can do nothing
// (a cycle, see finish_group) the rest is one grouped, journaled step.
#include "layer_merge.hpp"

#include "remove_tree.hpp"
#include "resolve.hpp"
#include "unique_fd.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <numeric>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace layerd {

namespace {

constexpr char journal_name[] = "layer-merge.journal";
constexpr char journal_tmp_name[] = "layer-merge.journal.tmp";
constexpr char trash_name[] = "layer-merge.trash";
constexpr std::string_view journal_magic = "layerd-merge-journal 1\n";
constexpr std::size_t journal_max = std::size_t(256) << 20;

enum class Kind : unsigned char { none, dir, whiteout, other };

// One entry of a layer as the overlay reads it.
struct Obj {
    Kind kind = Kind::none;
    bool opaque = false;                 // dirs only: overlay.opaque = "y"
    std::optional<std::string> redirect; // non-opaque dirs only (the kernel ignores it on opaque ones)
};

// The kernel's lookup of one C directory in P (see the vocabulary above).
struct Lookup {
    Kind kind = Kind::none; // P's entry for the directory (none: nothing there)
    std::string ppath;      // its path in P (kind != none)
    bool stop = false;      // nothing below P is looked at
    bool effect = false;
    std::string dname;                // the name passed below P
    std::vector<std::string> touched; // P paths looked at
};

// The xattrs a C dir needs once P is gone.
struct Final {
    bool opaque = false;
    std::optional<std::string> redirect; // nullopt: none (its own name)
};

struct Pending {
    std::string cpath; // path of the C dir in C
    std::string name;  // its last component
    std::size_t depth = 0;
    bool absolute = false;               // looked up by an absolute walk from P's root
    std::string parent_q;                // else: the P dir its name is looked up in
    std::optional<std::string> c_redirect; // its redirect now
    Lookup look;
    Final final;
    bool same = false; // final == what it has now: only P's entry must go
    std::size_t natural_left = 0;
    bool in_natural = false; // its P entry is also shown at its own place (never kernel-made)
    bool done = false;
};

struct Scan {
    std::vector<Pending> pending;
    std::map<std::string, int> held;
    std::map<std::string, int> consumers; // P dir -> pending relative lookups in it
};

struct JournalOp {
    char type = 0;             // 'S' set xattrs of a C dir, 'M' move P entry, 'D' detach P
    bool opaque = false;       // S
    bool has_redirect = false; // S
    std::string a, b;          // S: cpath, redirect; M: ppath, cpath
};

std::string join(std::string_view dir, std::string_view name)
{
    std::string p;
    p.reserve(dir.size() + 1 + name.size());
    p.append(dir);
    if (!dir.empty())
        p += '/';
    p.append(name);
    return p;
}

// Opens the directory at `path` (relative, "" = the layer itself) beneath
// a layer's fd. Paths may be longer than PATH_MAX (trees made with *at()
// calls can be deeper): those are resolved a few hundred components at a
// time, each piece beneath the directory the previous one opened.
int open_dir_at(int layer_fd, const std::string& path)
{
    constexpr std::size_t piece = 2048;
    if (path.size() < piece)
        return open_beneath(layer_fd, path.empty() ? "." : path.c_str(), O_PATH | O_DIRECTORY);
    UniqueFd dir;
    std::size_t pos = 0;
    while (pos < path.size()) {
        std::size_t end = path.size();
        if (end - pos >= piece) {
            end = path.rfind('/', pos + piece);
            if (end == std::string::npos || end <= pos)
                return -ENAMETOOLONG; // one component longer than a piece: not a valid name
        }
        std::string part = path.substr(pos, end - pos);
        int fd = open_beneath(dir ? dir.get() : layer_fd, part.c_str(), O_PATH | O_DIRECTORY);
        if (fd < 0)
            return fd;
        dir = UniqueFd(fd);
        pos = end + 1;
    }
    return dir.release();
}

// True when `path` is `top` or lies below it.
bool at_or_below(const std::string& path, const std::string& top)
{
    if (top.empty())
        return true;
    return path.size() >= top.size() && path.compare(0, top.size(), top) == 0 &&
           (path.size() == top.size() || path[top.size()] == '/');
}

// The kernel refuses (EINVAL) an empty redirect, a relative one with a '/',
// and an absolute one with an empty component; "." and ".." cannot be looked
// up either. A merge never guesses around a redirect it does not understand.
bool valid_redirect(const std::string& r)
{
    if (r.empty())
        return false;
    if (r[0] != '/')
        return is_valid_name(r);
    std::size_t i = 1;
    if (r.size() == 1)
        return false;
    while (i <= r.size()) {
        std::size_t j = r.find('/', i);
        if (j == std::string::npos)
            j = r.size();
        if (!is_valid_name(std::string_view(r).substr(i, j - i)))
            return false;
        i = j + 1;
    }
    return true;
}

std::vector<std::string> split_absolute(const std::string& r)
{
    std::vector<std::string> comps;
    std::size_t i = 1;
    while (i <= r.size()) {
        std::size_t j = r.find('/', i);
        if (j == std::string::npos)
            j = r.size();
        comps.emplace_back(r, i, j - i);
        i = j + 1;
    }
    return comps;
}

int get_xattr(int fd, const std::string& name, std::optional<std::string>* out)
{
    int err = 0;
    *out = read_xattr(fd, name, &err);
    return err;
}

int remove_xattr(int fd, const std::string& name)
{
    if (::removexattr(ProcFdPath(fd).c_str(), name.c_str()) == 0 || errno == ENODATA)
        return 0;
    return -errno;
}

// Names in a directory (any fd on it, O_PATH included), with d_type.
int list_dir(int dirfd, std::vector<std::pair<std::string, unsigned char>>* out)
{
    out->clear();
    int fd = open_beneath(dirfd, ".", O_RDONLY | O_DIRECTORY);
    if (fd < 0)
        return fd;
    DIR* dir = ::fdopendir(fd);
    if (!dir) {
        int r = -errno;
        ::close(fd);
        return r;
    }
    errno = 0;
    while (struct dirent* de = ::readdir(dir)) {
        std::string_view n(de->d_name);
        if (n != "." && n != "..")
            out->emplace_back(std::string(n), de->d_type);
        errno = 0;
    }
    int r = errno ? -errno : 0;
    ::closedir(dir);
    return r;
}

// Why each rule keeps the view. Everything the layers below P ever see comes
// from the name (or stop) P passes them for a directory; everything C' must
// show itself is what C and P showed together. Per name m of a C dir Y whose
// lookup reaches P's dir q:
//  * q/m absent: P adds nothing at m; nothing to do.
//  * Y/m absent: the view shows q/m itself at Y/m (P is the top there); the
//    rename moves that very object, xattrs included, so its own redirect or
//    opaque flag keeps telling the layers below what it told them before
//    (see move_is_neutral for the one catch: P must not answer it).
//  * Y/m a whiteout or non-dir: lookup ends at C (the kernel never looks
//    below a non-dir), q/m is unreachable: dropped.
//  * Y/m an opaque dir: the lookup ends at C: q/m unreachable: dropped.
//  * Y/m a dir with a redirect naming something else: the kernel looks up
//    the redirect, not m; q/m is unreachable through Y/m: dropped. This is
//    the old place of a dir C renamed; C itself left a whiteout or opaque dir
//    there, so P's old-place dir is only ever seen through the redirect.
//  * Y/m a non-opaque dir looking up q/m (plain, or redirected to it):
//    - q/m a whiteout or non-dir: the kernel stopped there; C's dir was
//      already all the view had, and once P is gone it must stop the lookup
//      itself: opaque. Then q/m is unreachable: dropped.
//    - q/m a dir: its entries shown under Y/m are the names Y/m lacks: the
//      same rules one level down. What P passed below (its opaque flag: stop;
//      its redirect: a new name) must then be passed by C's dir: composite().
//      Then q/m is unreachable: dropped.
//  * C dir with a redirect R: "the P entry it looks up" is the one R finds
//    (relative: R in the parent's P dir; absolute: R walked from P's root,
//    P's own redirects, opaque dirs and whiteouts applying on the way), and
//    its entries are merged into the redirected dir exactly as above.
// Composite xattrs from P's lookup (header: "How C and P combine").
Final composite(const Lookup& l, const std::string& name)
{
    Final f;
    if (l.stop) {
        // P ended the lookup (whiteout, non-dir below a dir, opaque dir, or an
        // opaque dir on an absolute walk): with P gone C itself must end it.
        f.opaque = true;
        return f;
    }
    // The kernel carries l.dname below P. An absolute name stays absolute
    // (C' is then looked up from the lower roots exactly like P was); a
    // relative one stays relative: it is looked up in the parent's lower
    // dirs, and the parent's lower dirs are the same after the merge because
    // the parent gets its own composite. Y's own name needs no redirect.
    if (l.dname[0] == '/' || l.dname != name)
        f.redirect = l.dname;
    return f;
}

bool same_final(const Final& f, const std::optional<std::string>& current, const std::string& name)
{
    if (f.opaque)
        return false; // pending dirs are never opaque
    std::optional<std::string> cur = current;
    if (cur && *cur == name)
        cur.reset(); // a redirect to its own name is no redirect
    return f.redirect == cur;
}

class Merger {
public:
    Merger(int parent_dirfd, const char* parent_name, int child_fd, int work_fd, const OverlayXattrs& xattrs,
           const MergeStepRunner& run_step, const MergeChangeHook& on_change, MergeStats* stats)
        : pdirfd_(parent_dirfd), pname_(parent_name), c_(child_fd), work_(work_fd), x_(xattrs), run_(run_step),
          hook_(on_change), stats_(stats ? stats : &own_stats_),
          trash_seq_(static_cast<unsigned long long>(
              std::chrono::steady_clock::now().time_since_epoch().count()))
    {
    }

    int run();

private:
    // --- steps and changes
    int step(const std::function<int()>& fn);
    // Between the syscalls of a grouped step the view is only right again
    // at its end, whatever a single change would otherwise leave.
    void changed(bool consistent) const
    {
        if (hook_)
            hook_(consistent && !in_group_);
    }

    // --- reading layers
    int inspect(int dirfd, const char* name, Obj* out) const;
    int walk_rel(int qfd, const std::string& q, const std::string& name, const std::string* hidden,
                 Lookup* out) const;
    int walk_abs(const std::string& path, const std::string* hidden, Lookup* out) const;
    int lookup_again(const Pending& y, const std::string& name, const std::string* hidden, Lookup* out) const;
    int scan_dir(const std::string& cpath, const std::optional<std::string>& q, std::size_t depth, Scan* s);
    int check_references(Scan* s) const;
    int move_is_neutral(int qfd, const std::string& q, const std::string& name, bool* ok) const;
    int nested_redirects_neutral(const std::string& dir, const std::string& hidden, bool* ok) const;

    // --- acting
    int handle_children(const std::string& cpath, const std::string& q, Scan& s, bool drop_junk,
                        std::size_t* natural_left, bool* progress);
    int try_finalize(Pending& y, Scan& s, bool* progress);
    int action_pass(Scan& s, bool* progress, bool* finished);
    int finish_group(const Scan& s);
    int apply_final(const std::string& cpath, const Final& f, bool consistent);
    int trash_fd();
    int to_trash(int dirfd, const char* name);
    int drop_path(const std::string& ppath);
    int detach_now();
    int detach();

    // --- journal
    int write_journal(const std::vector<JournalOp>& ops);
    int read_journal(std::vector<JournalOp>* ops, bool* present) const;
    int apply_journal(const std::vector<JournalOp>& ops);
    int apply_journal_ops(const std::vector<JournalOp>& ops);
    int replay_journal();
    int clear_work();

    static bool held_at_or_below(const Scan& s, const std::string& path);
    static void release(Pending& y, Scan& s);
    static void hold(Pending& y, Scan& s);

    int pdirfd_;
    const char* pname_;
    UniqueFd p_; // P's root (O_PATH); empty once P is gone
    int c_;
    int work_;
    const OverlayXattrs& x_;
    const MergeStepRunner& run_;
    const MergeChangeHook& hook_;
    MergeStats own_stats_;
    MergeStats* stats_;
    UniqueFd trash_;
    unsigned long long trash_seq_;
    bool in_group_ = false;
};

int Merger::step(const std::function<int()>& fn)
{
    int result = -ECANCELED;
    ++stats_->steps;
    run_([&]() -> int {
        result = fn();
        return result;
    });
    return result;
}

int Merger::inspect(int dirfd, const char* name, Obj* out) const
{
    *out = Obj{};
    struct stat st;
    int r = stat_at(dirfd, name, &st);
    if (r == -ENOENT)
        return 0;
    if (r < 0)
        return r;
    if (is_whiteout(st)) {
        out->kind = Kind::whiteout;
        return 0;
    }
    if (!S_ISDIR(st.st_mode)) {
        out->kind = Kind::other;
        return 0;
    }
    out->kind = Kind::dir;
    int fd = open_beneath(dirfd, name, O_PATH | O_DIRECTORY);
    if (fd < 0)
        return fd;
    UniqueFd dfd(fd);
    std::optional<std::string> v;
    if ((r = get_xattr(fd, x_.opaque, &v)) < 0)
        return r;
    if (v && *v == "y") { // exactly "y", as the kernel reads it
        out->opaque = true;
        return 0;
    }
    if ((r = get_xattr(fd, x_.redirect, &v)) < 0)
        return r;
    if (v) {
        if (!valid_redirect(*v))
            return -EINVAL;
        out->redirect = std::move(v);
    }
    return 0;
}

// The kernel's ovl_lookup_single() for a relative name in P's dir q (the
// parent's P entry): the C dir passes `name` (its own or its relative
// redirect). `hidden`: pretend this P path and everything below it is gone.
int Merger::walk_rel(int qfd, const std::string& q, const std::string& name, const std::string* hidden,
                     Lookup* out) const
{
    *out = Lookup{};
    out->dname = name;
    std::string path = join(q, name);
    out->touched.push_back(path);
    if (hidden && at_or_below(path, *hidden))
        return 0;
    Obj o;
    if (int r = inspect(qfd, name.c_str(), &o); r < 0)
        return r;
    if (o.kind == Kind::none)
        return 0;
    out->effect = true;
    out->kind = o.kind;
    out->ppath = std::move(path);
    if (o.kind != Kind::dir) {
        out->stop = true; // a whiteout, or a non-dir below a dir: hidden, lookup ends
        return 0;
    }
    if (o.opaque)
        out->stop = true;
    else if (o.redirect)
        out->dname = *o.redirect; // relative or absolute, it replaces the whole name
    return 0;
}

// The kernel's ovl_lookup_layer() for an absolute name: the components of
// `path` are looked up one by one from P's root. On the way a whiteout or a
// non-dir ends everything; an opaque dir sets stop but the walk goes on; a
// redirect rewrites the name passed below (absolute: replaces the prefix and
// clears stop; relative: replaces this component) while the walk itself
// continues with the original remaining components.
int Merger::walk_abs(const std::string& path, const std::string* hidden, Lookup* out) const
{
    *out = Lookup{};
    out->dname = path;
    std::vector<std::string> comps = split_absolute(path);
    std::vector<std::size_t> post_len(comps.size() + 1, 0); // length of "/c(i+1)/…/c(n-1)"
    for (std::size_t i = comps.size(); i-- > 0;)
        post_len[i] = (i + 1 < comps.size() ? post_len[i + 1] + 1 + comps[i + 1].size() : 0);
    int fd = open_beneath(p_.get(), ".", O_PATH | O_DIRECTORY);
    if (fd < 0)
        return fd;
    UniqueFd base(fd);
    std::string ppath;
    for (std::size_t i = 0; i < comps.size(); ++i) {
        const std::string& c = comps[i];
        const bool last = i + 1 == comps.size();
        ppath = join(ppath, c);
        out->touched.push_back(ppath);
        if (hidden && at_or_below(ppath, *hidden))
            return 0;
        Obj o;
        if (int r = inspect(base.get(), c.c_str(), &o); r < 0)
            return r;
        if (o.kind == Kind::none)
            return 0; // nothing here: the walk ends, name and stop as they are
        if (o.kind != Kind::dir) {
            out->stop = out->effect = true;
            if (last) {
                out->kind = o.kind;
                out->ppath = ppath;
            }
            return 0;
        }
        if (o.opaque) {
            out->stop = out->effect = true;
        } else if (o.redirect) {
            std::string post = out->dname.substr(out->dname.size() - post_len[i]);
            std::string nd;
            if ((*o.redirect)[0] == '/') {
                nd = *o.redirect + post;
                out->stop = false;
            } else {
                nd = out->dname.substr(0, out->dname.size() - post_len[i] - c.size()) + *o.redirect + post;
            }
            if (nd != out->dname)
                out->effect = true;
            out->dname = std::move(nd);
        }
        if (last) {
            out->kind = Kind::dir;
            out->ppath = ppath;
            out->effect = true;
            return 0;
        }
        fd = open_beneath(base.get(), c.c_str(), O_PATH | O_DIRECTORY);
        if (fd < 0)
            return fd;
        base = UniqueFd(fd);
    }
    return 0;
}

// The lookup pending dir `y` would do if it passed `name` instead.
int Merger::lookup_again(const Pending& y, const std::string& name, const std::string* hidden, Lookup* out) const
{
    if (name[0] == '/')
        return walk_abs(name, hidden, out);
    if (y.absolute) {
        // Only an absolute redirect made P look at y; dropping it leaves y
        // with a relative name under a parent whose lookup never reached P.
        *out = Lookup{};
        out->dname = name;
        return 0;
    }
    int fd = open_dir_at(p_.get(), y.parent_q);
    if (fd < 0)
        return fd;
    UniqueFd qfd(fd);
    return walk_rel(qfd.get(), y.parent_q, name, hidden, out);
}

// Walks every directory of C. `q`: the P dir the children's relative names
// are looked up in (the kernel merges it into cpath's view), if any.
int Merger::scan_dir(const std::string& cpath, const std::optional<std::string>& q, std::size_t depth, Scan* s)
{
    std::vector<std::pair<std::string, std::optional<std::string>>> subdirs;
    {
        int fd = open_dir_at(c_, cpath);
        if (fd < 0)
            return fd;
        UniqueFd cfd(fd);
        std::vector<std::pair<std::string, unsigned char>> names;
        if (int r = list_dir(cfd.get(), &names); r < 0)
            return r;
        UniqueFd qfd;
        if (q) {
            if ((fd = open_dir_at(p_.get(), *q)) < 0)
                return fd;
            qfd = UniqueFd(fd);
        }
        for (const auto& [name, type] : names) {
            if (type != DT_DIR && type != DT_UNKNOWN)
                continue;
            Obj o;
            if (int r = inspect(cfd.get(), name.c_str(), &o); r < 0)
                return r;
            if (o.kind != Kind::dir)
                continue;
            std::string child = join(cpath, name);
            std::optional<std::string> child_q;
            if (!o.opaque) {
                // An opaque C dir ends the lookup in C: nothing of P is in
                // its view and its redirect is ignored. Its subdirs are still
                // scanned: an absolute redirect below reaches P anyway.
                const std::string nm = o.redirect.value_or(name);
                const bool absolute = nm[0] == '/';
                if (absolute || q) {
                    Lookup l;
                    int r = absolute ? walk_abs(nm, nullptr, &l) : walk_rel(qfd.get(), *q, nm, nullptr, &l);
                    if (r < 0)
                        return r;
                    if (l.kind == Kind::dir)
                        child_q = l.ppath; // merged into the view even when l.stop
                    if (l.effect) {
                        Pending p;
                        p.cpath = child;
                        p.name = name;
                        p.depth = depth + 1;
                        p.absolute = absolute;
                        if (!absolute)
                            p.parent_q = *q;
                        p.c_redirect = o.redirect;
                        p.look = std::move(l);
                        p.final = composite(p.look, name);
                        p.same = same_final(p.final, p.c_redirect, name);
                        hold(p, *s);
                        p.done = false;
                        s->pending.push_back(std::move(p));
                    }
                }
            }
            subdirs.emplace_back(std::move(child), std::move(child_q));
        }
    }
    for (const auto& [child, child_q] : subdirs)
        if (int r = scan_dir(child, child_q, depth + 1, s); r < 0)
            return r;
    return 0;
}

// Kernel overlayfs gives each P entry at most one place in the view: a
// renamed dir leaves a whiteout (or an opaque dir) at its old place. Layers
// made otherwise can show one P entry twice: through a C dir's lookup and at
// its own place (its C-side ancestor is absent, so the view shows P's). Such
// an entry must never be dropped or emptied (its own place would change); it
// moves into C with its visible ancestor instead. If the C dir's lookup also
// shows children of it, they would have to be in two places: -EXDEV.
int Merger::check_references(Scan* s) const
{
    std::map<std::string, std::string> merged; // P dir -> the C dir that merges it
    merged.emplace(std::string(), std::string());
    for (const Pending& y : s->pending)
        if (y.look.kind == Kind::dir && !merged.emplace(y.look.ppath, y.cpath).second)
            return -EXDEV; // two C dirs merge one P dir
    for (Pending& y : s->pending) {
        if (y.look.kind == Kind::none)
            continue;
        const std::string& p = y.look.ppath;
        std::size_t pos = 0;
        std::string parent;
        for (;;) {
            std::size_t slash = p.find('/', pos);
            std::string here = p.substr(0, slash == std::string::npos ? p.size() : slash);
            std::string name = here.substr(pos);
            if (auto it = merged.find(parent); it != merged.end()) {
                int fd = open_dir_at(c_, it->second);
                if (fd < 0)
                    return fd;
                UniqueFd cfd(fd);
                struct stat st;
                int r = stat_at(cfd.get(), name.c_str(), &st);
                if (r == -ENOENT) {
                    y.in_natural = true;
                    break;
                }
                if (r < 0)
                    return r;
            }
            if (slash == std::string::npos)
                break;
            parent = std::move(here);
            pos = slash + 1;
        }
        if (!y.in_natural || y.look.kind != Kind::dir)
            continue;
        int fd = open_dir_at(p_.get(), p);
        if (fd < 0)
            return fd;
        UniqueFd qfd(fd);
        if ((fd = open_dir_at(c_, y.cpath)) < 0)
            return fd;
        UniqueFd cfd(fd);
        std::vector<std::pair<std::string, unsigned char>> names;
        if (int r = list_dir(qfd.get(), &names); r < 0)
            return r;
        for (const auto& entry : names) {
            struct stat st;
            int r = stat_at(cfd.get(), entry.first.c_str(), &st);
            if (r == -ENOENT)
                return -EXDEV;
            if (r < 0)
                return r;
        }
    }
    return 0;
}

bool Merger::held_at_or_below(const Scan& s, const std::string& path)
{
    if (path.empty())
        return !s.held.empty();
    if (s.held.count(path))
        return true;
    std::string pre = path + '/';
    auto it = s.held.lower_bound(pre);
    return it != s.held.end() && it->first.compare(0, pre.size(), pre) == 0;
}

void Merger::hold(Pending& y, Scan& s)
{
    for (const auto& t : y.look.touched)
        ++s.held[t];
    if (!y.absolute)
        ++s.consumers[y.parent_q];
    y.done = false;
}

void Merger::release(Pending& y, Scan& s)
{
    for (const auto& t : y.look.touched)
        if (auto it = s.held.find(t); it != s.held.end() && --it->second <= 0)
            s.held.erase(it);
    if (!y.absolute)
        if (auto it = s.consumers.find(y.parent_q); it != s.consumers.end() && --it->second <= 0)
            s.consumers.erase(it);
    y.done = true;
}

// Rule "C-entry absent -> rename P's entry into C". Before the rename the
// view shows q/m at Y/m and passes q/m's own redirect (or m) below P; after
// it, the same object (same inode, same xattrs) sits at Y/m, so its
// attributes, content and children are what they were. What can differ is
// how P answers for it, since everything in C is looked up in P first while
// P is in the view: a redirect on the moved dir (or on a dir inside it with
// an absolute redirect) was meant for the layers below P, and P may hold
// something at that name (typically the whiteout P left at the old place
// when it renamed that dir). So the move is only made once P has nothing
// there at all, i.e. each such lookup has no effect with q/m gone; the old
// place is moved or dropped first. Dirs inside with relative redirects (or
// none) are looked up in their parent's P dir, which is none once the moved
// dir's own lookup finds nothing in P. Non-dirs never look below themselves.
int Merger::move_is_neutral(int qfd, const std::string& q, const std::string& name, bool* ok) const
{
    *ok = false;
    Obj o;
    if (int r = inspect(qfd, name.c_str(), &o); r < 0)
        return r;
    if (o.kind == Kind::none)
        return 0;
    if (o.kind != Kind::dir) {
        *ok = true;
        return 0;
    }
    const std::string hidden = join(q, name);
    if (!o.opaque) {
        const std::string nm = o.redirect.value_or(name);
        Lookup l;
        int r = nm[0] == '/' ? walk_abs(nm, &hidden, &l) : walk_rel(qfd, q, nm, &hidden, &l);
        if (r < 0)
            return r;
        if (l.effect)
            return 0;
    }
    *ok = true;
    return nested_redirects_neutral(hidden, hidden, ok);
}

int Merger::nested_redirects_neutral(const std::string& dir, const std::string& hidden, bool* ok) const
{
    std::vector<std::string> subdirs;
    {
        int fd = open_dir_at(p_.get(), dir);
        if (fd < 0)
            return fd;
        UniqueFd dfd(fd);
        std::vector<std::pair<std::string, unsigned char>> names;
        if (int r = list_dir(dfd.get(), &names); r < 0)
            return r;
        for (const auto& [name, type] : names) {
            if (type != DT_DIR && type != DT_UNKNOWN)
                continue;
            Obj o;
            if (int r = inspect(dfd.get(), name.c_str(), &o); r < 0)
                return r;
            if (o.kind != Kind::dir)
                continue;
            if (!o.opaque && o.redirect && (*o.redirect)[0] == '/') {
                Lookup l;
                if (int r = walk_abs(*o.redirect, &hidden, &l); r < 0)
                    return r;
                if (l.effect) {
                    *ok = false;
                    return 0;
                }
            }
            subdirs.push_back(join(dir, name));
        }
    }
    for (const auto& d : subdirs) {
        if (int r = nested_redirects_neutral(d, hidden, ok); r < 0 || !*ok)
            return r;
    }
    return 0;
}

int Merger::trash_fd()
{
    if (trash_)
        return trash_.get();
    if (::mkdirat(work_, trash_name, 0700) == 0)
        changed(true); // work_fd is in no view
    else if (errno != EEXIST)
        return -errno;
    int fd = open_beneath(work_, trash_name, O_PATH | O_DIRECTORY);
    if (fd < 0)
        return fd;
    trash_ = UniqueFd(fd);
    return fd;
}

// One rename out of the layers (an O(1) "delete" of a whole subtree). Falls
// back to removing in place when work_fd is on another filesystem.
int Merger::to_trash(int dirfd, const char* name)
{
    int t = trash_fd();
    if (t < 0)
        return t;
    for (;;) {
        std::string n = std::to_string(trash_seq_++);
        if (::renameat2(dirfd, name, t, n.c_str(), RENAME_NOREPLACE) == 0) {
            changed(true);
            return 0;
        }
        if (errno == EEXIST)
            continue;
        if (errno != EXDEV)
            return -errno;
        int r = remove_tree_at(dirfd, name);
        changed(true);
        return r;
    }
}

// Drops an entry of P nobody looks at (callers check it is not held).
// Invisible before, invisible after: nothing a lookup reaches changes.
int Merger::drop_path(const std::string& ppath)
{
    auto slash = ppath.rfind('/');
    std::string dir = slash == std::string::npos ? std::string() : ppath.substr(0, slash);
    std::string name = slash == std::string::npos ? ppath : ppath.substr(slash + 1);
    int r = step([&]() -> int {
        int fd = open_dir_at(p_.get(), dir);
        if (fd < 0)
            return fd == -ENOENT ? 0 : fd;
        UniqueFd dfd(fd);
        struct stat st;
        if (int e = stat_at(dfd.get(), name.c_str(), &st); e < 0)
            return e == -ENOENT ? 0 : e;
        return to_trash(dfd.get(), name.c_str());
    });
    if (r == 0)
        ++stats_->dropped;
    return r;
}

int Merger::handle_children(const std::string& cpath, const std::string& q, Scan& s, bool drop_junk,
                            std::size_t* natural_left, bool* progress)
{
    *natural_left = 0;
    int fd = open_dir_at(p_.get(), q);
    if (fd < 0)
        return fd;
    UniqueFd qfd(fd);
    std::vector<std::pair<std::string, unsigned char>> names;
    if (int r = list_dir(qfd.get(), &names); r < 0)
        return r;
    if ((fd = open_dir_at(c_, cpath)) < 0)
        return fd;
    UniqueFd cfd(fd);
    for (const auto& entry : names) {
        const std::string& name = entry.first;
        const std::string path = join(q, name);
        struct stat st;
        int r = stat_at(cfd.get(), name.c_str(), &st);
        if (r == -ENOENT) {
            // Natural: the view shows q/m at Y/m. See move_is_neutral.
            bool ok = false;
            if (!held_at_or_below(s, path) && (r = move_is_neutral(qfd.get(), q, name, &ok)) < 0)
                return r;
            if (!ok) {
                ++*natural_left;
                continue;
            }
            r = step([&]() -> int {
                if (::renameat2(qfd.get(), name.c_str(), cfd.get(), name.c_str(), RENAME_NOREPLACE) < 0)
                    return -errno;
                changed(true);
                return 0;
            });
            if (r < 0)
                return r;
            ++stats_->moved;
            *progress = true;
        } else if (r < 0) {
            return r;
        } else if (drop_junk && !held_at_or_below(s, path)) {
            // Junk: C has an entry m, so the kernel stops at C's entry (a
            // whiteout, a non-dir), or C's dir is opaque, or it passes a
            // name other than m (its redirect), or it does pass m and then
            // q/m is held. Nobody looks at q/m: drop it.
            if ((r = drop_path(path)) < 0)
                return r;
            *progress = true;
        }
    }
    return 0;
}

int Merger::apply_final(const std::string& cpath, const Final& f, bool consistent)
{
    int fd = open_dir_at(c_, cpath);
    if (fd < 0)
        return fd;
    UniqueFd dfd(fd);
    if (f.opaque) {
        if (int r = write_xattr(fd, x_.opaque, "y"); r < 0)
            return r;
        changed(consistent);
        // An opaque dir's redirect is never read (the kernel checks opaque
        // first), so removing it is cosmetic and may be lost to a crash.
        std::optional<std::string> v;
        if (int r = get_xattr(fd, x_.redirect, &v); r < 0)
            return r;
        if (v) {
            if (int r = remove_xattr(fd, x_.redirect); r < 0)
                return r;
            changed(consistent);
        }
        return 0;
    }
    int r = f.redirect ? write_xattr(fd, x_.redirect, *f.redirect) : remove_xattr(fd, x_.redirect);
    if (r < 0)
        return r;
    changed(consistent);
    return 0;
}

// Rule "both are dirs -> recurse, then C's dir inherits P's opaque flag and
// redirect", and rule "C's dir over P's whiteout/non-dir -> opaque", and the
// redirect rules, are all this one switch of a pending dir Y from "look in
// P" to "look below P". Preconditions, each an argument:
//  * P's entry q has no natural entries left (they are in C now) and no C
//    child of Y still looks up its name in q: once Y stops passing a name
//    that reaches q, q's children drop out of Y's view.
//  * After the switch Y passes its composite name; P is still in the view,
//    so that name must find nothing in P and change nothing on the way (no
//    effect); then the layers below get exactly the name (or the stop) P
//    used to pass them. An opaque composite ends the lookup in C and needs
//    nothing from P.
// The switch is one setxattr/removexattr. When the composite already is
// what Y has (P's q is a plain dir with nothing left visible), Y is made
// done by dropping q instead, if nothing else looks at q and Y's lookup then
// has no effect. Afterwards the entry Y looked at is junk; it is dropped now
// when nothing else looks at it.
int Merger::try_finalize(Pending& y, Scan& s, bool* progress)
{
    if (y.done)
        return 0;
    if (y.look.kind == Kind::dir) {
        if (y.natural_left > 0)
            return 0;
        if (auto it = s.consumers.find(y.look.ppath); it != s.consumers.end() && it->second > 0)
            return 0;
    }
    if (!y.same) {
        if (!y.final.opaque) {
            Lookup l;
            if (int r = lookup_again(y, y.final.redirect.value_or(y.name), nullptr, &l); r < 0)
                return r;
            if (l.effect)
                return 0;
        }
        int r = step([&]() -> int { return apply_final(y.cpath, y.final, true); });
        if (r < 0)
            return r;
        ++stats_->switched;
        *progress = true;
        release(y, s);
        if (y.look.kind != Kind::none && !y.in_natural && !held_at_or_below(s, y.look.ppath))
            return drop_path(y.look.ppath);
        return 0;
    }
    if (y.look.kind != Kind::dir || y.in_natural)
        return 0; // a rewrite that cancels out on the way, or shown twice: left to the group
    release(y, s);
    bool blocked = held_at_or_below(s, y.look.ppath);
    if (!blocked) {
        Lookup l;
        if (int r = lookup_again(y, y.c_redirect.value_or(y.name), &y.look.ppath, &l); r < 0)
            return r;
        blocked = l.effect;
    }
    if (blocked) {
        hold(y, s);
        return 0;
    }
    if (int r = drop_path(y.look.ppath); r < 0)
        return r;
    *progress = true;
    return 0;
}

int Merger::action_pass(Scan& s, bool* progress, bool* finished)
{
    std::vector<std::size_t> order(s.pending.size());
    std::iota(order.begin(), order.end(), std::size_t(0));
    // Deepest first: a dir's children finish before it (their lookups run in
    // its P entry).
    std::stable_sort(order.begin(), order.end(),
                     [&](std::size_t a, std::size_t b) { return s.pending[a].depth > s.pending[b].depth; });
    for (std::size_t i : order) {
        Pending& y = s.pending[i];
        if (y.look.kind == Kind::dir && !y.in_natural)
            if (int r = handle_children(y.cpath, y.look.ppath, s, true, &y.natural_left, progress); r < 0)
                return r;
    }
    // P's root is merged into C's root. Junk there only matters while
    // something is pending (it may sit where a switch wants to look);
    // otherwise it leaves with P.
    std::size_t root_natural = 0;
    if (int r = handle_children("", "", s, !s.pending.empty(), &root_natural, progress); r < 0)
        return r;
    for (std::size_t i : order)
        if (int r = try_finalize(s.pending[i], s, progress); r < 0)
            return r;
    bool all_done = std::all_of(s.pending.begin(), s.pending.end(), [](const Pending& p) { return p.done; });
    if (all_done && root_natural == 0 && s.held.empty()) {
        // Every C dir is done and P's root shows nothing: P only holds junk.
        if (int r = detach(); r < 0)
            return r;
        *finished = true;
    }
    return 0;
}

int Merger::detach_now()
{
    int t = trash_fd();
    if (t < 0)
        return t;
    for (;;) {
        std::string n = std::to_string(trash_seq_++);
        if (::renameat2(pdirfd_, pname_, t, n.c_str(), RENAME_NOREPLACE) == 0)
            break;
        if (errno == EEXIST)
            continue;
        if (errno == ENOENT)
            break;
        if (errno != EXDEV)
            return -errno;
        if (int r = remove_tree_at(pdirfd_, pname_); r < 0)
            return r;
        break;
    }
    p_.reset();
    in_group_ = false; // P is gone: whatever a group did is complete now
    changed(true);
    return 0;
}

int Merger::detach()
{
    // Durability barrier: every move into C is on disk before P goes.
    if (::syncfs(c_) < 0)
        return -errno;
    return step([&]() -> int { return detach_now(); });
}

// The cycle case. Example: P swapped directories m and w of A (P/m has
// redirect "w", P/w has "m") and C changed both (plain dirs C/m, C/w). C/m
// must end with redirect "w" and C/w with "m", but while P is in the view
// C/m's "w" would be read in P and land on P/w (whose redirect is "m"), and
// the other way round: no order of single switches keeps the view. More
// generally this runs when a pass can make no progress. It finishes the
// whole merge at once: every pending dir gets its composite xattrs, every
// natural entry is moved, P is renamed into the trash. Correct because
// that is exactly the final state the rules define (composites make the
// layers below see what P passed them; natural entries are all P showed;
// everything else in P was invisible). The plan is journaled first, so a
// crash anywhere inside is finished by a replay. The view is only right
// again at the end of the step: the caller's lock covers the whole step.
int Merger::finish_group(const Scan& s)
{
    std::vector<JournalOp> ops;
    struct Move {
        std::string ppath, cpath;
    };
    std::vector<Move> moves;
    std::vector<std::pair<std::string, std::size_t>> consumed; // P dirs with their own natural entries
    auto collect = [&](const std::string& cpath, const std::string& q, std::size_t* count) -> int {
        *count = 0;
        int fd = open_dir_at(p_.get(), q);
        if (fd < 0)
            return fd;
        UniqueFd qfd(fd);
        std::vector<std::pair<std::string, unsigned char>> names;
        if (int r = list_dir(qfd.get(), &names); r < 0)
            return r;
        if ((fd = open_dir_at(c_, cpath)) < 0)
            return fd;
        UniqueFd cfd(fd);
        for (const auto& entry : names) {
            struct stat st;
            int r = stat_at(cfd.get(), entry.first.c_str(), &st);
            if (r == -ENOENT) {
                moves.push_back({join(q, entry.first), join(cpath, entry.first)});
                ++*count;
            } else if (r < 0) {
                return r;
            }
        }
        return 0;
    };
    for (const Pending& y : s.pending) {
        if (y.done)
            continue;
        if (!y.same) {
            JournalOp op;
            op.type = 'S';
            op.a = y.cpath;
            op.opaque = y.final.opaque;
            op.has_redirect = y.final.redirect.has_value();
            op.b = y.final.redirect.value_or("");
            ops.push_back(std::move(op));
        }
        if (y.look.kind == Kind::dir) {
            std::size_t n = 0;
            if (int r = collect(y.cpath, y.look.ppath, &n); r < 0)
                return r;
            if (n)
                consumed.emplace_back(y.look.ppath, n);
        }
    }
    std::size_t n = 0;
    if (int r = collect("", "", &n); r < 0)
        return r;
    // A P dir with entries shown through a C dir that also lies inside an
    // entry shown at its own place would be visible twice: one object cannot
    // be renamed to two places. Kernel overlayfs never makes such a pair
    // (a renamed dir leaves a whiteout at its old place).
    for (const auto& [q, count] : consumed)
        for (const Move& m : moves)
            if (at_or_below(q, m.ppath))
                return -EXDEV;
    for (Move& m : moves) {
        JournalOp op;
        op.type = 'M';
        op.a = std::move(m.ppath);
        op.b = std::move(m.cpath);
        ops.push_back(std::move(op));
    }
    JournalOp d;
    d.type = 'D';
    ops.push_back(std::move(d));

    if (::syncfs(c_) < 0)
        return -errno;
    if (int t = trash_fd(); t < 0)
        return t;
    if (int r = write_journal(ops); r < 0)
        return r;
    ++stats_->grouped;
    bool ran = false;
    int r = step([&]() -> int {
        ran = true;
        return apply_journal(ops);
    });
    if (!ran) {
        // Cancelled before anything changed: forget the plan.
        if (::unlinkat(work_, journal_name, 0) == 0)
            changed(true);
        return r;
    }
    if (r < 0)
        return r; // the journal stays: the next run replays it
    if (::unlinkat(work_, journal_name, 0) < 0)
        return -errno;
    changed(true);
    return 0;
}

void put_field(std::string* out, std::string_view v)
{
    *out += std::to_string(v.size());
    *out += ':';
    out->append(v);
}

int Merger::write_journal(const std::vector<JournalOp>& ops)
{
    struct stat st;
    if (int r = stat_fd(c_, &st); r < 0)
        return r;
    std::string text(journal_magic);
    text += "C " + std::to_string(st.st_dev) + ' ' + std::to_string(st.st_ino) + '\n';
    for (const JournalOp& op : ops) {
        text += op.type;
        if (op.type == 'S') {
            text += op.opaque ? '1' : '0';
            text += op.has_redirect ? '1' : '0';
        }
        if (op.type == 'S' || op.type == 'M') {
            put_field(&text, op.a);
            put_field(&text, op.b);
        }
        text += '\n';
    }
    text += "E\n";
    int fd = ::openat(work_, journal_tmp_name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return -errno;
    UniqueFd jfd(fd);
    changed(true);
    std::size_t off = 0;
    while (off < text.size()) {
        ssize_t w = ::write(fd, text.data() + off, text.size() - off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        off += static_cast<std::size_t>(w);
    }
    if (::fsync(fd) < 0)
        return -errno;
    jfd.reset();
    if (::renameat(work_, journal_tmp_name, work_, journal_name) < 0)
        return -errno;
    changed(true);
    if ((fd = open_beneath(work_, ".", O_RDONLY | O_DIRECTORY)) < 0)
        return fd;
    UniqueFd wfd(fd);
    if (::fsync(fd) < 0)
        return -errno;
    return 0;
}

int Merger::read_journal(std::vector<JournalOp>* ops, bool* present) const
{
    *present = false;
    ops->clear();
    int fd = open_beneath(work_, journal_name, O_RDONLY);
    if (fd == -ENOENT)
        return 0;
    if (fd < 0)
        return fd;
    UniqueFd jfd(fd);
    *present = true;
    std::string text;
    char buf[65536];
    for (;;) {
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            break;
        text.append(buf, static_cast<std::size_t>(n));
        if (text.size() > journal_max)
            return -EFBIG;
    }
    std::size_t pos = 0;
    auto expect = [&](std::string_view s) {
        if (text.compare(pos, s.size(), s) != 0)
            return false;
        pos += s.size();
        return true;
    };
    auto number = [&](unsigned long long* v) {
        std::size_t start = pos;
        *v = 0;
        while (pos < text.size() && text[pos] >= '0' && text[pos] <= '9' && pos - start < 20)
            *v = *v * 10 + static_cast<unsigned>(text[pos++] - '0');
        return pos > start;
    };
    auto field = [&](std::string* v) {
        unsigned long long len;
        if (!number(&len) || !expect(":") || len > text.size() - pos)
            return false;
        v->assign(text, pos, static_cast<std::size_t>(len));
        pos += static_cast<std::size_t>(len);
        return true;
    };
    unsigned long long dev, ino;
    if (!expect(journal_magic) || !expect("C ") || !number(&dev) || !expect(" ") || !number(&ino) || !expect("\n"))
        return -EBADMSG;
    struct stat st;
    if (int r = stat_fd(c_, &st); r < 0)
        return r;
    if (dev != static_cast<unsigned long long>(st.st_dev) || ino != static_cast<unsigned long long>(st.st_ino))
        return -ESTALE; // a plan for another child layer: not ours to replay
    for (;;) {
        if (pos >= text.size())
            return -EBADMSG;
        char type = text[pos++];
        if (type == 'E')
            return expect("\n") && pos == text.size() ? 0 : -EBADMSG;
        JournalOp op;
        op.type = type;
        if (type == 'S') {
            if (pos + 2 > text.size())
                return -EBADMSG;
            op.opaque = text[pos++] == '1';
            op.has_redirect = text[pos++] == '1';
        }
        if (type == 'S' || type == 'M') {
            if (!field(&op.a) || !field(&op.b))
                return -EBADMSG;
        } else if (type != 'D') {
            return -EBADMSG;
        }
        if (!expect("\n"))
            return -EBADMSG;
        ops->push_back(std::move(op));
    }
}

// Every operation can be applied again: setting xattrs to given values, a
// move whose source is gone (already moved), detaching a P that is gone.
int Merger::apply_journal(const std::vector<JournalOp>& ops)
{
    // A replayed plan starts from a half-applied state: nothing is reported
    // as a correct view until P is gone.
    in_group_ = true;
    int r = trash_fd();
    if (r >= 0)
        r = apply_journal_ops(ops);
    in_group_ = false;
    return r < 0 ? r : 0;
}

int Merger::apply_journal_ops(const std::vector<JournalOp>& ops)
{
    for (const JournalOp& op : ops) {
        if (op.type == 'S') {
            Final f;
            f.opaque = op.opaque;
            if (op.has_redirect)
                f.redirect = op.b;
            if (int r = apply_final(op.a, f, false); r < 0)
                return r;
        } else if (op.type == 'M') {
            if (!p_)
                continue;
            auto split = [](const std::string& p) {
                auto slash = p.rfind('/');
                return slash == std::string::npos ? std::make_pair(std::string(), p)
                                                  : std::make_pair(p.substr(0, slash), p.substr(slash + 1));
            };
            auto [pdir, pname] = split(op.a);
            auto [cdir, cname] = split(op.b);
            int fd = open_dir_at(p_.get(), pdir);
            if (fd == -ENOENT)
                continue;
            if (fd < 0)
                return fd;
            UniqueFd from(fd);
            if ((fd = open_dir_at(c_, cdir)) < 0)
                return fd;
            UniqueFd to(fd);
            if (::renameat2(from.get(), pname.c_str(), to.get(), cname.c_str(), RENAME_NOREPLACE) == 0) {
                changed(false);
                continue;
            }
            if (errno == ENOENT)
                continue; // moved before the interruption
            return -errno;
        } else if (op.type == 'D') {
            if (p_)
                if (int r = detach_now(); r < 0)
                    return r;
        }
    }
    return 0;
}

int Merger::replay_journal()
{
    std::vector<JournalOp> ops;
    bool present = false;
    if (int r = read_journal(&ops, &present); r < 0 || !present)
        return r;
    ++stats_->replayed;
    int r = step([&]() -> int { return apply_journal(ops); });
    if (r < 0)
        return r;
    if (::unlinkat(work_, journal_name, 0) < 0)
        return -errno;
    changed(true);
    return 0;
}

int Merger::clear_work()
{
    trash_.reset();
    struct stat st;
    int r = stat_at(work_, trash_name, &st);
    if (r == -ENOENT)
        return 0;
    if (r < 0)
        return r;
    r = remove_tree_at(work_, trash_name);
    changed(true);
    return r;
}

int Merger::run()
{
    struct stat cst;
    if (int r = stat_fd(c_, &cst); r < 0)
        return r;
    if (!S_ISDIR(cst.st_mode))
        return -ENOTDIR;
    int fd = open_beneath(pdirfd_, pname_, O_PATH | O_DIRECTORY);
    if (fd >= 0)
        p_ = UniqueFd(fd);
    else if (fd != -ENOENT)
        return fd;
    if (p_) {
        struct stat pst;
        if (int r = stat_fd(p_.get(), &pst); r < 0)
            return r;
        if (pst.st_dev != cst.st_dev)
            return -EXDEV;
        if (pst.st_ino == cst.st_ino)
            return -EINVAL;
    }
    // A plan never renamed into place was never acted on.
    if (::unlinkat(work_, journal_tmp_name, 0) == 0)
        changed(true);
    else if (errno != ENOENT)
        return -errno;
    if (int r = replay_journal(); r < 0)
        return r;
    while (p_) {
        ++stats_->passes;
        Scan s;
        if (int r = scan_dir("", std::string(), 0, &s); r < 0)
            return r;
        if (int r = check_references(&s); r < 0)
            return r;
        bool progress = false, finished = false;
        if (int r = action_pass(s, &progress, &finished); r < 0)
            return r;
        if (finished)
            break;
        if (!progress) {
            if (int r = finish_group(s); r < 0)
                return r;
            break;
        }
    }
    return clear_work();
}

} // namespace

int merge_layer(int parent_dirfd, const char* parent_name, int child_fd, int work_fd, const OverlayXattrs& xattrs,
                const MergeStepRunner& run_step, const MergeChangeHook& on_change, MergeStats* stats)
{
    if (!parent_name || !is_valid_name(parent_name))
        return -EINVAL;
    Merger m(parent_dirfd, parent_name, child_fd, work_fd, xattrs, run_step, on_change, stats);
    return m.run();
}

} // namespace layerd
