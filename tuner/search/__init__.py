"""The Optuna side of a job: stages as studies, the search space, samplers and pruners, one trial.

A stage is one Optuna study; earlier stages' best values are fixed and their
trials warm the sampler. Where a stage's trials run is a backend's business
(``tuner.backends``): this package hands them out (``StageRun``) and records them.
"""

from tuner.search._l1_path import (
    find_lambda_max,
    gradient_lambda_max,
    null_state,
    one_se_point,
    path_summary,
    path_values,
    run_path,
)
from tuner.search._samplers import PRUNERS, SAMPLERS, WARM_STARTABLE, WarmStartSampler, make_pruner, make_sampler
from tuner.search._space import encode, grid_space, knob_names, suggest
from tuner.search._stages import (
    BUDGET_STATES,
    StageOutcome,
    StageRun,
    best_of,
    budget_used,
    close_stage,
    complete_trials,
    fail_interrupted,
    open_stage,
)
from tuner.search._trial import TrialOutcome, objective_values, run_trial

__all__ = [
    "BUDGET_STATES",
    "PRUNERS",
    "SAMPLERS",
    "WARM_STARTABLE",
    "StageOutcome",
    "StageRun",
    "TrialOutcome",
    "WarmStartSampler",
    "best_of",
    "budget_used",
    "close_stage",
    "complete_trials",
    "encode",
    "fail_interrupted",
    "find_lambda_max",
    "gradient_lambda_max",
    "grid_space",
    "knob_names",
    "make_pruner",
    "make_sampler",
    "null_state",
    "objective_values",
    "one_se_point",
    "open_stage",
    "path_summary",
    "path_values",
    "run_path",
    "run_trial",
    "suggest",
]
