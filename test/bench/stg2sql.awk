# test/bench/stg2sql.awk -- turn one Standard Task Graph Set file into SQL
# that defines it as a parflow workflow (used by test/bench/plan.sh).
#
#   awk -v graph=50/rand0000 -v wf=stg50_rand0000 [-v unit=ms] -f stg2sql.awk rand0000.stg
#
# Input, one task a line: `id cost npred pred...`; `#` lines are the
# generator's statistics ("# CP Length : 55" is kept for a sanity check).  A
# leading task-count line (a single number) and the dummy entry task 0 may or
# may not be present.  Output: one INSERT into bench.stg_graph and one
# parflow_define call: one parallel group, a stage t<id> per task with
# estimate = cost minutes (or the unit given: ms for the synthesized
# workflows of wfgen.awk) and depends_on = its predecessors, where
#   - dependencies on the dummy entry 0 are dropped,
#   - tasks of cost 0 (the dummy exit; estimates must be positive) are dropped,
#     and a dependency on a dropped task is replaced by that task's own
#     predecessors, transitively.

function fail(msg) {
    printf "stg2sql.awk: %s: %s\n", FILENAME, msg > "/dev/stderr"
    failed = 1
    exit 1
}

# The kept tasks that stand for a dependency on task p, as " a b c " (memoized).
function resolve(p,    k, parts, n, out, sub_, seen, i, j) {
    if (p in memo)
        return memo[p]
    if (p == 0)
        return (memo[p] = " ")
    if (!(p in cost))
        fail("task " p " is a predecessor but has no line")
    if (cost[p] > 0)
        return (memo[p] = " " p " ")
    if (p in visiting)
        fail("cycle through task " p)
    visiting[p] = 1
    out = " "
    n = split(preds[p], parts, " ")
    for (k = 1; k <= n; k++) {
        sub_ = resolve(parts[k])
        j = split(sub_, seen, " ")
        for (i = 1; i <= j; i++)
            if (index(out, " " seen[i] " ") == 0)
                out = out seen[i] " "
    }
    delete visiting[p]
    return (memo[p] = out)
}

BEGIN {
    if (unit == "")
        unit = "min"
    ntasks = 0
    cp_file = "NULL"
    tasks_file = "NULL"
    edges_file = "NULL"
}

/^#/ {
    if ($0 ~ /CP Length/) {
        line = $0
        sub(/.*:[ \t]*/, "", line)
        if (line ~ /^[0-9]+$/)
            cp_file = line
    }
    else if ($0 ~ /^#[ \t]*Tasks[ \t]*:/) {
        line = $0
        sub(/^#[ \t]*Tasks[ \t]*:[ \t]*/, "", line)
        if (match(line, /^[0-9]+/))
            tasks_file = substr(line, 1, RLENGTH)
    }
    else if ($0 ~ /^#[ \t]*Edges[ \t]*:/) {
        line = $0
        sub(/^#[ \t]*Edges[ \t]*:[ \t]*/, "", line)
        if (match(line, /^[0-9]+/))
            edges_file = substr(line, 1, RLENGTH)
    }
    next
}

NF == 0 { next }

NF == 1 && ntasks == 0 { next }    # the task-count line of the original format

{
    if (NF < 3)
        fail("line " FNR " has fewer than 3 fields")
    id = $1 + 0
    if ($3 + 0 != NF - 3)
        fail("line " FNR ": task " id " says " $3 " predecessors but lists " (NF - 3))
    if (id in cost)
        fail("task " id " appears twice")
    if (id == 0)
        next                      # the dummy entry: dependencies on it are dropped
    cost[id] = $2 + 0
    if (cost[id] < 0)
        fail("task " id " has a negative cost")
    p = ""
    for (k = 4; k <= NF; k++)
        p = p " " ($k + 0)
    preds[id] = p
    order[++ntasks] = id
}

END {
    if (failed)
        exit 1
    if (ntasks == 0)
        fail("no tasks")
    json = "{\"groups\": [{\"name\": \"tasks\", \"stages\": ["
    kept = 0; dropped = 0; edges = 0; work = 0
    for (t = 1; t <= ntasks; t++) {
        id = order[t]
        if (cost[id] == 0) {
            dropped++
            continue
        }
        deps = " "
        n = split(preds[id], parts, " ")
        for (k = 1; k <= n; k++) {
            r = resolve(parts[k])
            j = split(r, rs, " ")
            for (i = 1; i <= j; i++)
                if (index(deps, " " rs[i] " ") == 0)
                    deps = deps rs[i] " "
        }
        dl = ""
        j = split(deps, rs, " ")
        for (i = 1; i <= j; i++) {
            dl = dl (i > 1 ? ", " : "") "\"t" rs[i] "\""
            edges++
        }
        json = json (kept > 0 ? ", " : "") \
            sprintf("{\"name\": \"t%d\", \"agent\": \"cpu\", \"estimate\": \"%d %s\", \"depends_on\": [%s]}",
                    id, cost[id], unit, dl)
        kept++
        work += cost[id]
    }
    json = json "]}]}"
    printf "INSERT INTO bench.stg_graph VALUES ('%s', '%s', %d, %d, %d, %d, %s, %s, %s);\n",
        graph, wf, kept, edges, dropped, work, cp_file, tasks_file, edges_file
    printf "SELECT parflow_define('%s', $stg$%s$stg$::jsonb);\n", wf, json
}
