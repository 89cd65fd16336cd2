/* fsbench: the timed inner loops of bench/run, in C so that the figures
 * measure the filesystem, not the interpreter.
 *
 * Every subcommand times itself with CLOCK_MONOTONIC around the work only
 * and prints one JSON object on stdout. On the first error it prints
 * "fsbench: <what> <path>: <strerror>" on stderr and exits 1.
 *
 *   walk ROOT...                 lstat (fstatat AT_SYMLINK_NOFOLLOW) every entry
 *   readall ROOT...              open+read+close every regular file (readdir walk)
 *   bigread FILE                 sequential read, 1 MiB buffer
 *   create DIR NFILES PERDIR SIZE  mkdir DIR/dNNNN, files of SIZE bytes
 *   append ROOT LIST             open(O_WRONLY|O_APPEND)+write 1 byte+close each path
 *   rename ROOT LIST             rename(p, p".mv") each path
 *   unlink ROOT LIST             unlink each path
 *   openwrite FILE               open(O_RDWR)+pwrite 1 byte at 0+close, one file
 *   sync                         sync() twice (FUSE writeback can dirty the
 *                                backing ext4 after its first pass)
 *   memtouch MIB                 fault in MIB of anonymous memory, then free it
 *
 * LIST files hold one path per line, relative to ROOT.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void die(const char *what, const char *path)
{
    fprintf(stderr, "fsbench: %s %s: %s\n", what, path ? path : "", strerror(errno));
    exit(1);
}

static char iobuf[1 << 20];

struct counts {
    unsigned long long entries, dirs, files, bytes;
};

/* Walks the directory open as dfd (consumed). With do_read, regular files are
 * read whole; otherwise every entry is lstat'ed. d_type is trusted only when
 * reading (the stat walk stats everything anyway). */
