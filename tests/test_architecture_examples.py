"""The examples of docs/architecture.md run: each addition works as the doc says."""

import re
from pathlib import Path

import numpy as np
import torch
from conftest import make_clip

DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"


def _examples():
    """The doc's complete Python examples (the ones that import what they use)."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    return [block for block in blocks if block.startswith(("from ", "import "))]


def _run(code, registered, name, enter):
    """Run an example with its registration taken back at the end of the test."""
    namespace = {}
    exec(compile(code.replace("@register\n", ""), str(DOC), "exec"), namespace)  # noqa: S102
    cls = next(value for value in namespace.values()
               if isinstance(value, type) and getattr(value, "name", None) == name)
    enter(registered(cls))
    return cls


def test_the_documented_additions_work(tmp_path, enter):
    from gemo import extractors, fusion, models
    from gemo.extractors import base
    from gemo.fusion import base as fusion_base
    from gemo.models import base as model_base

    feature_set, model, fuser = _examples()
    _run(feature_set, base.registered, "loudness", enter)
    arrays = extractors.create("loudness").extract(make_clip(tmp_path / "a.mp4", seconds=2.0))
    assert arrays["features"].shape == (20, 1) and np.all(arrays["features"] > 0.3)

    _run(model, model_base.registered, "linear", enter)
    net = models.create("linear", input_dim=88, dropout=0.2).eval()
    assert net(torch.zeros(4, 88)).shape == (4, 3)

    _run(fuser, fusion_base.registered, "geometric", enter)
    X = np.tile([0.6, 0.3, 0.1, 0.2, 0.7, 0.1], (5, 1))
    proba = fusion.create("geometric").fit(X, [0, 1, 0, 1, 2]).predict_proba(X)
    assert proba.shape == (5, 3) and np.allclose(proba.sum(axis=1), 1)
    assert proba[0].argmax() == 1  # sqrt(0.3 * 0.7) beats sqrt(0.6 * 0.2)
