"""Commands on the data the product ships: schema, generate, catalog."""

from __future__ import annotations

import argparse

from qlmio_opt.faces.cli import options as opt
from qlmio_opt.faces.cli.console import out

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (fast start)
if TYPE_CHECKING:
    from qlmio_opt.faces.cli.options import Commands as Subparsers


CATALOG_KINDS = ("models", "devices", "tasks")


def register(commands: Subparsers) -> None:
    """Add this module's commands to the ``qlmio-opt`` parser."""
    p = commands.add_parser("schema", help="Print the JSON Schema of the instance (or solution).")
    p.add_argument(
        "kind",
        nargs="?",
        choices=("instance", "solution"),
        default="instance",
        help="instance (default) or solution.",
    )
    p.set_defaults(run=schema)
    _generate_parser(commands)
    p = commands.add_parser("catalog", help="Show the catalog (with user TOML files merged).")
    p.add_argument(
        "kind",
        nargs="?",
        choices=CATALOG_KINDS,
        default="models",
        help="models (default), devices or tasks.",
    )
    opt.add_catalog(p)
    p.set_defaults(run=show_catalog)


def schema(args: argparse.Namespace) -> int:
    from qlmio_opt.domain.schema import schema_text

    print(schema_text(args.kind))
    return opt.EXIT_OK


def _generate_parser(commands: Subparsers) -> None:
    p = commands.add_parser(
        "generate", help="Generate benchmark windows from the public traces and prompts."
    )
    p.add_argument("--scenario", default="default", help="Scenario name.")
    p.add_argument("--count", type=opt.integer(1, 100_000), default=100, help="Number of windows.")
    opt.add_seed(p, "Seed; window k depends only on (scenario, k, seed).")
    p.add_argument(
        "--out", type=opt.path, default="instances", help="Folder to write window_NNN.json into."
    )
    p.add_argument(
        "--force", action="store_true", help="Overwrite window files that already exist."
    )
    p.set_defaults(run=generate)


def generate(args: argparse.Namespace) -> int:
    from qlmio_opt.domain.scenarios import SCENARIOS
    from qlmio_opt.domain.scenarios.generate import window_name, write_windows
    from qlmio_opt.faces.out_paths import writable_dir

    if args.scenario not in SCENARIOS:
        raise opt.usage(f'unknown scenario "{args.scenario}"; choose from {", ".join(SCENARIOS)}')
    writable_dir(args.out)
    names = (args.out / f"{window_name(k)}.json" for k in range(args.count))
    existing = [p for p in names if p.exists()]
    if existing and not args.force:
        shown = ", ".join(p.name for p in existing[:3]) + (" ..." if len(existing) > 3 else "")
        raise opt.usage(
            f"--out {args.out}: {len(existing)} of the {args.count} window file(s) exist "
            f"({shown}); pass --force to overwrite them or choose another folder"
        )
    paths = write_windows(args.out, args.scenario, args.count, args.seed)
    out().print(f"wrote {len(paths)} window(s) to {args.out}")
    return opt.EXIT_OK


def show_catalog(args: argparse.Namespace) -> int:
    from qlmio_opt.faces.report import frame_table

    cat = opt.catalog(args.catalog)
    frames = {"models": cat.models_frame, "devices": cat.devices_frame, "tasks": cat.tasks_frame}
    frame = frames[args.kind]().drop(columns=["display_name"], errors="ignore")
    title = f"{args.kind} catalog (values and sources: qlmio_opt/domain/catalog/data)"
    frame_table(out(), frame, title=title)
    return opt.EXIT_OK
