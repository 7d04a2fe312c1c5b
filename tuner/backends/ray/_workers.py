"""Idle workers for the next job: once a job's Tune run ends, the local raylet starts workers for the job after it.

Ray gives an actor a worker process that no task or actor has used (ray-project/ray#28773), and a Tune
trainable is an actor that ends with its Tune run. A job's trainables and its ``Mailbox`` so use up the idle
workers the local cluster started with (``WARM_WORKERS``), and the raylet starts new ones only when the next
job's actors ask: each then waits for a process that imports torch and regtune (3.3 s measured, on 2 cores,
while the search trains). On one cluster, a later job of ``bench/search_speed.py`` trained at 0.69× the Optuna
backend's speed, the first at 0.97×.

Ray prestarts workers only as the raylet starts (``num_prestart_python_workers``), and its Python API has no
call for more. The raylet answers a ``PrestartWorkers`` call over gRPC (``grpcio``, in regtune's ``ray``
extra), which starts workers for this driver's Ray job that wait, unused, for the next job's actors. They start
once the job's report is written (``run_ray`` returns the call for ``run_job`` to make then), when the cores are
free: started beside the report, their imports slowed its work from 11.9 to 17.8 s. A job that comes at once
takes them as they start, no later than workers of its own would have been (measured: 57.8 epochs/s against
61.9, within the runs' spread); one that comes after they are up trained at 96.2 epochs/s against 72.0.
"""

from __future__ import annotations

import logging
from typing import Any

import ray

__all__ = ["KEEP_ALIVE_S", "restock"]

log = logging.getLogger(__name__)

KEEP_ALIVE_S = 600
"""How long the raylet keeps a restocked worker that no actor took, beyond its soft limit of idle workers
(``WARM_WORKERS``): ten minutes, then it ends those above that limit (each holds about 250 MB)."""


def restock(count: int) -> bool:
    """Ask this node's raylet to start ``count`` workers for this process's Ray job, with nothing in their
    runtime environment (as Tune's trainables and the ``Mailbox`` have it); they import what every worker of the
    cluster imports as it starts (``WORKER_MODULES``). Returns at once, as the workers start.

    Returns:
        Whether the raylet took the call. When it did not (no ``grpcio``, another Ray, a raylet that refused), the
        next job's actors start their workers as Ray does by default: the call is logged, never raised.
    """
    try:
        from ray._private.grpc_utils import init_grpc_channel
        from ray.core.generated import common_pb2, node_manager_pb2, node_manager_pb2_grpc, runtime_environment_pb2
    except ImportError as exc:  # grpcio is missing (a Ray install without regtune's ray extra), or another Ray
        log.info("workers are not restocked for the next Ray job (%s): its actors start their own", exc)
        return False
    try:
        context = ray.get_runtime_context()
        node = next(n for n in ray.nodes() if n["NodeID"] == context.get_node_id())
        messages: Any = node_manager_pb2  # Ray's generated protobuf modules come without type stubs
        common: Any = common_pb2
        environments: Any = runtime_environment_pb2
        request = messages.PrestartWorkersRequest(
            language=common.Language.PYTHON, job_id=bytes.fromhex(context.get_job_id()),
            runtime_env_info=environments.RuntimeEnvInfo(serialized_runtime_env="{}"),
            keep_alive_duration_secs=KEEP_ALIVE_S, num_workers=count)
        # Ray's channel: its token (a local cluster has token auth too) and TLS settings, as its own clients
        channel = init_grpc_channel(f"{node['NodeManagerAddress']}:{node['NodeManagerPort']}")
        try:
            node_manager_pb2_grpc.NodeManagerServiceStub(channel).PrestartWorkers(request, timeout=5)
        finally:
            channel.close()
    except Exception as exc:  # a job has ended by now: what failed here must not fail it
        log.warning("could not restock the Ray workers for the next job (%s: %s): its actors start their own",
                    type(exc).__name__, exc)
        return False
    log.debug("restocked %d Ray worker(s) for the next job", count)
    return True
