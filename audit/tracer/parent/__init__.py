"""The parent's side of tracing: the ``kvaudit`` process, which never imports torch.

* :mod:`.target`: a target resolved and pre-checked before any worker starts;
* :mod:`.client`: the worker subprocess and its line-based JSON protocol;
* :mod:`.session`: one worker for any number of targets and presses, and what each reply means
  for the report (a :class:`kvaudit.tracer.outcome.TraceOutcome` per press).
"""
