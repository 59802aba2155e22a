"""The `gemo` group and what every command shares: errors, options, output helpers.

Exit status: 0 success, 2 usage or input error, 3 some clips failed, 130 interrupted.
What the user asked for goes to stdout (``results``), progress, logs and errors to
stderr (``console``); see gemo.progress.

Defaults are stated once, in the API function an option is passed to: an
:class:`ApiOption` left out is not passed at all, and ``--help`` reads its
default from the function's signature and its choices from the registry.
"""

import errno
import gc
import inspect
import json
import sys
from pathlib import Path

import click
from rich.markup import escape

from gemo import __version__, api
from gemo.errors import GemoError
from gemo.progress import console, results

EXIT_USAGE, EXIT_FAILED_CLIPS, EXIT_INTERRUPTED = 2, 3, 130

# What a Ctrl-C leaves behind, by command: extraction keeps each finished clip, while
# training and fusion write their files only at the end.
_AFTER_INTERRUPT = {
    "extract": "finished clips are kept; rerun to resume",
    "train": "nothing was written; rerun to start again",
    "fuse": "nothing was written; rerun to start again",
    "demo": "extracted clips are kept; rerun to resume (models are trained again)",
    "predict": "extracted clips are kept; rerun to resume",
    "export": "nothing was written",
}


class _Group(click.Group):
    """Turns known errors into one clear line and an exit status instead of a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except GemoError as error:
            # escape: printed literally, e.g. "gemo[dask]"; soft_wrap: one line, even in a file
            console.print(f"[red]error:[/] {escape(str(error))}", soft_wrap=True)
            sys.exit(EXIT_USAGE)
        except OSError as error:
            if error.errno != errno.ENOSPC:
                raise
            console.print(f"[red]error:[/] disk full ({escape(str(error))}); the clips finished "
                          "are kept: free some space and rerun to resume", soft_wrap=True)
            sys.exit(EXIT_USAGE)
        except KeyboardInterrupt:
            after = _AFTER_INTERRUPT.get(ctx.invoked_subcommand)
            console.print("[yellow]interrupted[/]" + (f": {after}" if after else ""))
            sys.exit(EXIT_INTERRUPTED)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gemo")
def cli():
    """Group emotion recognition (Positive / Neutral / Negative) in video clips.

    \b
    gemo synth demo-data --clips-per-class 8     # a small labelled dataset
    gemo extract demo-data                       # frames + audio features -> HDF5 caches
    gemo info                                    # what the caches hold
    gemo train audio --features pyaudio          # a model per modality, scoring every clip
    gemo train scene --features frames
    gemo fuse --method svm                       # fuse the models' class probabilities
    gemo evaluate --split val                    # metrics of every model and fusion
    gemo models list                             # what is trained, and what is stale
    gemo demo                                    # all of the above on synthetic data
    gemo inspect photo.jpg                       # the faces and expressions in a picture
    """


class ApiOption(click.Option):
    """An option whose default is the API function's, stated once there.

    ``stage`` names the :mod:`gemo.api` function it goes to and ``parameter`` its
    keyword (default: the option's own name). ``choices`` is a callable giving the
    registered names, listed by ``--help``; the API checks a given name against the
    same registry. Both are looked up only when help is shown (they may import torch).
    """

    def __init__(self, *decls, stage=None, parameter=None, choices=None, **attrs):
        super().__init__(*decls, default=None, **attrs)
        self.stage, self.parameter, self.choices_of = stage, parameter or self.name, choices

    def get_help_record(self, ctx):
        names, text = super().get_help_record(ctx)
        extra = []
        if self.choices_of is not None:
            extra.append(f"one of: {', '.join(self.choices_of())}")
        if self.stage is not None:
            default = inspect.signature(getattr(api, self.stage)).parameters[self.parameter].default
            if isinstance(default, (tuple, list)):
                default = ",".join(map(str, default))
            if default not in (None, inspect.Parameter.empty):
                extra.append(f"default: {default}")
        return names, text + (f"  [{'; '.join(extra)}]" if extra else "")


def given(**values):
    """The options the user gave: those left out (None) are not passed, so the API's
    defaults apply."""
    return {key: value for key, value in values.items() if value is not None}


def comma_list(text):
    """``"a, b,,c"`` -> ``["a", "b", "c"]``; None stays None."""
    return None if text is None else [item.strip() for item in text.split(",") if item.strip()]


def assignments(values, *, per_set=False):
    """``KEY=VALUE`` options as ``{key: text}`` (``SET.KEY=VALUE`` as ``{set: {key: text}}``).

    Values stay text: each feature set's or model's typed options read them (gemo.options).
    """
    out = {}
    for value in values:
        key, sep, text = value.partition("=")
        name, dot, field = key.rpartition(".") if per_set else ("", "", key)
        field = field.strip().replace("-", "_")
        if not sep or not field or (per_set and not name):
            raise click.BadParameter(f"{value!r}: expected " + (
                "SET.KEY=VALUE, e.g. frames.count=16" if per_set else "KEY=VALUE, e.g. hidden=32"))
        (out.setdefault(name, {}) if per_set else out)[field] = text
    return out


workdir_option = click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="GEMO_WORKDIR",
    default="gemo-work",
    show_default=True,
    help="Workspace holding caches, models, scores and reports (env GEMO_WORKDIR).",
)

def device_option(stage, help="Where the networks run (auto: CUDA when torch sees a GPU)."):
    """``--device auto|cpu|cuda`` for ``stage``."""
    return click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), cls=ApiOption,
                        stage=stage, help=help)


def table(*headers, **options):
    """A rich table whose cells wrap long paths and names instead of cutting them short."""
    from rich.table import Column, Table

    return Table(*(Column(header, overflow="fold") for header in headers), **options)


def print_summary(summary):
    """``key  value`` lines, never wrapped, so that paths can be copied whole from a log."""
    width = max(map(len, summary))
    for key, value in summary.items():
        text = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
        results.print(f"[bold]{key:<{width}}[/]  {escape(text)}", soft_wrap=True, highlight=False)


def main():
    try:
        cli(prog_name="gemo")
    finally:
        # On exit Python collects every object still alive, module by module: 2 to 3 s once
        # torch and torchvision are imported, after the command's work is done and its
        # files are closed. Frozen objects are left to the end of the process instead.
        gc.freeze()
