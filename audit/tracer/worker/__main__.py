"""``python -m kvaudit.tracer.worker``: the trace worker's entry point (:mod:`kvaudit.tracer.worker.serve`)."""

from .serve import main

main()
