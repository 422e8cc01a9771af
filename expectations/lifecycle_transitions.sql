-- Batch of suite lifecycle_transitions. Grain: one row per transition of the requests whose
-- history landed in the batch under validation (every row when getvariable('validate_all')).
-- seq_expected: the row's position in its request's history (0, 1, ...); time_goes_back:
-- the transition is earlier than the one before it.
SELECT
    t.*,
    row_number() OVER w - 1 AS seq_expected,
    coalesce(t.transition_at < lag(t.transition_at) OVER w, false) AS time_goes_back,
    (t.seq = 0) = (t.transition = 'OPENED') AS opened_first_and_only_first,
    t.transition_id = t.request_id || '#' || t.seq AS transition_id_is_request_seq,
    t.request_id IN (SELECT request_id FROM requests) AS request_landed
FROM lifecycle_transitions AS t
WHERE getvariable('validate_all')
   OR t.request_id IN (SELECT key FROM validation_scope WHERE table_name = 'requests')
WINDOW w AS (PARTITION BY t.request_id ORDER BY t.seq)
