"""Where torch work runs: ``--device auto|cpu|cuda``."""

from gemo.errors import GemoError


def resolve_device(device):
    """``"auto"`` -> ``"cuda"`` when torch sees a GPU, else ``"cpu"``; checks an explicit choice.

    >>> resolve_device("cpu")
    'cpu'
    """
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise GemoError("device cuda asked for, but torch sees no CUDA GPU: use --device cpu")
    if device != "cpu" and not str(device).startswith("cuda"):
        raise GemoError(f"device must be auto, cpu or cuda, not {device!r}")
    return str(device)
