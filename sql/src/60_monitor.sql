-- parflow monitoring: the views (runs, tasks, events, stage statistics,
-- agents at work, why a task waits), Gantt charts, the Graphviz plan,
-- counters for scraping, housekeeping of old events and optional pg_cron
-- schedules.

CREATE OR REPLACE VIEW parflow.runs AS
SELECT r.id AS run, w.name AS workflow, v.version, r.state, r.priority, r.parallel, r.flags,
       r.created_at, r.started_at, r.finished_at, r.key, r.not_before, r.parent_run,
       (SELECT ps.name FROM parflow.task pt JOIN parflow.run pr ON pr.id = pt.run_id
          JOIN parflow.stage ps ON ps.version_id = pr.version_id AND ps.ord = pt.stage_ord
         WHERE pt.id = r.parent_task) AS parent_stage
  FROM parflow.run r JOIN parflow.workflow_version v ON v.id = r.version_id
  JOIN parflow.workflow w ON w.id = v.workflow_id;
COMMENT ON VIEW parflow.runs IS 'Runs: workflow, version, state, priority, mode, flags and times; the key of an idempotent start; the time before which a delayed run dispatches nothing; for a child run, the run and sub-workflow stage that started it';

CREATE OR REPLACE VIEW parflow.tasks AS
SELECT t.id AS task, t.run_id AS run, s.name AS stage, coalesce(t.agent, s.agent) AS agent, g.name AS group_name,
       t.state, t.attempt, t.worker, t.dispatched_at, t.started_at, t.finished_at, t.item
  FROM parflow.task t JOIN parflow.run r ON r.id = t.run_id
  JOIN parflow.stage s ON s.version_id = r.version_id AND s.ord = t.stage_ord
  JOIN parflow.stage_group g ON g.version_id = r.version_id AND g.ord = t.group_ord;
COMMENT ON VIEW parflow.tasks IS 'Tasks: one per stage of each run, with state, attempt, worker and times; a map stage''s instances besides, each with its index (item)';

CREATE OR REPLACE VIEW parflow.events AS
SELECT e.id AS event, e.at, e.run_id AS run, e.task_id AS task, e.kind, e.detail
  FROM parflow.event e;
COMMENT ON VIEW parflow.events IS 'The event log: every run and task transition';

-- A duration the way a person reads it: 450ms, 12.5s, 7m05s, 6h15m.
CREATE OR REPLACE FUNCTION parflow._dur(d interval) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN d IS NULL THEN ''
        WHEN extract(epoch FROM d) < 1 THEN round(1000 * extract(epoch FROM d))::bigint || 'ms'
        WHEN extract(epoch FROM d) < 60 THEN round(extract(epoch FROM d)::numeric, 1) || 's'
        WHEN extract(epoch FROM d) < 3600
            THEN floor(extract(epoch FROM d) / 60)::bigint || 'm'
                 || lpad((floor(extract(epoch FROM d))::bigint % 60)::text, 2, '0') || 's'
        ELSE floor(extract(epoch FROM d) / 3600)::bigint || 'h'
             || lpad((floor(extract(epoch FROM d) / 60)::bigint % 60)::text, 2, '0') || 'm' END
$$;
COMMENT ON FUNCTION parflow._dur(interval) IS 'Internal: a duration for people (450ms, 12.5s, 7m05s, 6h15m)';

