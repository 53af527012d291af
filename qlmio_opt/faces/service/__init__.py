"""The scheduling service (``qlmio-opt serve``): a site's :class:`~qlmio_opt.Scheduler` over HTTP
with Prometheus metrics, for gateways that are not written in Python (docs/service.md).

:mod:`.core` is the service without HTTP (validation, the lock, the clock, the fallback, the state
file), :mod:`.app` its FastAPI face, :mod:`.run` the uvicorn server, :mod:`.relay` where the app's
calls are decided (worker threads, or the decider process of :mod:`.decider`). Needs the ``serve``
extra.
"""
