"""The pipeline's commands: synth, synth-groups, extract, info, train, fuse, evaluate, demo, run."""

import json
import sys
from pathlib import Path

import click
from rich.markup import escape

from gemo import api
from gemo.cli.app import (
    EXIT_FAILED_CLIPS,
    ApiOption,
    assignments,
    cli,
    comma_list,
    device_option,
    given,
    print_summary,
    table,
    workdir_option,
)
from gemo.progress import results
from gemo.training.recipe import CLASS_WEIGHTS, OPTIMIZERS, SCHEDULES


def _executors():
    from gemo.extraction import executors

    return executors.available()


def _feature_sets():
    return [row["name"] for row in api.feature_sets()]


def _model_families():
    from gemo import models

    return models.available()


def _backbones():
    from gemo.models import backbones

    return backbones.available()


def _fusion_methods():
    from gemo import fusion

    return fusion.available()


@cli.command()
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--clips-per-class", type=click.IntRange(1), cls=ApiOption, stage="synth",
              help="Train clips per class (Val and Test get half as many, at least 2).")
@click.option("--seed", type=int, cls=ApiOption, stage="synth")
@click.option("--duration", type=click.FloatRange(1.0), cls=ApiOption, stage="synth",
              help="Seconds per clip.")
@click.option("--workers", type=click.IntRange(1), cls=ApiOption, stage="synth",
              help="Processes rendering clips (default: the machine's cores).")
def synth(out, clips_per_class, seed, duration, workers):
    """Write a synthetic VGAF-layout dataset with the class planted in picture and sound.

    \b
    Example:
      gemo synth demo-data --clips-per-class 8 --seed 0
    """
    root = api.synth(out, **given(clips_per_class=clips_per_class, seed=seed, duration=duration,
                                  workers=workers))
    results.print(f"wrote {root}", soft_wrap=True, highlight=False)


@cli.command("synth-groups")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--faces", type=click.Path(exists=True, file_okay=False, path_type=Path),
              required=True, help="Folder of face subfolders named by valence (Positive, Neutral, "
              "Negative) or expression (happy, neutral, angry, disgust, fear, sad).")
@click.option("--backgrounds", type=click.Path(exists=True, file_okay=False, path_type=Path),
              required=True, help="Folder of background images (searched recursively).")
@click.option("--count", type=click.IntRange(3), cls=ApiOption, stage="synth_groups",
              help="Images to make (70% Train, 15% Val, 15% Test).")
@click.option("--min-faces", type=click.IntRange(1), cls=ApiOption, stage="synth_groups")
@click.option("--max-faces", type=click.IntRange(1), cls=ApiOption, stage="synth_groups")
@click.option("--scale", type=(float, float), metavar="MIN MAX", cls=ApiOption,
              stage="synth_groups", help="Face height as a fraction of the image height.")
@click.option("--width", type=click.IntRange(32), cls=ApiOption, stage="synth_groups")
@click.option("--height", type=click.IntRange(32), cls=ApiOption, stage="synth_groups")
@click.option("--seed", type=int, cls=ApiOption, stage="synth_groups")
def synth_groups(out, faces, backgrounds, count, min_faces, max_faces, scale, width, height, seed):
    """Write synthetic group images (Petrova 2020) as a dataset `gemo train scene` reads.

    Each image: 1 to 9 faces pasted without overlap on a background, labelled with the
    faces' most common valence (Neutral on a tie). Images are written as still clips in
    the VGAF layout, with groups.json listing every face's box (docs/training.md).

    \b
    Example:
      gemo synth-groups groups/ --faces faces/ --backgrounds rooms/ --count 600
      gemo extract groups/ --only frames && gemo train scene --features frames
    """
    root = api.synth_groups(out, faces=faces, backgrounds=backgrounds,
                            **given(count=count, min_faces=min_faces, max_faces=max_faces,
                                    scale=scale, width=width, height=height, seed=seed))
    results.print(f"wrote {root}", soft_wrap=True, highlight=False)


