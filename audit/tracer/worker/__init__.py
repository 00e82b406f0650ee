"""The worker process: one per trace session, started by the parent, that forks a child per press.

* :mod:`.serve`: the request loop (``init``, ``list``, ``trace``) and what each reply means;
* :mod:`.process`: forking a child with a timeout and a memory cap, and killing and reaping
  whatever a press leaves behind;
* :mod:`.modelload`: the model the children share.

``python -m kvaudit.tracer.worker`` runs :func:`.serve.main`. Importing this package imports
nothing heavy: torch comes with the ``init`` request.
"""
