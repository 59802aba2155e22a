"""The `gemo` command line: parses options, calls :mod:`gemo.api`, prints; no logic of its own.

``app`` holds the group and what commands share; ``stages`` the pipeline's commands
(synth, extract, info, train, fuse, evaluate, demo); ``tools`` the others (predict,
export, inspect, models, weights). Importing them registers their commands.
"""

from gemo.cli import stages, tools  # noqa: F401  (registers the commands)
from gemo.cli.app import cli, main

__all__ = ["cli", "main"]
