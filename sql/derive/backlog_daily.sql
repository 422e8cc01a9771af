-- Derived: backlog_daily from the landed `requests` and `lifecycle_transitions`, row for row
-- what the batch pipeline's BacklogByCategory writes (the streaming path refreshes it here).
-- Grain: one row per (as_of midnight UTC, category, platform, authority), from the first to
-- the last day on which that series gets a change (a day whose changes cancel out counts;
-- days between changes are filled in, zeros included); it holds steady after.
-- open / overdue / declined: requests with that status as of the midnight (transitions with
-- transition_at <= as_of); unresolved = open + overdue + declined.
-- @param through  TIMESTAMPTZ: only rows with as_of <= through (NULL: every row)
-- Days are counted from the epoch in microseconds: the result does not depend on the
-- session TimeZone. Transitions of a request not (yet) in `requests` are left out.
WITH spans AS (
    -- A disposition holds from its transition until the request's next transition.
    SELECT
        t.request_id,
        t.disposition,
        t.transition_at AS start_at,
        lead(t.transition_at) OVER (PARTITION BY t.request_id ORDER BY t.seq) AS end_at
    FROM lifecycle_transitions AS t
), counted AS (
    -- Of several transitions at one instant only the last holds (as in status_segments;
    -- a zero-length span could not straddle a midnight anyway).
    SELECT
        r.category,
        r.platform,
        r.authority,
        s.disposition,
        s.start_at,
        s.end_at,
        r.deadline_at + INTERVAL 1 MILLISECOND AS overdue_from
    FROM spans AS s
    JOIN requests AS r USING (request_id)
    WHERE s.disposition IN ('OPEN', 'DECLINED')
      AND (s.end_at IS NULL OR s.end_at <> s.start_at)
), segments AS (
    -- An OPEN span is OPEN before deadline + 1 ms and OVERDUE from then on.
    SELECT category, platform, authority, 'OPEN' AS status, start_at,
        CASE WHEN end_at IS NULL OR end_at > overdue_from THEN overdue_from ELSE end_at END
            AS end_at
    FROM counted
    WHERE disposition = 'OPEN' AND start_at < overdue_from
    UNION ALL
    SELECT category, platform, authority, 'OVERDUE', greatest(start_at, overdue_from), end_at
    FROM counted
    WHERE disposition = 'OPEN'
      AND (start_at >= overdue_from OR end_at IS NULL OR end_at > overdue_from)
    UNION ALL
    SELECT category, platform, authority, 'DECLINED', start_at, end_at
    FROM counted
    WHERE disposition = 'DECLINED'
), segment_days AS (
    -- The first midnight at or after t, as days since the epoch: the first snapshot seeing t.
    -- (`//` truncates toward zero, which is already the ceiling below the epoch.)
    SELECT category, platform, authority, status,
        epoch_us(start_at) // 86400000000
            + CAST(epoch_us(start_at) % 86400000000 > 0 AS BIGINT) AS start_day,
        epoch_us(end_at) // 86400000000
            + CAST(epoch_us(end_at) % 86400000000 > 0 AS BIGINT) AS end_day
    FROM segments
), deltas AS (
    -- A segment no midnight falls inside (start and end before the same one) counts nowhere.
    SELECT category, platform, authority, status, start_day AS day, 1 AS delta
    FROM segment_days
    WHERE end_day IS NULL OR end_day <> start_day
    UNION ALL
    SELECT category, platform, authority, status, end_day, -1
    FROM segment_days
    WHERE end_day <> start_day
), changes AS (
    SELECT category, platform, authority, day,
        coalesce(sum(delta) FILTER (WHERE status = 'OPEN'), 0) AS open_delta,
        coalesce(sum(delta) FILTER (WHERE status = 'OVERDUE'), 0) AS overdue_delta,
        coalesce(sum(delta) FILTER (WHERE status = 'DECLINED'), 0) AS declined_delta
    FROM deltas
    GROUP BY category, platform, authority, day
), running AS (
    -- Counts from each change day up to the day before the series' next change.
    SELECT category, platform, authority, day,
        lead(day, 1, day + 1) OVER series_days AS next_day,
        CAST(sum(open_delta) OVER series_to_date AS BIGINT) AS open,
        CAST(sum(overdue_delta) OVER series_to_date AS BIGINT) AS overdue,
        CAST(sum(declined_delta) OVER series_to_date AS BIGINT) AS declined
    FROM changes
    WINDOW
        series_days AS (PARTITION BY category, platform, authority ORDER BY day),
        series_to_date AS (
            PARTITION BY category, platform, authority ORDER BY day
            ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
        )
), daily AS (
    SELECT unnest(range(day, next_day)) AS day, category, platform, authority,
        open, overdue, declined
    FROM running
)
SELECT
    make_timestamptz(day * 86400000000) AS as_of,
    category,
    platform,
    authority,
    open,
    overdue,
    declined,
    open + overdue + declined AS unresolved
FROM daily
WHERE CAST($through AS TIMESTAMPTZ) IS NULL
   OR make_timestamptz(day * 86400000000) <= CAST($through AS TIMESTAMPTZ)
ORDER BY as_of, category, platform, authority
