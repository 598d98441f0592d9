"""The catalogues a spec chooses from: the estimators it may name and the metrics of each task kind.

Plain data: the schema (:mod:`mlpipe.spec.schema`) checks a spec's choices against it, and the stages
build estimators, feature pipelines and scorers from it.
"""

from __future__ import annotations

from typing import Literal

TaskType = Literal["binary", "multiclass", "regression"]
Direction = Literal["maximize", "minimize"]
Encoding = Literal["onehot", "ordinal"]

# Estimators a spec may name, with the task kinds they serve and the categorical encoding their
# feature pipeline uses: linear and distance-based models get one-hot + scaling, tree ensembles get
# ordinal codes (HistGradientBoosting also treats them as native categories).
ESTIMATORS: dict[str, tuple[frozenset[str], Encoding]] = {
    "sklearn.linear_model.LogisticRegression": (frozenset({"binary", "multiclass"}), "onehot"),
    "sklearn.linear_model.SGDClassifier": (frozenset({"binary", "multiclass"}), "onehot"),
    "sklearn.linear_model.RidgeClassifier": (frozenset({"binary", "multiclass"}), "onehot"),
    "sklearn.neighbors.KNeighborsClassifier": (frozenset({"binary", "multiclass"}), "onehot"),
    "sklearn.naive_bayes.GaussianNB": (frozenset({"binary", "multiclass"}), "onehot"),
    "sklearn.tree.DecisionTreeClassifier": (frozenset({"binary", "multiclass"}), "ordinal"),
    "sklearn.ensemble.RandomForestClassifier": (frozenset({"binary", "multiclass"}), "ordinal"),
    "sklearn.ensemble.ExtraTreesClassifier": (frozenset({"binary", "multiclass"}), "ordinal"),
    "sklearn.ensemble.GradientBoostingClassifier": (frozenset({"binary", "multiclass"}), "ordinal"),
    "sklearn.ensemble.HistGradientBoostingClassifier": (frozenset({"binary", "multiclass"}), "ordinal"),
    "sklearn.dummy.DummyClassifier": (frozenset({"binary", "multiclass"}), "ordinal"),
    "sklearn.linear_model.LinearRegression": (frozenset({"regression"}), "onehot"),
    "sklearn.linear_model.Ridge": (frozenset({"regression"}), "onehot"),
    "sklearn.linear_model.Lasso": (frozenset({"regression"}), "onehot"),
    "sklearn.linear_model.ElasticNet": (frozenset({"regression"}), "onehot"),
    "sklearn.linear_model.HuberRegressor": (frozenset({"regression"}), "onehot"),
    "sklearn.neighbors.KNeighborsRegressor": (frozenset({"regression"}), "onehot"),
    "sklearn.tree.DecisionTreeRegressor": (frozenset({"regression"}), "ordinal"),
    "sklearn.ensemble.RandomForestRegressor": (frozenset({"regression"}), "ordinal"),
    "sklearn.ensemble.ExtraTreesRegressor": (frozenset({"regression"}), "ordinal"),
    "sklearn.ensemble.GradientBoostingRegressor": (frozenset({"regression"}), "ordinal"),
    "sklearn.ensemble.HistGradientBoostingRegressor": (frozenset({"regression"}), "ordinal"),
    "sklearn.dummy.DummyRegressor": (frozenset({"regression"}), "ordinal"),
}

# Metrics by task, with the direction in which they improve.
METRICS: dict[str, dict[str, Direction]] = {
    "binary": {
        "roc_auc": "maximize",
        "average_precision": "maximize",
        "log_loss": "minimize",
        "brier": "minimize",
        "accuracy": "maximize",
        "balanced_accuracy": "maximize",
        "f1": "maximize",
        "precision": "maximize",
        "recall": "maximize",
    },
    "multiclass": {
        "accuracy": "maximize",
        "balanced_accuracy": "maximize",
        "f1_macro": "maximize",
        "f1_weighted": "maximize",
        "log_loss": "minimize",
        "roc_auc_ovr": "maximize",
    },
    "regression": {
        "rmse": "minimize",
        "mae": "minimize",
        "r2": "maximize",
        "mape": "minimize",
        "median_ae": "minimize",
    },
}

# The scikit-learn scorer a search ranks by, per metric (sklearn's scorers are "greater is better",
# so metrics that improve downwards are negated: neg_*).
SCORERS: dict[str, str] = {
    "roc_auc": "roc_auc",
    "average_precision": "average_precision",
    "log_loss": "neg_log_loss",
    "brier": "neg_brier_score",
    "accuracy": "accuracy",
    "balanced_accuracy": "balanced_accuracy",
    "f1": "f1",
    "precision": "precision",
    "recall": "recall",
    "f1_macro": "f1_macro",
    "f1_weighted": "f1_weighted",
    "roc_auc_ovr": "roc_auc_ovr",
    "rmse": "neg_root_mean_squared_error",
    "mae": "neg_mean_absolute_error",
    "r2": "r2",
    "mape": "neg_mean_absolute_percentage_error",
    "median_ae": "neg_median_absolute_error",
}
