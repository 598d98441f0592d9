-- Training extract of the diabetes pipeline: every patient recorded before the run's as-of time,
-- the ten baseline measurements and the one-year progression (the label).
-- The as_of parameter is bound by mlpipe to the run's logical date, so a re-run reads the same rows.
SELECT
    id,
    recorded_at,
    age,
    sex,
    bmi,
    bp,
    s1,
    s2,
    s3,
    s4,
    s5,
    s6,
    progression
FROM diabetes
WHERE recorded_at < :as_of
ORDER BY id
