"""The Ray Tune backend: a stage's trials run as Ray Tune trials, the Optuna side kept in the driver.

``_driver`` starts the stage on Tune, ``_searcher`` hands Tune the trials the
``StageRun`` asks for and tells the study how each ended, ``_trainable`` is what
a Ray worker runs, ``_mailbox`` the actor where the driver answers a batch's requests for
members. Importing this package imports Ray: the backend registry (``tuner.backends``)
loads it only when a job asks for ``backend: ray``.
"""

from tuner.backends.ray._driver import ensure_ray, run_ray, worker_storage_url

__all__ = ["ensure_ray", "run_ray", "worker_storage_url"]
