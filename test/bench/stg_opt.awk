# test/bench/stg_opt.awk -- read the table of optimal makespans from the STG
# README (test/bench/stg/README.md) and print one SQL INSERT per (graph, m).
#
# The table's header names the columns: a cell "50: m=2" starts the columns
# of the 50-task graphs (m = 2), following cells "m=4" continue them; rows
# start with the graph name (rand0000).  Graph keys are "50/rand0000".
# Exits non-zero if no table was found.

function trim(s) { gsub(/^[ \t]+|[ \t]+$/, "", s); return s }

/^\|/ {
    n = split($0, cell, "|")
    # cell[1] is empty (before the first bar); the last one too
    if (trim(cell[2]) == "graph") {
        size = ""
        for (i = 3; i < n; i++) {
            c = trim(cell[i])
            col_size[i] = ""; col_m[i] = ""
            if (match(c, /^[0-9]+:[ \t]*m=[0-9]+$/)) {
                size = c; sub(/:.*/, "", size)
                m = c; sub(/.*m=/, "", m)
            } else if (match(c, /^m=[0-9]+$/)) {
                m = c; sub(/m=/, "", m)
            } else {
                continue
            }
            col_size[i] = size; col_m[i] = m
        }
        header = 1
        next
    }
    if (!header)
        next
    g = trim(cell[2])
    if (g !~ /^[A-Za-z0-9_]+$/)
        next
    for (i = 3; i < n; i++) {
        c = trim(cell[i])
        if (col_size[i] == "" || c !~ /^[0-9]+$/)
            continue
        printf "INSERT INTO bench.stg_opt VALUES ('%s/%s', %d, %d);\n", col_size[i], g, col_m[i], c
        rows++
    }
}

END {
    if (rows == 0) {
        print "stg_opt.awk: no table of optimal makespans found in " FILENAME > "/dev/stderr"
        exit 1
    }
}
