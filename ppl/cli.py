"""The ``ppl`` command."""

from __future__ import annotations

import argparse
import sys


def _quickstart(args: argparse.Namespace) -> int:
    from ppl import quickstart

    quickstart.main(
        out_dir=args.out, num_steps=args.steps, eval_samples=args.eval_samples, seed=args.seed
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ppl", description="Programmable variational inference for JAX and NumPyro."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    quick = commands.add_parser(
        "quickstart",
        help="fit the noisy-cone model with five objectives (PLDI 2024, Table 4)",
        description="Fit the noisy-cone model of Becker et al. (PLDI 2024) with ELBO, "
        "IWELBO, HVI, IWHVI and DIWHVI; print the table next to the paper's and save a "
        "plot of the approximate posteriors.",
    )
    quick.add_argument(
        "--out", default="ppl-quickstart", help="output folder (default: %(default)s)"
    )
    quick.add_argument("--steps", type=int, default=5000, help="SGD steps (default: %(default)s)")
    quick.add_argument(
        "--eval-samples", type=int, default=5000, help="samples for the final estimate"
    )
    quick.add_argument("--seed", type=int, default=0)
    quick.set_defaults(run=_quickstart)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ppl`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "steps", 1) < 1:
        parser.error("--steps must be at least 1")
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