@cli.command()
@click.argument("dataset", required=False, type=click.Path(exists=True, path_type=Path))
@click.option("--only", "sets", metavar="SETS", cls=ApiOption, stage="extract",
              choices=_feature_sets,
              help="Comma-separated feature sets (--list-sets shows their parameters).")
@click.option("-p", "--param", "params", multiple=True, metavar="SET.KEY=VALUE",
              help="Extractor parameter, repeatable, e.g. -p frames.count=16 -p frames.size=112.")
@click.option("--workers", type=click.IntRange(1), cls=ApiOption, stage="extract",
              help="Worker processes (default: the machine's cores).")
@click.option("--overwrite", is_flag=True, help="Rebuild the caches of the chosen sets from scratch.")
@click.option("--executor", cls=ApiOption, stage="extract", choices=_executors,
              help="Where clips are computed: local processes, or a Dask distributed cluster "
                   "(pip install 'gemo[dask]'; see docs/distributed.md).")
@click.option("--scheduler", metavar="ADDRESS",
              help="Dask scheduler to use with --executor dask, e.g. tcp://10.0.0.5:8786 "
                   "(default: start a local cluster of --workers processes).")
@device_option("extract", help="Where the networks of the faces, fer, pose, embed-* and maps-* "
                                "sets run.")