-- A Graphviz quoted identifier.
CREATE OR REPLACE FUNCTION parflow._dot_id(s text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT '"' || replace(replace(replace(s, '\', '\\'), '"', '\"'), E'\n', '\n') || '"'
$$;
COMMENT ON FUNCTION parflow._dot_id(text) IS 'Internal: quote a name as a Graphviz ID';

-- Duration of the attempt that succeeded (failed and interrupted attempts
-- do not count: claim resets started_at).
CREATE OR REPLACE VIEW parflow.stage_stats AS
SELECT w.name AS workflow, s.name AS stage, t.agent, count(*)::integer AS runs,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY t.finished_at - t.started_at) AS p50,
       percentile_cont(0.9) WITHIN GROUP (ORDER BY t.finished_at - t.started_at) AS p90,
       avg(t.finished_at - t.started_at) AS mean,
       (array_agg(t.finished_at - t.started_at ORDER BY t.finished_at DESC))[1] AS last,
       max(t.finished_at) AS last_at
  FROM parflow.task t JOIN parflow.run r ON r.id = t.run_id
  JOIN parflow.workflow_version v ON v.id = r.version_id
  JOIN parflow.workflow w ON w.id = v.workflow_id
  JOIN parflow.stage s ON s.version_id = r.version_id AND s.ord = t.stage_ord
 WHERE t.state = 'succeeded' AND t.started_at IS NOT NULL
 GROUP BY w.name, s.name, t.agent;
COMMENT ON VIEW parflow.stage_stats IS
    'Per workflow and stage: how many runs it succeeded in, and the p50, p90, mean and last duration of its successful attempts';

CREATE OR REPLACE VIEW parflow.agents_at_work AS
SELECT t.worker, t.agent, t.id AS task, t.run_id AS run, s.name AS stage, t.attempt,
       t.started_at AS since, clock_timestamp() - t.started_at AS working_for,
       t.lease_until - clock_timestamp() AS lease_left,
       t.lease_until - t.lease AS last_heartbeat,
       t.interrupted_at IS NOT NULL AS interrupted
  FROM parflow.task t JOIN parflow.run r ON r.id = t.run_id
  JOIN parflow.stage s ON s.version_id = r.version_id AND s.ord = t.stage_ord
 WHERE t.state = 'running' AND t.group_ord IS NOT NULL;
COMMENT ON VIEW parflow.agents_at_work IS
    'Agents at work: worker, kind, task, stage, since when, lease left, last heartbeat (or claim), interrupted';

-- Why a task that has not started waits; one row per reason.
CREATE OR REPLACE FUNCTION parflow._why(t parflow.task, r parflow.run) RETURNS SETOF text
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, parflow, pg_temp AS $$
DECLARE
    cap integer := current_setting('parflow.max_parallel_stages')::integer;
    active integer;
    others integer;
    n integer := 0;
    x record;
BEGIN
    IF r.state = 'paused' THEN
        RETURN NEXT 'run paused (parflow_resume)';
        RETURN;
    ELSIF r.state = 'blocked' THEN
        RETURN NEXT format('run blocked by %s failed stage(s) (parflow_failures, parflow_retry)', r.failed);
        RETURN;
    END IF;
    IF t.state = 'waiting' AND t.item IS NULL AND t.agent IS NULL AND t.pending > 0
       AND EXISTS (SELECT FROM parflow.task i WHERE i.run_id = r.id AND i.stage_ord = t.stage_ord AND i.item IS NOT NULL) THEN
        SELECT count(*) AS n, count(*) FILTER (WHERE i.state = 'succeeded') AS ok,
               count(*) FILTER (WHERE i.state = 'failed') AS failed INTO x
          FROM parflow.task i WHERE i.run_id = r.id AND i.stage_ord = t.stage_ord AND i.item IS NOT NULL;
        RETURN NEXT format('map instances: %s of %s succeeded%s', x.ok, x.n,
                           CASE WHEN x.failed > 0 THEN format(', %s failed (parflow_retry)', x.failed) ELSE '' END);
        RETURN;
    END IF;
    IF t.state = 'waiting' THEN
        FOR x IN SELECT ds.name, dt.state FROM parflow.stage_dep d
                   JOIN parflow.task dt ON dt.run_id = r.id AND dt.stage_ord = d.dep_ord AND dt.item IS NULL
                   JOIN parflow.stage ds ON ds.version_id = r.version_id AND ds.ord = d.dep_ord
                  WHERE d.version_id = r.version_id AND d.stage_ord = t.stage_ord
                    AND dt.state NOT IN ('succeeded', 'skipped')
                  ORDER BY d.dep_ord LOOP
            RETURN NEXT format('dependency %s is %s', x.name, x.state);
            n := n + 1;
        END LOOP;
        FOR x IN SELECT g.name, rg.pending FROM parflow.group_dep gd
                   JOIN parflow.run_group rg ON rg.run_id = r.id AND rg.group_ord = gd.dep_ord
                   JOIN parflow.stage_group g ON g.version_id = r.version_id AND g.ord = gd.dep_ord
                  WHERE gd.version_id = r.version_id AND gd.group_ord = t.group_ord AND rg.pending > 0
                  ORDER BY gd.dep_ord LOOP
            RETURN NEXT format('group %s not done (%s stage(s) left)', x.name, x.pending);
            n := n + 1;
        END LOOP;
        IF t.hold_ord IS NOT NULL THEN
            SELECT s.name, h.state INTO x FROM parflow.stage s
              JOIN parflow.task h ON h.run_id = r.id AND h.stage_ord = s.ord AND h.item IS NULL
             WHERE s.version_id = r.version_id AND s.ord = t.hold_ord;
            RETURN NEXT format('held by the plan until %s finishes (it is %s): starting it sooner would delay the run',
                               x.name, x.state);
            n := n + 1;
        END IF;
        IF n = 0 THEN
            RETURN NEXT 'dependencies finishing';
        END IF;
        RETURN;
    ELSIF t.state = 'dispatched' THEN
        RETURN NEXT format('dispatched %s ago; no agent of kind %s has claimed it yet',
                           parflow._dur(clock_timestamp() - t.dispatched_at), t.agent);
        RETURN;
    ELSIF t.state = 'awaiting' THEN
        SELECT s.wait_event, s.wait_timeout, s.wait_on_timeout, s.sub_workflow,
               (SELECT format('%s (%s)', c.id, c.state) FROM parflow.run c WHERE c.parent_task = t.id
                 ORDER BY c.id DESC LIMIT 1) AS child
          INTO x FROM parflow.stage s
         WHERE s.version_id = r.version_id AND s.ord = t.stage_ord;
        IF x.sub_workflow IS NOT NULL THEN
            RETURN NEXT format('awaiting child run %s of workflow %s since %s', x.child, x.sub_workflow, t.started_at);
            RETURN;
        END IF;
        RETURN NEXT format('awaiting event %s since %s%s (parflow_signal, parflow_reject)', x.wait_event, t.started_at,
                           CASE WHEN x.wait_timeout IS NOT NULL
                                THEN format('; %s at %s', CASE x.wait_on_timeout WHEN 'skip' THEN 'skipped' ELSE 'fails' END,
                                            t.started_at + x.wait_timeout) ELSE '' END);
        RETURN;
    END IF;
    -- ready
    IF r.not_before > clock_timestamp() AND t.not_before = r.not_before THEN
        RETURN NEXT format('not before %s', r.not_before);
        RETURN;
    ELSIF t.not_before > clock_timestamp() THEN
        RETURN NEXT format('retry backoff until %s', t.not_before);
        n := n + 1;
    END IF;
    SELECT count(*) INTO active FROM parflow.task a WHERE a.state = ANY (parflow._active_states()) AND a.group_ord IS NOT NULL;
    IF active >= cap THEN
        RETURN NEXT format('cap reached: parflow.max_parallel_stages (%s/%s at work)', active, cap);
        n := n + 1;
        -- under fair share the runs of this priority take turns
        IF current_setting('parflow.fair_share')::boolean THEN
            SELECT count(*) INTO others FROM parflow.run o
             WHERE o.state = 'running' AND o.id <> r.id AND o.priority = r.priority
               AND EXISTS (SELECT FROM parflow.task ot WHERE ot.run_id = o.id
                              AND ot.state IN ('ready', 'dispatched', 'running'));
            IF others > 0 THEN
                RETURN NEXT format('sharing capacity with %s other run%s of priority %s', others,
                                   CASE WHEN others = 1 THEN '' ELSE 's' END, r.priority);
            END IF;
        END IF;
    END IF;
    -- concurrency rules: tasks at work of the rule's name and key value, in every run
    FOR x IN SELECT c.name, c.key, c.max_concurrent, r.input -> c.key AS val,
                    parflow._conc_at_work(c.name, r.input -> c.key) AS at_work
               FROM parflow.concurrency c
              WHERE c.version_id = r.version_id AND r.input ? c.key
                AND (c.stage_ords IS NULL OR t.stage_ord = ANY (c.stage_ords))
              ORDER BY c.ord LOOP
        IF x.at_work >= x.max_concurrent THEN
            RETURN NEXT format('concurrency rule %s full for %s=%s (%s/%s)', x.name, x.key,
                               CASE WHEN jsonb_typeof(x.val) = 'string' THEN x.val #>> '{}' ELSE x.val::text END,
                               x.at_work, x.max_concurrent);
            n := n + 1;
        END IF;
    END LOOP;
    SELECT count(*) INTO active FROM parflow.task a
     WHERE a.run_id = r.id AND a.state = ANY (parflow._active_states()) AND a.group_ord IS NOT NULL;
    IF active >= r.max_parallel THEN
        RETURN NEXT CASE WHEN r.parallel THEN format('cap reached: the run''s max_parallel (%s/%s at work)', active, r.max_parallel)
                         ELSE 'sequential run: one task at a time' END;
        n := n + 1;
    END IF;
    FOR x IN SELECT a.agents, a.max_concurrent,
                    (SELECT count(*) FROM parflow.task b
                      WHERE b.run_id = r.id AND b.state = ANY (parflow._active_states()) AND b.group_ord IS NOT NULL AND b.agent = ANY (a.agents)) AS c
               FROM parflow.affinity a
              WHERE a.version_id = r.version_id AND t.agent = ANY (a.agents) ORDER BY a.ord LOOP
        IF x.c >= x.max_concurrent THEN
            RETURN NEXT format('affinity rule {%s} full (%s/%s at work)', array_to_string(x.agents, ','), x.c,
                               x.max_concurrent);
            n := n + 1;
        END IF;
    END LOOP;
    IF n = 0 THEN
        RETURN NEXT 'next dispatch pass';
    END IF;
END
$$;
COMMENT ON FUNCTION parflow._why(parflow.task, parflow.run) IS 'Internal: the reasons a task that has not started waits (for the view parflow.waiting, whose readers cannot read the tables)';

CREATE OR REPLACE VIEW parflow.waiting AS
SELECT t.id AS task, t.run_id AS run, s.name AS stage, t.agent, t.state, w.why, t.item
  FROM parflow.task t JOIN parflow.run r ON r.id = t.run_id
  JOIN parflow.stage s ON s.version_id = r.version_id AND s.ord = t.stage_ord
 CROSS JOIN LATERAL parflow._why(t, r) w(why)
 WHERE t.state IN ('waiting', 'ready', 'dispatched', 'awaiting') AND r.state IN ('running', 'paused', 'blocked');
COMMENT ON VIEW parflow.waiting IS
    'What each task that has not started waits for (why): a dependency or group, a cap (and the runs sharing it), an affinity or concurrency rule, a paused or blocked run, a delayed start, backoff, an agent to claim it, the event or child run a stage awaits, a map stage''s instances';

CREATE OR REPLACE FUNCTION @extschema@.parflow_gantt(run bigint, width integer DEFAULT 60) RETURNS SETOF text
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, parflow, pg_temp AS $$
DECLARE
    r parflow.run;
    wf text;
    t0 timestamptz;
    total double precision;
    namew integer;
    x record;
    a integer;
    b integer;
    bar text;
BEGIN
    r := parflow._run_get(run);
    IF width IS NULL OR width NOT BETWEEN 10 AND 500 THEN
        RAISE EXCEPTION 'width must be between 10 and 500 columns' USING ERRCODE = 'invalid_parameter_value',
            DETAIL = format('Found %s.', coalesce(width::text, 'NULL'));
    END IF;
    SELECT w.name INTO wf FROM parflow.workflow_version v JOIN parflow.workflow w ON w.id = v.workflow_id
     WHERE v.id = r.version_id;
    t0 := r.started_at;
    total := greatest(extract(epoch FROM coalesce(r.finished_at, clock_timestamp()) - t0), 0.000001);
    SELECT least(greatest(max(length(s.name)), 5), 24) INTO namew
      FROM parflow.stage s WHERE s.version_id = r.version_id;
    RETURN NEXT format('run %s  %s  %s  %s, one column = %s', r.id, wf, r.state,
                       CASE WHEN r.parallel THEN 'parallel' ELSE 'sequential' END,
                       parflow._dur(make_interval(secs => total / width)));
    RETURN NEXT rpad('stage', namew) || ' |' || rpad('0', width - length(parflow._dur(make_interval(secs => total))))
                || parflow._dur(make_interval(secs => total)) || '| start    took';
    FOR x IN SELECT s.name || coalesce('[' || t.item || ']', '') AS name, t.state, t.started_at,
                    coalesce(t.finished_at, clock_timestamp()) AS fin
               FROM parflow.task t JOIN parflow.stage s ON s.version_id = r.version_id AND s.ord = t.stage_ord
              WHERE t.run_id = r.id
              ORDER BY t.started_at NULLS LAST, t.stage_ord, t.item NULLS FIRST LOOP
        IF x.started_at IS NULL OR x.state IN ('skipped', 'waiting', 'ready', 'dispatched') THEN
            bar := repeat(' ', width);
        ELSE
            a := least(floor(extract(epoch FROM x.started_at - t0) / total * width)::integer, width - 1);
            b := greatest(ceil(extract(epoch FROM x.fin - t0) / total * width)::integer, a + 1);
            b := least(b, width);
            bar := repeat(' ', a) || repeat(CASE x.state WHEN 'succeeded' THEN '#' WHEN 'running' THEN '>'
                                                       WHEN 'awaiting' THEN '~'
                                                       WHEN 'failed' THEN '!' ELSE 'x' END, b - a)
                   || repeat(' ', width - b);
        END IF;
        RETURN NEXT rpad(CASE WHEN length(x.name) > namew THEN left(x.name, namew - 1) || '~' ELSE x.name END, namew)
                    || ' |' || bar || '| '
                    || CASE WHEN x.started_at IS NULL OR x.state IN ('skipped', 'waiting', 'ready', 'dispatched') THEN x.state
                            ELSE rpad(parflow._dur(x.started_at - t0), 8) || ' ' || parflow._dur(x.fin - x.started_at)
                                 || CASE WHEN x.state <> 'succeeded' THEN ' ' || x.state ELSE '' END END;
    END LOOP;
END
$$;
COMMENT ON FUNCTION @extschema@.parflow_gantt(bigint, integer) IS
    'A text Gantt chart of a run for psql: one line per stage, # done, > running, ! failed, with start offset and duration';

-- XML text escaping for the SVG chart.
CREATE OR REPLACE FUNCTION parflow._xml(s text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT replace(replace(replace(replace(s, '&', '&amp;'), '<', '&lt;'), '>', '&gt;'), '"', '&quot;')
$$;
COMMENT ON FUNCTION parflow._xml(text) IS 'Internal: escape text for XML';

CREATE OR REPLACE FUNCTION @extschema@.parflow_gantt_svg(run bigint) RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, parflow, pg_temp AS $$
DECLARE
    r parflow.run;
    wf text;
    total double precision;
    n integer;
    label_w constant integer := 160;
    chart_w constant integer := 720;
    row_h constant integer := 22;
    body text;
    ticks text;
BEGIN
    r := parflow._run_get(run);
    SELECT w.name INTO wf FROM parflow.workflow_version v JOIN parflow.workflow w ON w.id = v.workflow_id
     WHERE v.id = r.version_id;
    total := greatest(extract(epoch FROM coalesce(r.finished_at, clock_timestamp()) - r.started_at), 0.000001);
    SELECT count(*) INTO n FROM parflow.task t WHERE t.run_id = r.id;
    SELECT string_agg(format(
               '<text x="%s" y="%s" class="l">%s</text>%s',
               label_w - 8, 40 + (x.i - 1) * row_h + 15, parflow._xml(x.name),
               CASE WHEN x.started_at IS NULL OR x.state IN ('skipped', 'waiting', 'ready', 'dispatched')
                    THEN format('<text x="%s" y="%s" class="s">%s</text>', label_w + 4, 40 + (x.i - 1) * row_h + 15, x.state)
                    ELSE format('<rect x="%s" y="%s" width="%s" height="%s" class="%s"><title>%s: %s from %s</title></rect>',
                                round((label_w + chart_w * extract(epoch FROM x.started_at - r.started_at) / total)::numeric, 1),
                                40 + (x.i - 1) * row_h + 3,
                                greatest(round((chart_w * extract(epoch FROM x.fin - x.started_at) / total)::numeric, 1), 1),
                                row_h - 6, x.state, parflow._xml(x.name), parflow._dur(x.fin - x.started_at),
                                parflow._dur(x.started_at - r.started_at)) END), '' ORDER BY x.i)
      INTO body
      FROM (SELECT s.name || coalesce('[' || t.item || ']', '') AS name, t.state, t.started_at,
                   coalesce(t.finished_at, clock_timestamp()) AS fin,
                   row_number() OVER (ORDER BY t.started_at NULLS LAST, t.stage_ord, t.item NULLS FIRST) AS i
              FROM parflow.task t JOIN parflow.stage s ON s.version_id = r.version_id AND s.ord = t.stage_ord
             WHERE t.run_id = r.id) x;
    SELECT string_agg(format('<line x1="%s" y1="32" x2="%s" y2="%s" class="g"/><text x="%s" y="28" class="t">%s</text>',
                             label_w + chart_w * k / 4, label_w + chart_w * k / 4, 40 + n * row_h,
                             label_w + chart_w * k / 4, parflow._dur(make_interval(secs => total * k / 4))), '')
      INTO ticks FROM generate_series(0, 4) k;
    RETURN format('<svg xmlns="http://www.w3.org/2000/svg" width="%s" height="%s" font-family="Helvetica,Arial,sans-serif" font-size="12">',
                  label_w + chart_w + 20, 50 + n * row_h)
        || '<style>.l{text-anchor:end}.s{fill:#999}.t{text-anchor:middle;fill:#555;font-size:10px}'
        || '.g{stroke:#ddd}.succeeded{fill:#4a90d9}.running{fill:#f5a623}.failed{fill:#d0021b}.cancelled{fill:#999}</style>'
        || format('<text x="8" y="16" font-weight="bold">%s</text>',
                  parflow._xml(format('run %s: %s, %s, %s, took %s', r.id, wf,
                                      CASE WHEN r.parallel THEN 'parallel' ELSE 'sequential' END, r.state,
                                      parflow._dur(make_interval(secs => total)))))
        || coalesce(ticks, '') || coalesce(body, '') || E'</svg>\n';
END
$$;
COMMENT ON FUNCTION @extschema@.parflow_gantt_svg(bigint) IS
    'A Gantt chart of a run as an SVG document (one bar per stage, coloured by state; hover for times)';

CREATE OR REPLACE FUNCTION @extschema@.parflow_dot(workflow text, flags text[] DEFAULT '{}') RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, parflow, pg_temp AS $$
DECLARE
    ver bigint := parflow._current_version(workflow);
    plan jsonb;        -- stage -> {s, f, c}: planned start and finish (seconds), critical
    lines text[];
    x record;
BEGIN
    SELECT jsonb_object_agg(p.stage, jsonb_build_object('s', extract(epoch FROM p.est_start),
                                                        'f', extract(epoch FROM p.est_finish), 'c', p.critical))
      INTO plan FROM @extschema@.parflow_plan(workflow, flags) p;
    plan := coalesce(plan, '{}');
    lines := ARRAY[format('digraph %s {', parflow._dot_id(workflow)),
                   '  rankdir=LR; compound=true; node [shape=box, style=rounded, fontname="Helvetica"];',
                   format('  label=%s; labelloc=t;',
                          parflow._dot_id(format('%s: planned %s, critical path in red', workflow,
                              parflow._dur(make_interval(secs => coalesce(
                                  (SELECT max((v->>'f')::float8) FROM jsonb_each(plan) e(k, v)), 0))))))];
    FOR x IN SELECT g.ord, g.name FROM parflow.stage_group g WHERE g.version_id = ver ORDER BY g.ord LOOP
        lines := lines || format('  subgraph %s {', parflow._dot_id('cluster_' || x.ord))
                       || format('    label=%s; style=dashed;', parflow._dot_id(x.name))
                       || format('    %s [shape=point, width=0.08];', parflow._dot_id('group:' || x.name));
        lines := lines || ARRAY(
            -- a wait stage is a diamond, a sub-workflow stage a box3d, a map
            -- stage a box drawn twice (its instances)
            SELECT format('    %s [label=%s%s%s];', parflow._dot_id(s.name),
                          parflow._dot_id(s.name || E'\n'
                                          || CASE WHEN s.wait_event IS NOT NULL THEN 'awaits ' || s.wait_event
                                                  WHEN s.sub_workflow IS NOT NULL THEN 'runs ' || s.sub_workflow
                                                  WHEN s.map_over_ord IS NOT NULL
                                                  THEN s.agent || ' x' || s.map_expect || ' (map)'
                                                  ELSE s.agent END || ', '
                                          || CASE WHEN plan ? s.name
                                                  THEN parflow._dur(make_interval(secs => (plan->s.name->>'f')::float8
                                                                                         - (plan->s.name->>'s')::float8))
                                                  ELSE 'skipped' END),
                          CASE WHEN s.wait_event IS NOT NULL THEN ', shape=diamond'
                               WHEN s.sub_workflow IS NOT NULL THEN ', shape=box3d'
                               WHEN s.map_over_ord IS NOT NULL THEN ', peripheries=2' ELSE '' END,
                          CASE WHEN NOT plan ? s.name THEN ', style="rounded,dashed", fontcolor=gray, color=gray'
                               WHEN (plan->s.name->>'c')::boolean THEN ', color=red, penwidth=2' ELSE '' END)
              FROM parflow.stage s WHERE s.version_id = ver AND s.group_ord = x.ord ORDER BY s.ord);
        lines := lines || '  }'::text;
    END LOOP;
    -- every stage -> its group's barrier; a barrier -> the stages of the groups waiting for it
    lines := lines || ARRAY(
        SELECT format('  %s -> %s [arrowhead=none, color=gray];', parflow._dot_id(s.name),
                      parflow._dot_id('group:' || g.name))
          FROM parflow.stage s JOIN parflow.stage_group g ON g.version_id = ver AND g.ord = s.group_ord
         WHERE s.version_id = ver ORDER BY s.ord);
    lines := lines || ARRAY(
        SELECT format('  %s -> %s%s;', parflow._dot_id('group:' || dg.name), parflow._dot_id(s.name),
                      CASE WHEN (plan->s.name->>'c')::boolean THEN ' [color=red]' ELSE '' END)
          FROM parflow.group_dep gd
          JOIN parflow.stage_group dg ON dg.version_id = ver AND dg.ord = gd.dep_ord
          JOIN parflow.stage s ON s.version_id = ver AND s.group_ord = gd.group_ord
         WHERE gd.version_id = ver ORDER BY gd.dep_ord, s.ord);
    lines := lines || ARRAY(
        SELECT format('  %s -> %s%s;', parflow._dot_id(ds.name), parflow._dot_id(s.name),
                      CASE WHEN (plan->s.name->>'c')::boolean AND (plan->ds.name->>'c')::boolean
                                AND plan->ds.name->'f' = plan->s.name->'s' THEN ' [color=red, penwidth=2]'
                           WHEN d.kind = 'v' THEN ' [style=dashed]' ELSE '' END)
          FROM parflow.stage_dep d
          JOIN parflow.stage s ON s.version_id = ver AND s.ord = d.stage_ord
          JOIN parflow.stage ds ON ds.version_id = ver AND ds.ord = d.dep_ord
         WHERE d.version_id = ver ORDER BY d.dep_ord, d.stage_ord);
    lines := lines || '}'::text;
    RETURN array_to_string(lines, E'\n') || E'\n';
END
$$;
COMMENT ON FUNCTION @extschema@.parflow_dot(text, text[]) IS
    'Graphviz DOT of the plan of the latest version of a workflow: groups as clusters, stage edges, critical path in red, skipped stages dashed';

-- Counters for scraping: runs and tasks by state, events by kind (those
-- housekeeping deleted included), hand-off latency, this database's
-- dispatcher and its passes and hand-over notifications.
CREATE OR REPLACE FUNCTION @extschema@.parflow_metrics() RETURNS TABLE(metric text, value double precision)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, parflow, pg_temp AS $$
    -- one scan of the event log for every kind (a count per kind read it
    -- once per kind: 33 s for 14 kinds of 8.7 million events)
    WITH ev AS (
        SELECT k.kind, coalesce((SELECT n FROM parflow.event_tally et WHERE et.kind = k.kind), 0)
                       + coalesce(c.n, 0) AS n
          FROM unnest(ARRAY['dispatched', 'succeeded', 'retry', 'failed', 'route_back', 'interrupt',
                            'awaiting', 'signalled', 'rejected', 'expanded', 'child_started',
                            'preempted', 'released', 'unclaimed']) k(kind)
          LEFT JOIN (SELECT e.kind, count(*) AS n FROM parflow.event e GROUP BY e.kind) c ON c.kind = k.kind),
    handoff AS (
        -- the last 1000 dispatches among the last 100,000 events, each from
        -- its task's latest ready event in them: one scan of a range the
        -- BRIN index on id finds (the identity's sequence knows the last id),
        -- where a probe per dispatch walked back through its run's events
        SELECT avg(extract(epoch FROM w.at - w.ready_at)) AS s
          FROM (SELECT x.at, x.ready_at FROM (
                  SELECT e.id, e.kind, e.at,
                         max(e.at) FILTER (WHERE e.kind = 'ready')
                             OVER (PARTITION BY e.run_id, e.task_id ORDER BY e.id) AS ready_at
                    FROM parflow.event e
                   WHERE e.kind IN ('ready', 'dispatched') AND e.task_id IS NOT NULL
                     AND e.id > (SELECT coalesce(pg_sequence_last_value(pg_get_serial_sequence('parflow.event', 'id')), 0)
                                        - 100000)) x
                 WHERE x.kind = 'dispatched' AND x.ready_at IS NOT NULL
                 ORDER BY x.id DESC LIMIT 1000) w)
    SELECT format('parflow_runs{state="%s"}', st), (SELECT count(*) FROM parflow.run r WHERE r.state = st)::float8
      FROM unnest(ARRAY['running', 'paused', 'blocked', 'succeeded', 'cancelled']) st
    UNION ALL
    SELECT format('parflow_tasks{state="%s"}', st), coalesce(c.n, 0)::float8
      FROM unnest(ARRAY['waiting', 'ready', 'dispatched', 'running', 'succeeded', 'failed', 'skipped', 'cancelled',
                        'awaiting']) st
      LEFT JOIN (SELECT t.state, count(*) AS n FROM parflow.task t GROUP BY t.state) c ON c.state = st
    UNION ALL
    SELECT format('parflow_events_total{kind="%s"}', ev.kind), ev.n::float8 FROM ev
    UNION ALL
    SELECT 'parflow_handoff_seconds_mean', coalesce((SELECT s FROM handoff), 0)
    UNION ALL
    SELECT 'parflow_max_parallel_stages', current_setting('parflow.max_parallel_stages')::float8
    UNION ALL
    SELECT 'parflow_dispatcher_up',
           (SELECT count(*) FROM pg_stat_activity
             WHERE backend_type = 'parflow dispatcher' AND datname = current_database())::float8
    UNION ALL
    SELECT 'parflow_dispatch_passes_total', coalesce((parflow._dispatcher_counts())[1], 0)::float8
    UNION ALL
    SELECT 'parflow_handover_notifications_total', coalesce((parflow._dispatcher_counts())[2], 0)::float8
$$;
COMMENT ON FUNCTION @extschema@.parflow_metrics() IS
    'Counters for scraping (Prometheus-style names): runs and tasks by state, events by kind (dispatches, retries, route-backs, interrupts...), mean hand-off latency over the last 1000 dispatches, this database''s dispatcher up, its dispatch passes and hand-over notifications since it was first started';

CREATE OR REPLACE FUNCTION @extschema@.parflow_housekeeping() RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, parflow, pg_temp AS $$
DECLARE
    n bigint;
BEGIN
    WITH old AS (SELECT r.id FROM parflow.run r
                  WHERE r.state IN ('succeeded', 'cancelled')
                    AND r.finished_at < clock_timestamp() - current_setting('parflow.retention')::interval),
    d AS (DELETE FROM parflow.event e USING old WHERE e.run_id = old.id RETURNING e.kind),
    -- (signals kept for a run that ended will never be taken)
    k AS (DELETE FROM parflow.signal sg USING old WHERE sg.run_id = old.id),
    c AS (SELECT d.kind, count(*) AS n FROM d GROUP BY d.kind),
    u AS (INSERT INTO parflow.event_tally AS et (kind, n) SELECT c.kind, c.n FROM c
          ON CONFLICT (kind) DO UPDATE SET n = et.n + excluded.n)
    SELECT coalesce(sum(c.n), 0) INTO n FROM c;
    RETURN n;
END
$$;
COMMENT ON FUNCTION @extschema@.parflow_housekeeping() IS
    'Delete the events (and kept signals) of runs finished (succeeded or cancelled) longer than parflow.retention ago; runs, tasks, statistics and counters stay; returns the number of events deleted';

-- pg_cron, or a clear error that says how to get it.
CREATE OR REPLACE FUNCTION parflow._require_cron() RETURNS void
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname = 'pg_cron') THEN
        RAISE EXCEPTION 'pg_cron is not installed in this database'
            USING ERRCODE = 'feature_not_supported',
                  DETAIL = 'parflow schedules runs through pg_cron, which is optional; nothing else needs it.',
                  HINT = 'Install it (Debian: apt-get install postgresql-15-cron), add pg_cron to shared_preload_libraries, restart, then CREATE EXTENSION pg_cron in the database named by cron.database_name.';
    END IF;
END
$$;
COMMENT ON FUNCTION parflow._require_cron() IS 'Internal: raise 0A000 with a hint unless pg_cron is installed';

-- Register a pg_cron job in this database (dynamic: pg_cron may be absent
-- when parflow is installed).
CREATE OR REPLACE FUNCTION parflow._cron_job(job_name text, cron_expr text, command text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    id bigint;
BEGIN
    PERFORM parflow._require_cron();
    IF job_name IS NULL OR btrim(job_name) = '' THEN
        RAISE EXCEPTION 'job name must be a non-empty name' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF cron_expr IS NULL OR btrim(cron_expr) = '' THEN
        RAISE EXCEPTION 'cron expression must not be empty' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'For example ''0 9 * * 1-5'' (9:00 on weekdays).';
    END IF;
    EXECUTE 'SELECT cron.schedule_in_database($1, $2, $3, current_database())'
       INTO id USING job_name, cron_expr, command;
    RETURN id;
END
$$;
COMMENT ON FUNCTION parflow._cron_job(text, text, text) IS 'Internal: create or replace a pg_cron job that runs a command in this database';

CREATE OR REPLACE FUNCTION @extschema@.parflow_schedule(job_name text, cron_expr text, workflow text,
                                              flags text[] DEFAULT '{}', priority integer DEFAULT 2)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, parflow, pg_temp AS $$
BEGIN
    PERFORM parflow._require_cron();
    PERFORM parflow._current_version(workflow);
    IF priority IS NULL OR priority NOT BETWEEN 0 AND 3 THEN
        RAISE EXCEPTION 'priority must be between 0 and 3' USING ERRCODE = 'invalid_parameter_value',
            DETAIL = format('Found %s.', coalesce(priority::text, 'NULL'));
    END IF;
    IF array_position(coalesce(flags, '{}'), NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'flags must not contain nulls' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    -- every name is a quoted literal in the job's command
    RETURN parflow._cron_job(job_name, cron_expr,
        format('SELECT %I.parflow_start(%L, %L::text[], %s)', '@extschema@', workflow, coalesce(flags, '{}'), priority));
END
$$;
COMMENT ON FUNCTION @extschema@.parflow_schedule(text, text, text, text[], integer) IS
    'Create (or replace) a pg_cron job that starts a run of a workflow on a cron schedule; returns the job id; needs pg_cron';

CREATE OR REPLACE FUNCTION @extschema@.parflow_unschedule(job_name text) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, parflow, pg_temp AS $$
DECLARE
    ok boolean;
BEGIN
    PERFORM parflow._require_cron();
    IF job_name IS NULL THEN
        RAISE EXCEPTION 'job name must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF NOT EXISTS (SELECT FROM cron.job j WHERE j.jobname = job_name AND j.database = current_database()) THEN
        RAISE EXCEPTION 'no pg_cron job "%" in this database', job_name USING ERRCODE = 'undefined_object',
            HINT = 'SELECT jobname, schedule, command FROM cron.job lists them.';
    END IF;
    EXECUTE 'SELECT cron.unschedule($1)' INTO ok USING job_name;
    RETURN ok;
END
$$;
COMMENT ON FUNCTION @extschema@.parflow_unschedule(text) IS 'Remove a pg_cron job created by parflow_schedule (or parflow_schedule_housekeeping); needs pg_cron';

CREATE OR REPLACE FUNCTION @extschema@.parflow_schedule_housekeeping(cron_expr text DEFAULT '17 3 * * *') RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, parflow, pg_temp AS $$
BEGIN
    RETURN parflow._cron_job('parflow_housekeeping', cron_expr,
                             format('SELECT %I.parflow_housekeeping()', '@extschema@'));
END
$$;
COMMENT ON FUNCTION @extschema@.parflow_schedule_housekeeping(text) IS
    'Create (or replace) the pg_cron job parflow_housekeeping that deletes events older than parflow.retention (default daily at 03:17); needs pg_cron';
