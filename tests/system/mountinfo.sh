# SPDX-License-Identifier: LGPL-2.1-or-later
# Sourced by the system tests: which FUSE mounts layerd made.

# mountinfo on stdin; prints "MINOR MOUNTPOINT STACK" for every layerd
# mount (fstype fuse.layerd-fs, source layerd:STACK). Mountpoints keep the
# kernel's \ooo escapes.
# mountinfo: ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [TAGS...] - FSTYPE SOURCE SUPER
layerd_mounts() {
    awk '{
        for (i = 7; $i != "-"; i++) ;
        if ($(i + 1) == "fuse.layerd-fs" && index($(i + 2), "layerd:") == 1) {
            split($3, dev, ":");
            print dev[2], $5, substr($(i + 2), 8);
        }
    }'
}

# mountinfo on stdin; true if STACK is mounted at MOUNTPOINT (as mountinfo
# spells it: the tests' paths have nothing to escape).
layerd_mounted() {
    layerd_mounts | awk -v mountpoint="$1" -v stack="$2" \
        '$2 == mountpoint && $3 == stack { found = 1 } END { exit !found }'
}