@click.option("--batch-size", type=click.IntRange(0), cls=ApiOption, stage="extract",
              help="Frames (faces, pose, embed-*, maps-*) or face crops (fer) per network call; "
                   "0: all frames of a clip, and 64 crops (1024 on a GPU); a video network "
                   "(embed-i3d...) reads a clip in one call. It changes the speed; values agree "
                   "to float rounding.")
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
      gemo extract --only embed-mobilenet_v2   # after: gemo weights fetch mobilenet_v2
      gemo extract --only embed-i3d            # after: gemo weights fetch i3d.kinetics400
    """
    if list_sets:
        for row in api.feature_sets():
            results.print(f"[bold]{row['name']}[/] ({row['modality'] or 'any'}): "
                          f"{escape(row['description'])}  params: {escape(str(row['params']))}")
        return
    reports = api.extract(
        workspace=api.Workspace(workdir), dataset=dataset, params=assignments(params, per_set=True),
        overwrite=overwrite, progress=not quiet, scheduler=scheduler,
        **given(sets=comma_list(sets), workers=workers, executor=executor, device=device,
                batch_size=batch_size))
    any_failed = False
    for report in reports:
        results.print(f"[bold]{report.feature_set}[/]: {report.extracted} extracted, "
                      f"{report.skipped} already done, {len(report.failed)} failed")
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
    rows = table("feature set", "done", "failed", "params", "size")
    for row in summary["caches"]:
        rows.add_row(row["feature_set"], f"{row['done']} of {dataset['clips']}",
                     str(len(row["failed"])), escape(json.dumps(row["params"])),
                     f"{row['size_bytes'] / 1e6:.1f} MB")
    results.print(rows)
    for row in summary["caches"]:
        for clip_id, failure in sorted(row["failed"].items()):
            results.print(f"  {row['feature_set']} [red]{clip_id}[/]: "
                          f"{failure['kind']}: {escape(failure['message'])}", soft_wrap=True)


@cli.command()
@click.argument("modality")
@click.option("--features", required=True, metavar="SET", cls=ApiOption, choices=_feature_sets,
              help="Cached feature set to train on; multimodal: a comma list of two or more.")
@click.option("--model", metavar="FAMILY", cls=ApiOption, choices=_model_families,
              help="Model family (default: the feature set's, e.g. blstm-attention for pyaudio).")
@click.option("--name", metavar="NAME", help="Name of the trained model (default "
              "MODALITY-FEATURES-FAMILY, e.g. audio-pyaudio-blstm-attention).")
@click.option("--overwrite", is_flag=True, help="Replace a model of that name trained with other "
              "options (else refused).")
@click.option("--backbone", metavar="NAME", cls=ApiOption, choices=_backbones,
              help="frame-cnn backbone.")
@click.option("--pretrained", is_flag=True, help="Load ImageNet weights into the backbone (from "
              "--weights, gemo's weights folder or the torch hub cache; never downloaded).")
@click.option("--weights", type=click.Path(path_type=Path), help="Pretrained backbone weights file "
              "(implies --pretrained).")
@click.option("--epochs", type=click.IntRange(1), cls=ApiOption, stage="train")
@click.option("--batch-size", type=click.IntRange(1), cls=ApiOption, stage="train",
              help="Clips per step (default: the family's, e.g. 128 audio, 16 frames).")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), cls=ApiOption, stage="train")
@click.option("--patience", type=click.IntRange(1), cls=ApiOption, stage="train",
              help="Early stopping: epochs without a better hold-out loss.")
@click.option("--folds", type=click.IntRange(0), cls=ApiOption, stage="train",
              help="Cross-fitting folds for out-of-fold train scores (fusion learns from them); "
                   "0 turns it off.")
@click.option("--seed", type=int, cls=ApiOption, stage="train")
@click.option("--class-weight", type=click.Choice(CLASS_WEIGHTS), cls=ApiOption, stage="train",
              help="balanced: weigh each class's loss by n_clips / (n_classes * its clips), "
                   "counted on each model's training clips, for imbalanced data.")
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), cls=ApiOption, stage="train")
@click.option("--momentum", type=click.FloatRange(0, 1, max_open=True), cls=ApiOption,
              stage="train", help="sgd's momentum.")
@click.option("--nesterov", is_flag=True, help="sgd with Nesterov momentum.")
@click.option("--weight-decay", type=click.FloatRange(0), cls=ApiOption, stage="train",
              help="L2 penalty (adam, sgd) or decoupled decay (adamw).")
@click.option("--label-smoothing", type=click.FloatRange(0, 1, max_open=True), cls=ApiOption,
              stage="train", help="Share of each target spread over the classes.")
@click.option("--schedule", type=click.Choice(SCHEDULES), cls=ApiOption, stage="train",
              help="Learning rate per epoch: cosine over --epochs, or step (--step-factor every "
                   "--step-every epochs).")
@click.option("--step-every", type=click.IntRange(1), cls=ApiOption, stage="train",
              help="step schedule: epochs between two drops.")
@click.option("--step-factor", type=click.FloatRange(0, 1, min_open=True), cls=ApiOption,
              stage="train", help="step schedule: the learning rate's factor at each drop.")
@click.option("--backbone-lr-scale", type=click.FloatRange(min=0, min_open=True),
              cls=ApiOption, stage="train",
              help="The backbone's learning rate is --lr times this (e.g. 0.1 for a pretrained "
                   "one); models with a backbone only (frame-cnn).")
@click.option("--freeze-backbone", is_flag=True, help="Keep the backbone's weights and "
              "batch-norm statistics fixed; train the layers after it (frame-cnn).")
@click.option("--amp", is_flag=True, help="Mixed precision (bf16, or fp16 with loss scaling, "
              "on older GPUs); CUDA only, refused on a CPU.")
@click.option("--full-train", is_flag=True, help="Train NAME-full on train+val for the best "
              "epoch count of the train-only model NAME (or --epochs when there is none), for a "
              "test submission (Pinto 2020); its val scores are in-sample.")
@device_option("train")
@click.option("-o", "--option", "options", multiple=True, metavar="KEY=VALUE",
              help="Model option, repeatable, e.g. -o hidden=32 -o input_size=112.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@workdir_option
def train(modality, features, model, name, overwrite, backbone, pretrained, weights, epochs,
          batch_size, lr, patience, folds, seed, class_weight, optimizer, momentum, nesterov,
          weight_decay, label_smoothing, schedule, step_every, step_factor, backbone_lr_scale,
          freeze_backbone, amp, full_train, device, options, quiet, workdir):
    """Train a MODALITY (audio, scene, face, pose) model on a cached feature set, or a
    multimodal one on several (--features A,B); write its checkpoint and per-clip scores.

    \b
    Examples:
      gemo train audio --features pyaudio
      gemo train audio --features egemaps --epochs 100
      gemo train audio --features egemaps --model svm --class-weight balanced
      gemo train audio --features mel              # Fusical's CNN + Bi-LSTM (cnn-blstm)
      gemo train scene --features frames --backbone resnet18 --pretrained --device cuda
      gemo train scene --features embed-mobilenet_v2   # a temporal head on cached embeddings
      gemo train face --features fer
      gemo train pose --features pose
      gemo train multimodal --features embed-mobilenet_v2,pyaudio   # cross-attention
      gemo train audio --features pyaudio --lr 3e-4 --name audio-pyaudio-slow
      gemo train scene --features frames --model frame-classifier --backbone vgg19 --optimizer sgd
      gemo train scene --features maps-resnet50 --lr 0.01   # Fusical's ConvLSTM heads
      gemo train audio --features pyaudio --full-train   # then: audio-pyaudio-blstm-attention-full
    """
    summary = api.train(
        workspace=api.Workspace(workdir), modality=modality, features=features, overwrite=overwrite,
        pretrained=pretrained, nesterov=nesterov, freeze_backbone=freeze_backbone, amp=amp,
        full_train=full_train, progress=not quiet,
        **given(model=model, name=name, backbone=backbone, weights=weights, epochs=epochs,
                batch_size=batch_size, lr=lr, patience=patience, folds=folds, seed=seed,
                class_weight=class_weight, optimizer=optimizer, momentum=momentum,
                weight_decay=weight_decay, label_smoothing=label_smoothing, schedule=schedule,
                step_every=step_every, step_factor=step_factor,
                backbone_lr_scale=backbone_lr_scale, device=device),
        **assignments(options))
    print_summary(summary)


@cli.command()
@click.option("--method", cls=ApiOption, stage="fuse", choices=_fusion_methods,
              help="svm (Pinto 2020), fc and vae (Fusical), mean (soft voting), vote (hard voting), "
                   "weighted.")
@click.option("--models", metavar="NAMES", help="Comma-separated trained models (default: all).")
@click.option("--inputs", type=click.Choice(["probs", "embeddings"]), cls=ApiOption, stage="fuse",
              help="What the fuser sees; embeddings only with --method fc or vae.")
@click.option("--full-train", is_flag=True, help="Refit on train+val before predicting test (Pinto 2020).")
@click.option("--name", metavar="NAME", help="Name of the fusion, starting with fusion- "
              "(default fusion-METHOD, fusion-fc-embeddings).")
@click.option("--overwrite", is_flag=True, help="Replace a fusion of that name fitted on other "
              "models or settings (else refused).")
@click.option("--seed", type=int, cls=ApiOption, stage="fuse")
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
      gemo fuse --method vae --inputs embeddings    # Fusical's VAE, then an FC classifier
      gemo fuse --method svm --full-train --name fusion-svm-full
    """
    summary = api.fuse(workspace=api.Workspace(workdir), overwrite=overwrite, full_train=full_train,
                       progress=not quiet, **given(method=method, models=comma_list(models),
                                                   name=name, inputs=inputs, seed=seed))
    print_summary(summary)