static void walk_dir(int dfd, const char *path, int do_read, struct counts *c)
{
    DIR *d = fdopendir(dfd);
    if (!d)
        die("fdopendir", path);
    struct dirent *e;
    for (;;) {
        errno = 0;
        e = readdir(d);
        if (!e) {
            if (errno)
                die("readdir", path);
            break;
        }
        const char *n = e->d_name;
        if (n[0] == '.' && (n[1] == 0 || (n[1] == '.' && n[2] == 0)))
            continue;
        c->entries++;
        unsigned char type = e->d_type;
        if (!do_read || type == DT_UNKNOWN) {
            struct stat st;
            if (fstatat(dirfd(d), n, &st, AT_SYMLINK_NOFOLLOW) < 0)
                die("lstat", n);
            type = S_ISDIR(st.st_mode) ? DT_DIR : S_ISREG(st.st_mode) ? DT_REG : DT_UNKNOWN;
        }
        if (type == DT_DIR) {
            c->dirs++;
            int sub = openat(dirfd(d), n, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (sub < 0)
                die("open dir", n);
            walk_dir(sub, n, do_read, c);
        } else if (type == DT_REG && do_read) {
            int fd = openat(dirfd(d), n, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
            if (fd < 0)
                die("open", n);
            ssize_t r;
            while ((r = read(fd, iobuf, 65536)) > 0)
                c->bytes += (unsigned long long)r;
            if (r < 0)
                die("read", n);
            close(fd);
            c->files++;
        }
    }
    closedir(d);
}

static int cmd_walk(int argc, char **argv, int do_read)
{
    struct counts c = {0};
    double t0 = now();
    for (int i = 0; i < argc; i++) {
        int fd = open(argv[i], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
            die("open dir", argv[i]);
        walk_dir(fd, argv[i], do_read, &c);
    }
    double t = now() - t0;
    printf("{\"secs\": %.6f, \"entries\": %llu, \"dirs\": %llu, \"files\": %llu, \"bytes\": %llu}\n",
           t, c.entries, c.dirs, c.files, c.bytes);
    return 0;
}

static int cmd_bigread(const char *path)
{
    unsigned long long bytes = 0;
    double t0 = now();
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        die("open", path);
    ssize_t r;
    while ((r = read(fd, iobuf, sizeof iobuf)) > 0)
        bytes += (unsigned long long)r;
    if (r < 0)
        die("read", path);
    close(fd);
    double t = now() - t0;
    printf("{\"secs\": %.6f, \"bytes\": %llu, \"mbps\": %.3f}\n", t, bytes, (double)bytes / 1e6 / t);
    return 0;
}

static int cmd_create(const char *dir, long nfiles, long perdir, long size)
{
    char path[4096];
    if (size > (long)sizeof iobuf)
        size = sizeof iobuf;
    memset(iobuf, 'c', (size_t)size);
    double t0 = now();
    if (mkdir(dir, 0755) < 0)
        die("mkdir", dir);
    for (long i = 0; i < nfiles; i++) {
        if (i % perdir == 0) {
            snprintf(path, sizeof path, "%s/d%04ld", dir, i / perdir);
            if (mkdir(path, 0755) < 0)
                die("mkdir", path);
        }
        snprintf(path, sizeof path, "%s/d%04ld/f%06ld", dir, i / perdir, i);
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0)
            die("create", path);
        if (write(fd, iobuf, (size_t)size) != size)
            die("write", path);
        if (close(fd) < 0)
            die("close", path);
    }
    double t = now() - t0;
    printf("{\"secs\": %.6f, \"files\": %ld}\n", t, nfiles);
    return 0;
}

/* Reads LIST into memory (untimed) as an array of NUL-terminated lines. */
static char **read_list(const char *list, long *n)
{
    FILE *f = fopen(list, "re");
    if (!f)
        die("open", list);
    long cap = 1024, k = 0;
    char **v = malloc(sizeof *v * (size_t)cap);
    char *line = NULL;
    size_t len = 0;
    ssize_t r;
    while ((r = getline(&line, &len, f)) > 0) {
        if (line[r - 1] == '\n')
            line[--r] = 0;
        if (!r)
            continue;
        if (k == cap)
            v = realloc(v, sizeof *v * (size_t)(cap *= 2));
        v[k++] = strdup(line);
    }
    free(line);
    fclose(f);
    *n = k;
    return v;
}

enum listop { OP_APPEND, OP_RENAME, OP_UNLINK };

static int cmd_list(const char *root, const char *list, enum listop op)
{
    long n;
    char **v = read_list(list, &n);
    char to[4096];
    if (chdir(root) < 0)
        die("chdir", root);
    double t0 = now();
    for (long i = 0; i < n; i++) {
        switch (op) {
        case OP_APPEND: {
            int fd = open(v[i], O_WRONLY | O_APPEND | O_CLOEXEC);
            if (fd < 0)
                die("open", v[i]);
            if (write(fd, "+", 1) != 1)
                die("write", v[i]);
            if (close(fd) < 0)
                die("close", v[i]);
            break;
        }
        case OP_RENAME:
            snprintf(to, sizeof to, "%s.mv", v[i]);
            if (rename(v[i], to) < 0)
                die("rename", v[i]);
            break;
        case OP_UNLINK:
            if (unlink(v[i]) < 0)
                die("unlink", v[i]);
            break;
        }
    }
    double t = now() - t0;
    printf("{\"secs\": %.6f, \"files\": %ld}\n", t, n);
    return 0;
}

static int cmd_openwrite(const char *path)
{
    double t0 = now();
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        die("open", path);
    double t1 = now();
    if (pwrite(fd, "w", 1, 0) != 1)
        die("pwrite", path);
    double t2 = now();
    if (close(fd) < 0)
        die("close", path);
    double t3 = now();
    printf("{\"secs\": %.6f, \"open\": %.6f, \"write\": %.6f, \"close\": %.6f}\n",
           t3 - t0, t1 - t0, t2 - t1, t3 - t2);
    return 0;
}

static int cmd_sync(void)
{
    double t0 = now();
    sync();
    double t1 = now();
    sync();
    double t2 = now();
    printf("{\"secs\": %.6f, \"first\": %.6f, \"second\": %.6f}\n", t2 - t0, t1 - t0, t2 - t1);
    return 0;
}

static int cmd_memtouch(long mib)
{
    size_t n = (size_t)mib << 20;
    double t0 = now();
    char *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        die("mmap", "anonymous");
    for (size_t i = 0; i < n; i += 4096)
        p[i] = 1;
    double t1 = now();
    munmap(p, n);
    printf("{\"secs\": %.6f, \"touch\": %.6f}\n", now() - t0, t1 - t0);
    return 0;
}

static void usage(void)
{
    fprintf(stderr, "usage: fsbench walk|readall|bigread|create|append|rename|unlink|openwrite|sync|memtouch ARGS\n");
    exit(2);
}

int main(int argc, char **argv)
{
    if (argc < 2)
        usage();
    const char *c = argv[1];
    int n = argc - 2;
    char **a = argv + 2;
    if (!strcmp(c, "walk") && n >= 1)
        return cmd_walk(n, a, 0);
    if (!strcmp(c, "readall") && n >= 1)
        return cmd_walk(n, a, 1);
    if (!strcmp(c, "bigread") && n == 1)
        return cmd_bigread(a[0]);
    if (!strcmp(c, "create") && n == 4)
        return cmd_create(a[0], atol(a[1]), atol(a[2]) > 0 ? atol(a[2]) : 100, atol(a[3]));
    if (!strcmp(c, "append") && n == 2)
        return cmd_list(a[0], a[1], OP_APPEND);
    if (!strcmp(c, "rename") && n == 2)
        return cmd_list(a[0], a[1], OP_RENAME);
    if (!strcmp(c, "unlink") && n == 2)
        return cmd_list(a[0], a[1], OP_UNLINK);
    if (!strcmp(c, "openwrite") && n == 1)
        return cmd_openwrite(a[0]);
    if (!strcmp(c, "sync") && n == 0)
        return cmd_sync();
    if (!strcmp(c, "memtouch") && n == 1)
        return cmd_memtouch(atol(a[0]));
    usage();
    return 2;
}
