-- View: orphan_actions. Grain: one row per action on content no request targets (yet).
-- Not an error: a platform may act on its own, or the request may arrive later.
CREATE OR REPLACE VIEW orphan_actions AS
SELECT a.*
FROM action_events AS a
ANTI JOIN requests AS r ON r.platform = a.platform AND r.content_id = a.content_id;
