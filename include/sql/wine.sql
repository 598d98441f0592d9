-- Training extract of the wine pipeline: every wine recorded before the run's as-of time, its
-- thirteen chemical measurements and its cultivar (the label).
-- The as_of parameter is bound by mlpipe to the run's logical date, so a re-run reads the same rows.
SELECT
    id,
    recorded_at,
    alcohol,
    malic_acid,
    ash,
    alcalinity_of_ash,
    magnesium,
    total_phenols,
    flavanoids,
    nonflavanoid_phenols,
    proanthocyanins,
    color_intensity,
    hue,
    od280_od315,
    proline,
    cultivar
FROM wine
WHERE recorded_at < :as_of
ORDER BY id
