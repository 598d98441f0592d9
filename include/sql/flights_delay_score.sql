-- Rows the flights_delay_score DAG scores: every flight scheduled before the run's as-of time, with
-- the key and the features the model takes (no label: a flight is scored before it lands).
-- The weather is joined as in flights_delay.sql: the latest observation at the origin taken at or
-- before the scheduled departure hour minus 3 hours (keep the two queries in step).
-- The champion skips flights it has already scored (by id); see docs/operations.md, "Batch scoring".
SELECT
    f.id,
    f.time_hour,
    f.carrier,
    f.origin,
    f.dest,
    f.distance,
    w.humid,
    w.wind_dir,
    w.wind_speed,
    w.wind_gust,
    w.precip,
    w.pressure,
    w.visib
FROM (
    SELECT
        flights.*,
        (SELECT o.epoch_hour FROM weather o
         WHERE o.origin = flights.origin AND o.epoch_hour <= flights.epoch_hour - 3
         ORDER BY o.epoch_hour DESC LIMIT 1) AS weather_hour
    FROM flights
    WHERE flights.time_hour < :as_of
) f
LEFT JOIN weather w ON w.origin = f.origin AND w.epoch_hour = f.weather_hour
ORDER BY f.time_hour, f.id
