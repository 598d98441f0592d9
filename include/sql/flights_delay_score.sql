-- Rows the flights_delay_score DAG scores: every flight scheduled before the run's as-of time, with
-- the key and the features the model takes (no label: a flight is scored before it lands).
-- The champion skips flights it has already scored (by id); see docs/operations.md, "Batch scoring".
SELECT
    id,
    time_hour,
    carrier,
    origin,
    dest,
    distance
FROM flights
WHERE time_hour < :as_of
ORDER BY time_hour, id
