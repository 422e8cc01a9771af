-- Batch of suite backlog_daily. Grain: one row per (sample day, category, platform,
-- authority): the backlog as the table says it was that day (the series' last row at or
-- before it, zeros before its first) beside the same counts recomputed from the lifecycle
-- as request_status_as_of(as_of) gives them. Sample days: the table's last day and about 12
-- spread evenly. Also the table's own rows' arithmetic: parts_sum = open + overdue + declined.
-- The recount does not call the macro once per sample day (a status row per request and
-- day, all in memory at once): it joins the sample days to each transition's span, the
-- times at which it is its request's latest, which is the macro's arg_max(disposition, seq)
-- row for row (tests/pipelines/test_quality_backlog.py holds the two together).
WITH days AS (
    SELECT DISTINCT as_of FROM backlog_daily
), sample AS (
    SELECT as_of FROM (
        SELECT as_of, row_number() OVER (ORDER BY as_of) AS n, count(*) OVER () AS total
        FROM days
    )
    WHERE n = total OR n % greatest(total // 12, 1) = 0
), stored AS (
    SELECT s.as_of, b.category, b.platform, b.authority,
           arg_max(b.open, b.as_of) AS open, arg_max(b.overdue, b.as_of) AS overdue,
           arg_max(b.declined, b.as_of) AS declined,
           arg_max(b.unresolved, b.as_of) AS unresolved,
           arg_max(b.open + b.overdue + b.declined, b.as_of) AS parts_sum,
           min(least(b.open, b.overdue, b.declined)) AS smallest_count
    FROM sample AS s
    JOIN backlog_daily AS b ON b.as_of <= s.as_of
    GROUP BY ALL
), spans AS (
    -- A transition is its request's latest (the highest seq with transition_at <= as_of)
    -- for as_of from its own transition_at until the earliest transition_at of a later seq.
    -- Of transitions at one instant the highest seq holds (the others' spans are empty).
    SELECT request_id, disposition, transition_at AS valid_from,
           min(transition_at) OVER (PARTITION BY request_id ORDER BY seq
               ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING) AS valid_to
    FROM lifecycle_transitions
), unresolved AS (
    SELECT s.as_of, r.category, r.platform, r.authority,
           count(*) FILTER (WHERE p.disposition = 'OPEN' AND s.as_of <= r.deadline_at) AS open,
           count(*) FILTER (WHERE p.disposition = 'OPEN' AND s.as_of > r.deadline_at) AS overdue,
           count(*) FILTER (WHERE p.disposition = 'DECLINED') AS declined
    FROM sample AS s
    JOIN spans AS p ON p.valid_from <= s.as_of AND (p.valid_to IS NULL OR s.as_of < p.valid_to)
    JOIN requests AS r USING (request_id)
    WHERE p.disposition IN ('OPEN', 'DECLINED')
    GROUP BY ALL
), series_start AS (
    -- The macro has a row for every request with a transition at or before as_of, so a
    -- series is recounted (zeros included) from its requests' first transition on.
    SELECT r.category, r.platform, r.authority, min(t.transition_at) AS first_at
    FROM lifecycle_transitions AS t
    JOIN requests AS r USING (request_id)
    GROUP BY ALL
), recounted AS (
    SELECT s.as_of, f.category, f.platform, f.authority,
           coalesce(u.open, 0) AS open, coalesce(u.overdue, 0) AS overdue,
           coalesce(u.declined, 0) AS declined
    FROM sample AS s
    JOIN series_start AS f ON f.first_at <= s.as_of
    LEFT JOIN unresolved AS u USING (as_of, category, platform, authority)
)
SELECT
    coalesce(st.as_of, rc.as_of) AS as_of,
    coalesce(st.category, rc.category) AS category,
    coalesce(st.platform, rc.platform) AS platform,
    coalesce(st.authority, rc.authority) AS authority,
    coalesce(st.open, 0) AS open,
    coalesce(st.overdue, 0) AS overdue,
    coalesce(st.declined, 0) AS declined,
    coalesce(st.unresolved, 0) AS unresolved,
    coalesce(st.parts_sum, 0) AS parts_sum,
    coalesce(st.smallest_count, 0) AS smallest_count,
    coalesce(rc.open, 0) AS recounted_open,
    coalesce(rc.overdue, 0) AS recounted_overdue,
    coalesce(rc.declined, 0) AS recounted_declined
FROM stored AS st
FULL JOIN recounted AS rc USING (as_of, category, platform, authority)
