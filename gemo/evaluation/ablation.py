"""Leave-one-model-out ablation of a fitted fusion (Fusical, Table 3).

Each fusion's ``models/<fusion>/config.json`` gives its method, inputs, seed,
full-train setting and input models; the same fusion is refitted through
:func:`gemo.fusion.run_fusion` with each model left out in turn (nothing is
written) and scored on the split.
"""

from gemo.artifacts import read_config, stale_inputs
from gemo.errors import GemoError
from gemo.fusion.api import run_fusion


def fusion_config(*, workspace, name):
    """The config.json written by :func:`gemo.fusion.fuse` for fusion ``name``."""
    config = read_config(workspace, name)
    if config is None:
        raise GemoError(f"{workspace.model_dir(name) / 'config.json'} is missing: run `gemo fuse` "
                        f"again to refit {name}")
    return config


def ablate(*, workspace, name, reference, ids, labels, score, status):
    """Refit fusion ``name`` without each of its models; ``reference`` is its own metrics.

    ``score(table)`` turns a fused score table into metrics on ``ids``/``labels``;
    ``status(message)`` is a context manager showing progress.
    """
    config = fusion_config(workspace=workspace, name=name)
    rows = []
    for left_out in config["models"]:
        rest = [model for model in config["models"] if model != left_out]
        if not rest:
            continue  # a one-model fusion has nothing left to fuse
        with status(f"ablation of {name}: refitting without {left_out}"):
            result = run_fusion(
                workspace=workspace,
                method=config["method"],
                models=rest,
                full_train=config["full_train"],
                seed=config["seed"],
                inputs=config["inputs"],
                progress=False,
            )
        metrics = score(result.table)
        rows.append(
            {
                "left_out": left_out,
                "models": rest,
                **metrics,
                "delta_accuracy": metrics["accuracy"] - reference["accuracy"],
                "delta_uar": metrics["uar"] - reference["uar"],
            }
        )
    return {
        "method": config["method"],
        "inputs": config["inputs"],
        "full_train": config["full_train"],
        "models": config["models"],
        "reference": reference,
        "rows": rows,
        # Inputs retrained since the fusion was fitted make the comparison unfair.
        "stale_inputs": stale_inputs(workspace, config),
    }

