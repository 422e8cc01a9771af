-- Metrics: quarantined records by reason. Grain: one row per quarantine.reason_code present.
SELECT reason_code, count(*) AS records
FROM quarantine
GROUP BY reason_code
ORDER BY reason_code
