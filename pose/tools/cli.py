"""The ``pose`` console command: one subcommand per module, imported only when used.

Each subcommand module exposes ``build_parser(parser)`` (adds its arguments to the given
argparse parser) and ``main(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: subcommand → (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("pose.data.synth.cli", "render the embedded default dataset (seed txt layout) from motion capture"),
    "prepare": ("pose.data.prepare", "validate a dataset (seed txt or H36M JSON layout) and pack it for training"),
    "predict": ("pose.tools.predict", "run a trained checkpoint on images, folders or videos; write JSON and PNGs"),
    "show": ("pose.tools.show", "ground truth beside prediction for N test samples, with per-sample error"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        prog="pose",
        description="c2f-pose: coarse-to-fine volumetric 3D human pose estimation. "
        "Run `pose COMMAND --help` for the options of one command.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        parser.parse_args(argv[:1] if argv else ["--help"])
        return 2
    name = argv[0]
    return run_command(name, importlib.import_module(COMMANDS[name][0]), argv[1:])


def run_command(name: str, module, argv: list[str]) -> int:
    """``pose NAME ARGV...`` with the subcommand's already imported ``module`` (the DVC stages
    import theirs by name, so their code dependencies can be followed: tests/test_dvc_pipeline.py)."""
    cmd_parser = argparse.ArgumentParser(prog=f"pose {name}", description=COMMANDS[name][1])
    module.build_parser(cmd_parser)
    return int(module.main(cmd_parser.parse_args(argv)) or 0)


if __name__ == "__main__":
    sys.exit(main())
