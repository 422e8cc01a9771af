-- Metrics: request figures as of an event time. Grain: one row per (category, platform,
-- authority) with a request issued at or before $as_of; figures with nothing to count are 0.
-- @param as_of TIMESTAMPTZ, required (the data horizon unless the caller asks for another)
-- issued: issued_at <= as_of. open, overdue, declined: status in request_status_as_of(as_of).
-- deadlines_due: deadline_at + 1 ms <= as_of, not withdrawn before the deadline (the
-- denominator of the breach rate). breaches: sla_breaches rows with breached_at <= as_of.
WITH issued AS (
    SELECT category, platform, authority,
           count(*) AS issued,
           count(*) FILTER (
               WHERE deadline_at + INTERVAL 1 MILLISECOND <= $as_of::TIMESTAMPTZ
                 AND (withdrawn_at IS NULL OR withdrawn_at > deadline_at)
           ) AS deadlines_due
    FROM requests
    WHERE issued_at <= $as_of::TIMESTAMPTZ
    GROUP BY ALL
), status AS (
    SELECT category, platform, authority,
           count(*) FILTER (WHERE status = 'OPEN') AS open,
           count(*) FILTER (WHERE status = 'OVERDUE') AS overdue,
           count(*) FILTER (WHERE status = 'DECLINED') AS declined
    FROM request_status_as_of($as_of::TIMESTAMPTZ)
    GROUP BY ALL
), breaches AS (
    SELECT category, platform, authority, count(*) AS breaches
    FROM sla_breaches
    WHERE breached_at <= $as_of::TIMESTAMPTZ
    GROUP BY ALL
)
SELECT category, platform, authority, i.issued,
       coalesce(s.open, 0) AS open,
       coalesce(s.overdue, 0) AS overdue,
       coalesce(s.declined, 0) AS declined,
       i.deadlines_due,
       coalesce(b.breaches, 0) AS breaches
FROM issued AS i
LEFT JOIN status AS s USING (category, platform, authority)
LEFT JOIN breaches AS b USING (category, platform, authority)
ORDER BY category, platform, authority
