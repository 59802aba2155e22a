"""The Python API end to end on a tiny synthetic dataset: synth, extract, train, fuse, evaluate.

    python examples/api_end_to_end.py OUT_DIR

Sizes are tiny so that it runs in about a minute on a CPU; drop the size arguments for
the defaults (docs/training.md).
"""

import sys
from pathlib import Path

from gemo import api


def main(out):
    out = Path(out)
    data = api.synth(out / "data", clips_per_class=8, seed=5, duration=2.0, width=64, height=48)
    ws = api.Workspace(out / "work")
    for report in api.extract(workspace=ws, dataset=data, sets=["frames", "pyaudio"],
                              params={"frames": {"count": 3, "size": 64}}, progress=False):
        print(f"{report.feature_set}: {report.extracted} clips extracted, {len(report.failed)} failed")
    audio = api.train(workspace=ws, modality="audio", features="pyaudio", epochs=5, folds=2,
                      progress=False)
    scene = api.train(workspace=ws, modality="scene", features="frames", epochs=3, folds=2,
                      backbone="small", input_size=32, progress=False)
    fusion = api.fuse(workspace=ws, method="mean", models=[audio["name"], scene["name"]],
                      progress=False)
    result = api.evaluate(workspace=ws, split="val", progress=False)
    for name in (audio["name"], scene["name"], fusion["name"]):
        print(f"{name}: val accuracy {result['models'][name]['accuracy']:.3f}")
    return result


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "api-example")
