"""Command line: ``gwprune info`` and ``gwprune bench`` (also ``python -m gwprune``)."""

import argparse
import sys


def _info(_args) -> int:
    import gwprune

    for key, value in gwprune.info().items():
        print(f"{key:>22}: {value}")
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "bench":
        from gwprune.bench.cli import main as bench_main

        return bench_main(argv[1:])
    parser = argparse.ArgumentParser(prog="gwprune", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="versions, compiled kernels and visible GPU")
    sub.add_parser("bench", help="the pruning-pattern benchmark (gwprune bench --help)")
    args = parser.parse_args(argv)
    return {"info": _info}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
