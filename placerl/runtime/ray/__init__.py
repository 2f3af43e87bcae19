"""The Ray runtime: roles in worker processes placed by a Plan (see ``runtime.py``).

``batching`` (split/gather) and ``data_parallel`` (replicas/FSDP, the global loss) import no Ray;
``host`` is the worker process body, ``group`` the Ray actors and their faults, ``handles`` the
controller-side roles.
"""
