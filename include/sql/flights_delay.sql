-- Training extract of the flights_delay pipeline: every scheduled flight before the run's as-of
-- time, with only what is known 3 hours before departure, plus the label.
-- Label: late = arrived 15+ minutes late. Cancelled flights (no dep_time) and diverted flights
-- (departed but no arr_delay) count as late: for the traveller they are worse than a delay, and
-- dropping them would teach the model that bad-weather days are on time.
-- Weather, as of 3 hours before departure: the latest hourly observation at the flight's origin
-- taken at or before its scheduled departure hour (time_hour) minus 3 hours, the prediction time;
-- never a later one (weather_time_hour says which; NULLs when the airport has none). The lead is
-- whole hours on the integer epoch_hour column both tables carry (hours since 1970-01-01 00:00 UTC),
-- so the same SQL runs on SQLite, PostgreSQL and MySQL, whose date arithmetic differs: the bound
-- is computed per flight (the newest epoch_hour of the (origin, epoch_hour) index at or below the
-- flight's minus 3: ORDER BY ... DESC LIMIT 1, which MariaDB answers from the index where max()
-- made it scan an airport's observations per flight, 25x slower), then joined.
-- Not temp and dewp (the table has them): absolute temperatures say the season more than the
-- weather; a champion trained in winter sees summer readings out of its range, and the validation
-- against the champion's data (stages/reference.py) would stop every spring run on them.
-- The as_of parameter is bound by mlpipe to the run's logical date, so a re-run reads the same rows.
SELECT
    f.id,
    f.time_hour,
    f.carrier,
    f.origin,
    f.dest,
    f.distance,
    f.sched_dep_time,
    f.sched_arr_time,
    w.time_hour AS weather_time_hour,
    w.humid,
    w.wind_dir,
    w.wind_speed,
    w.wind_gust,
    w.precip,
    w.pressure,
    w.visib,
    CASE WHEN f.arr_delay IS NULL OR f.arr_delay >= 15 THEN 1 ELSE 0 END AS is_late
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
