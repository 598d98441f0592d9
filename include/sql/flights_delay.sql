-- Training extract of the flights_delay pipeline: every scheduled flight before the run's as-of
-- time, with only what is known before departure, plus the label.
-- Label: late = arrived 15+ minutes late. Cancelled flights (no dep_time) and diverted flights
-- (departed but no arr_delay) count as late: for the traveller they are worse than a delay, and
-- dropping them would teach the model that bad-weather days are on time.
-- The as_of parameter is bound by mlpipe to the run's logical date, so a re-run reads the same rows.
SELECT
    id,
    time_hour,
    carrier,
    origin,
    dest,
    distance,
    sched_dep_time,
    sched_arr_time,
    CASE WHEN arr_delay IS NULL OR arr_delay >= 15 THEN 1 ELSE 0 END AS is_late
FROM flights
WHERE time_hour < :as_of
ORDER BY time_hour, id
