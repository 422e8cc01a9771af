-- Batch of suite backlog_daily. Grain: one row per (sample day, category, platform,
-- authority): the backlog as the table says it was that day (the series' last row at or
-- before it, zeros before its first) beside the same counts recomputed from the lifecycle
-- with request_status_as_of. Sample days: the table's last day and about 12 spread evenly
-- (recounting every day would cost a status scan per day). Also the table's own rows'
-- arithmetic: parts_sum = open + overdue + declined.
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
), recounted AS (
    SELECT s.as_of, r.category, r.platform, r.authority,
           count(*) FILTER (WHERE r.status = 'OPEN') AS open,
           count(*) FILTER (WHERE r.status = 'OVERDUE') AS overdue,
           count(*) FILTER (WHERE r.status = 'DECLINED') AS declined
    FROM sample AS s, LATERAL (SELECT * FROM request_status_as_of(s.as_of)) AS r
    GROUP BY ALL
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