@cli.command()
@click.option("--split", type=click.Choice(["train", "val", "test"]), cls=ApiOption,
              stage="evaluate")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write all metrics to this JSON file.")
@click.option("--ablate", is_flag=True, help="Refit each fusion with each model left out in turn.")
@click.option("--by", type=click.Choice(["group-size"]), help="Break metrics down by group size "
              "(needs the feature set that --group-size-from names).")
@click.option("--group-size-from", type=click.Choice(["faces", "pose"]), cls=ApiOption,
              stage="evaluate", help="Count group sizes as the faces (Pinto 2020) or the persons "
              "(pose) found per frame.")
@click.option("--embedding-maps", is_flag=True, help="Also draw embedding-MODEL.png: a t-SNE "
              "map of each model's embeddings (a fusion's probabilities) on the split, coloured "
              "by true class (seconds per model on VGAF val).")
@click.option("--quiet", is_flag=True, help="No progress display.")
@workdir_option
def evaluate(split, json_path, ablate, by, group_size_from, embedding_maps, quiet, workdir):
    """Accuracy, per-class accuracy, confusion, macro F1 and UAR of every model and fusion.

    On a split without labels (VGAF Test) it writes predictions in the VGAF
    `<id> <label>` format instead. Reports go to <workdir>/reports/<split>/.

    \b
    Examples:
      gemo evaluate --split val --json metrics.json
      gemo evaluate --split val --ablate
      gemo evaluate --split val --by group-size --group-size-from pose
      gemo evaluate --split val --embedding-maps
      gemo evaluate --split test
    """
    if group_size_from is not None and by != "group-size":
        raise click.UsageError("--group-size-from chooses the counter of --by group-size: "
                               "add --by group-size")
    result = api.evaluate(workspace=api.Workspace(workdir), json_path=json_path, ablate=ablate,
                          by=by, embedding_maps=embedding_maps, progress=not quiet,
                          console=results,
                          **given(split=split, group_size_from=group_size_from))
    for path in (result["metrics_path"], result.get("json_path")):
        if path:
            results.print(f"wrote {path}", soft_wrap=True, highlight=False)


