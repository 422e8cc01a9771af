-- Deadline breach rate by category and month of the deadline.
-- Grain: one row per (category, month) with at least one deadline passed by the data
-- horizon; rate = breached / due (a request is breached when unresolved at its deadline).
SELECT
    category,
    strftime(date_trunc('month', deadline_at), '%Y-%m') AS month,
    count(*) AS due,
    count(*) FILTER (WHERE breached) AS breached,
    round(count(*) FILTER (WHERE breached) / count(*), 4) AS breach_rate
FROM requests
WHERE deadline_at < (SELECT horizon FROM data_horizon)
GROUP BY ALL
ORDER BY month, category;
