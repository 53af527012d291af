"""The ``serve`` command: a site's Scheduler over HTTP (the ``serve`` extra; docs/service.md)."""

from __future__ import annotations

import argparse
import functools

from qlmio_opt.faces.cli import options as opt
from qlmio_opt.faces.cli.console import say

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (fast start)
if TYPE_CHECKING:
    from typing import Any

    from qlmio_opt.faces.cli.options import Commands as Subparsers

SERVE_HINT = "pip install 'qlmio-opt[serve]'"

DEFAULT_DECIDER = "process"
"""Where ``serve`` decides windows by default: ``benchmarks/service_load.py --sizes 100 --windows
200 --decider process|thread`` (8 clients), run in turn four times on the shared 2-core machine,
gave the decider process an overhead p50 / p99 of 9.1 / 47, 8.1 / 43, 7.3 / 43 and 9.3 / 30 ms
against 15 / 139, 14 / 105, 14 / 91 and 16 / 103 ms in threads (the last pair with the clients
connected before they start); with one client the two were alike (docs/service.md "How
fast")."""


def register(commands: Subparsers) -> None:
    """Add ``serve`` to the ``qlmio-opt`` parser."""
    p = commands.add_parser(
        "serve",
        help="Serve a site's scheduler over HTTP: windows in, decisions out, Prometheus metrics.",
        description="Serve a site's scheduler over HTTP (docs/service.md): POST /v1/windows, "
        "/v1/completions and /v1/nodes/ID/state; GET /v1/state, /healthz and /metrics; in "
        "windowing mode POST /v1/requests (one request at a time), GET /v1/requests/ID and POST "
        "/v1/clock. A site "
        "is an instance file; its requests, if any, are ignored. SIGTERM or Ctrl-C drains the "
        "calls in flight and stops.",
    )
    p.add_argument("--site", type=opt.path, required=True, help="Site: an instance JSON file.")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="Address to listen on (default loopback only; 0.0.0.0 listens on every interface).",
    )
    p.add_argument(
        "--port", type=opt.integer(0, 65535), default=8000, help="Port (0: any free port)."
    )
    p.add_argument(
        "--solver",
        default="auto",
        help="greedy, exact, auto (exact within the time limit, else the greedy) or any "
        "registered solver.",
    )
    p.add_argument(
        "--predictors",
        default="analytic",
        help="Predictors: analytic, learned (shipped), or a model saved by `train`.",
    )
    p.add_argument(
        "--window-s",
        type=opt.number(1e-3, 86_400),
        help="Window length in seconds (default: the site's window_s).",
    )
    opt.add_time_limit(p, None, "Seconds per window for the solver (auto: default 1).")
    opt.add_seed(p)
    p.add_argument(
        "--state-file",
        type=opt.path,
        help="Keep the scheduler's state in this file (written atomically after every change, "
        "restored at start).",
    )
    p.add_argument(
        "--token-file",
        type=opt.path,
        help="File holding a bearer token every call but /healthz must present.",
    )
    p.add_argument(
        "--max-body-mb",
        type=opt.number(1e-3, 4096),
        default=16.0,
        help="Refuse (413) a call whose body is larger (MiB; default 16: over 10,000 requests).",
    )
    p.add_argument(
        "--decider",
        choices=("thread", "process"),
        default=DEFAULT_DECIDER,
        help="Where windows are decided: in a process of their own, the HTTP calls relayed to it "
        "(process), or in worker threads of the serving process (thread). Default: "
        f"{DEFAULT_DECIDER}.",
    )
    opt.add_catalog(p)
    p.set_defaults(run=serve)


def serve(args: argparse.Namespace) -> int:
    try:
        from qlmio_opt.faces.service.relay import DeciderLost, DeciderProcess, InThread
        from qlmio_opt.faces.service.run import serve as run_server
    except ImportError as error:
        raise opt.usage(
            f"serve needs the serve extra ({error.name} is missing): {SERVE_HINT}"
        ) from None
    token = read_token(args.token_file) if args.token_file is not None else None
    if args.decider == "process":
        if args.solver != "auto":
            opt.solver_names(args.solver, "--solver")  # at once, not from the decider
        backend: Any = DeciderProcess(functools.partial(build_service, args))
        backend.start()  # the site, predictors and state file load there (errors exit 2)
    else:
        backend = InThread(build_service(args))

    def announce(address: str) -> None:
        restored = " (state restored)" if backend.restored else ""
        say(
            f"serving site {backend.site_name} with {backend.solver_name} on {address}{restored}; "
            "SIGTERM or Ctrl-C stops"
        )

    max_body_bytes = int(args.max_body_mb * 2**20)
    try:
        run_server(
            backend,
            args.host,
            args.port,
            token=token,
            announce=announce,
            max_body_bytes=max_body_bytes,
        )
    except DeciderLost as error:
        say(f"stopped: {error}")
        return opt.EXIT_INTERNAL
    say("stopped")
    return opt.EXIT_OK


def build_service(args: argparse.Namespace) -> Any:
    """The service ``args`` describe; usage and input errors exit 2 before it listens."""
    from qlmio_opt.app.scheduler import Scheduler
    from qlmio_opt.domain.io import read_instance
    from qlmio_opt.faces.service.core import Service

    if args.solver != "auto":
        opt.solver_names(args.solver, "--solver")
    predictor = opt.predictor(args.predictors)
    site = read_instance(args.site, catalog=opt.catalog(args.catalog))
    scheduler = Scheduler(
        site,
        solver=args.solver,
        predictors=predictor,
        window_s=args.window_s,
        time_limit=args.time_limit,
        seed=args.seed,
    )
    return Service(scheduler, state_file=args.state_file)


def read_token(path: Any) -> str:
    """The bearer token in ``path`` (surrounding whitespace dropped); an unreadable or empty
    file is an input error naming it."""
    from qlmio_opt.domain.errors import InputError, Issue

    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(Issue("", f"cannot read the token ({error})"), str(path)) from None
    if not token:
        raise InputError(Issue("", "the token file is empty"), str(path))
    return token