@cli.command()
@click.argument("directory", required=False, default="gemo-demo",
                type=click.Path(file_okay=False, path_type=Path))
@click.option("--clips-per-class", type=int, cls=ApiOption, stage="demo",
              help="Train clips per class of the synthetic data (at least 6: 5-fold "
              "cross-fitting, then the SVM fusion's own cross-validation).")
@click.option("--seed", type=int, cls=ApiOption, stage="demo")
@click.option("--workers", type=click.IntRange(1), cls=ApiOption, stage="demo",
              help="Processes for extraction, and for training the three models side by side "
              "(default: the machine's cores).")
def demo(directory, clips_per_class, seed, workers):
    """Run the whole pipeline on built-in synthetic data and show the report.

    Writes DIRECTORY/data (synthetic clips) and DIRECTORY/work (the workspace):
    synth, extract, train audio, scene and face, fuse with an SVM, evaluate on val.

    \b
    Example:
      gemo demo            # then look at gemo-demo/work/reports/val/
    """
    api.demo(directory, **given(clips_per_class=clips_per_class, seed=seed, workers=workers))


@cli.command("run")
@click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("dataset", required=False, type=click.Path(exists=True, path_type=Path))
@click.option("--quick", is_flag=True, help="Apply the recipe's [quick] overrides (fewer epochs "
              "and frames, no pretrained backbone): a try on a CPU, not the paper's settings.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@workdir_option
def run(recipe, dataset, quick, quiet, workdir):
    """Run a paper's RECIPE (recipes/*.toml) on DATASET: extract, train, fuse, evaluate.

    Each stage resumes: a rerun extracts only missing clips and skips the models and
    fusions already made from the same recipe entry. At the end the paper's VGAF
    accuracies are printed beside gemo's (docs/recipes.md).

    \b
    Examples:
      gemo run recipes/pinto2020.toml vgaf/ --workdir pinto-work
      gemo run recipes/pinto2020.toml demo-data --quick --workdir demo-work
    """
    result = api.run_recipe(recipe, workspace=api.Workspace(workdir), dataset=dataset,
                            quick=quick, progress=not quiet)
    for stage, name, note in result["stages"]:
        results.print(f"[bold]{stage}[/] {escape(name)}: {escape(note)}", soft_wrap=True)
    rows = table("model or fusion", "split", "metric %", "paper", "gemo",
                 title=f"{result['recipe']}: the paper's VGAF figures and this run's")
    for row in result["comparison"]:
        rows.add_row(row["name"], row["split"], row["metric"], f"{row['paper']:.2f}",
                     "-" if row["gemo"] is None else f"{row['gemo']:.2f}")
    results.print(rows)
