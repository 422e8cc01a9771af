-- The oldest unresolved requests as of a time.
-- Grain: one row per request, oldest first.
-- @param as_of  timestamp (UTC)
-- @param limit  number of rows (default 20)
SELECT request_id, platform, content_id, category, authority, jurisdiction, status,
       issued_at, deadline_at,
       round(epoch(CAST($as_of AS TIMESTAMPTZ) - issued_at) / 86400, 1) AS age_days
FROM request_status_as_of(CAST($as_of AS TIMESTAMPTZ))
WHERE unresolved
ORDER BY issued_at, request_id
LIMIT CAST($limit AS INTEGER);
