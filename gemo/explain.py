"""``gemo explain``: what a scene model looks at, and what each model adds to a fusion.

Heat maps (:func:`heat_maps`): a trained ``frame-cnn`` with a frame backbone reads a
clip's K frames, decoded as the ``frames`` set decoded them (the count and size its
checkpoint records). The map of a frame is computed on the backbone's last spatial
feature map ``A`` (``[K, C, h, w]``), for the predicted class or a chosen one:

* Grad-CAM (Selvaraju et al. 2017): channel weights are the spatial mean of the class
  logit's gradient with respect to ``A``; the map is ``relu(sum_c w_c A_c)``.
* Score-CAM (Wang et al. 2020): each channel, upsampled to the input and min-max
  normalised to [0, 1], masks the (normalised) input frames; the softmax over channels
  of the class probability's increase over a blank input (all zeros, the mean colour)
  weighs the channel. No gradients. The same channel masks all K frames of one forward
  pass, because the model's score is one per clip.

Each map is scaled to [0, 1] and written as a PNG over the frame (jet colormap, frames
at their own aspect ratio), beside the frame itself. Video backbones (``i3d``...) mix
frames in time, so a map per frame is not defined for them: refused.

Contributions (:func:`contributions`): for a clip of the workspace, a fitted fusion's
probability of its predicted class, then again with one model's input (or every model
of one modality) replaced by the filler ``gemo fuse`` uses for a missing score (1/3
each, or a zero embedding). The drop is that model's contribution: positive where it
pushed the fusion towards its label. The fuser is not refitted.

>>> report = explain(clips=["party.mp4"], workspace=Workspace("gemo-work"), out="maps")  # doctest: +SKIP
"""

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

from gemo import artifacts
from gemo.errors import GemoError
from gemo.files import write_json
from gemo.labels import CLASSES, N_CLASSES
from gemo.workspace import Workspace

METHODS = ("gradcam", "scorecam")
SCORECAM_BATCH = 32  # channels masked per forward pass


def explain(*, clips, workspace, out, model=None, method="gradcam", target=None, fusion=None,
            max_side=480):
    """Heat maps of ``model`` over each of ``clips`` (video files, or clip ids of the
    workspace's index) into ``out/<clip>/``, and, for indexed clips, the contributions of
    ``fusion``'s models (default: the first fusion by name, when there is one).

    ``target``: a class name (default: the model's predicted class). ``max_side``: the
    longer side of the written PNGs. Returns ``{"model", "method", "clips": [...]}``.
    """
    from gemo.models.checkpoint import load_model

    workspace = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    if method not in METHODS:
        raise GemoError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    model = model or _scene_model(workspace)
    loaded = load_model(workspace.model_dir(model) / "model.pt")
    _require_frame_model(loaded)
    fusions = [name for name in artifacts.names_of(workspace) if artifacts.is_fusion(name)]
    if fusion is not None and fusion not in fusions:
        raise GemoError(f"no fusion {fusion!r} in {workspace.root}; it has "
                        f"{', '.join(fusions) or 'none (run `gemo fuse`)'}")
    fusion = fusion or (sorted(fusions)[0] if fusions else None)
    index = _index_or_none(workspace)
    entries = []
    for clip in clips:
        path, clip_id = _resolve(clip, index)
        folder = Path(out) / (clip_id or Path(path).stem)
        entry = {"clip": str(clip), "path": str(path), "id": clip_id, "out": str(folder)}
        entry.update(heat_maps(loaded, path, folder, method=method, target=target,
                               max_side=max_side))
        if clip_id is not None and fusion is not None:
            entry["contributions"] = contributions(workspace=workspace, clip_id=clip_id,
                                                   fusion=fusion)
        write_json(folder / "explain.json", entry)
        entries.append(entry)
    return {"model": model, "method": method, "fusion": fusion, "clips": entries}


def heat_maps(loaded, path, out, *, method="gradcam", target=None, max_side=480):
    """Write ``frame-NN.png`` and ``frame-NN-<method>.png`` per frame of the clip at ``path``
    into ``out``; returns ``{"probs", "predicted", "class", "frames": [paths]}``."""
    from gemo.data.media import Media, MediaError

    params = loaded.features["params"]
    media = Media(str(path))
    try:
        frames, _ = media.frames(count=params["count"], size=params["size"])
        shown, _ = media.frames(count=params["count"], max_side=max_side)
    except MediaError as error:
        raise GemoError(f"{path}: cannot decode its frames ({error}): give a readable video") from None
    (x,) = loaded.inputs.batch(loaded.inputs.tensors([frames]))
    maps, probs = cam(loaded.model, x, method=method, target=target)
    chosen = _class_index(target) if target is not None else int(probs.argmax())
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for k, (frame, heat) in enumerate(zip(shown, maps)):
        plain_path, overlay_path = out / f"frame-{k:02d}.png", out / f"frame-{k:02d}-{method}.png"
        Image.fromarray(frame).save(plain_path)
        Image.fromarray(overlay(frame, heat)).save(overlay_path)
        written.append(str(overlay_path))
    return {"probs": dict(zip(CLASSES, probs.tolist())), "predicted": CLASSES[int(probs.argmax())],
            "class": CLASSES[chosen], "frames": written}


def cam(model, x, *, method="gradcam", target=None):
    """``(maps [K, H, W] in [0, 1], probs [3])`` of a frame-cnn on one clip ``x``
    (``[1, K, 3, H, W]``, normalised); maps for class ``target`` (a name) or the predicted one."""
    model.eval()
    with torch.no_grad():
        probs = torch.softmax(model(x), dim=1)[0]
    index = _class_index(target) if target is not None else int(probs.argmax())
    if method == "gradcam":
        maps = _gradcam(model, x, index)
    elif method == "scorecam":
        maps = _scorecam(model, x, index)
    else:
        raise GemoError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    maps = F.interpolate(maps.unsqueeze(1), size=x.shape[-2:], mode="bilinear",
                         align_corners=False).squeeze(1)
    return _unit(maps).numpy(), probs.numpy()


def _gradcam(model, x, index):
    with _LastFeatureMap(model.backbone) as hook, torch.enable_grad():
        logits = model(x.detach().requires_grad_(True))  # a graph even with a frozen backbone
        activation = hook.output
        (grad,) = torch.autograd.grad(logits[0, index], activation)
    weights = grad.mean(dim=(2, 3), keepdim=True)  # [K, C, 1, 1]
    return torch.relu((weights * activation).sum(dim=1)).detach()


def _scorecam(model, x, index):
    with _LastFeatureMap(model.backbone) as hook, torch.no_grad():
        model(x)
        activation = hook.output.detach()  # [K, C, h, w]
    with torch.no_grad():
        base = torch.softmax(model(torch.zeros_like(x)), dim=1)[0, index]
        masks = F.interpolate(activation, size=x.shape[-2:], mode="bilinear", align_corners=False)
        masks = _unit(masks.flatten(0, 1)).view_as(masks)  # per frame and channel, [0, 1]
        channels = masks.shape[1]
        scores = torch.empty(channels)
        for start in range(0, channels, SCORECAM_BATCH):
            part = masks[:, start:start + SCORECAM_BATCH].transpose(0, 1)  # [c, K, h, w]
            masked = x * part.unsqueeze(2)  # [c, K, 3, H, W]: channel c masks every frame
            scores[start:start + len(part)] = torch.softmax(model(masked), dim=1)[:, index] - base
        weights = torch.softmax(scores, dim=0).view(1, -1, 1, 1)
        return torch.relu((weights * activation).sum(dim=1))


class _LastFeatureMap:
    """Keeps the output of the last module, in forward order, whose output is a spatial feature
    map (4-D with more than one position): the last conv stage before the global pooling, for
    any frame backbone (a ReLU module used several times counts at its last use)."""

    def __init__(self, backbone):
        self.backbone = backbone
        self.output = None

    def _keep(self, module, inputs, output):
        if torch.is_tensor(output) and output.dim() == 4 and output.shape[-1] * output.shape[-2] > 1:
            self.output = output

    def __enter__(self):
        self.handles = [module.register_forward_hook(self._keep)
                        for module in self.backbone.modules() if not list(module.children())]
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()


def overlay(frame, heat, *, alpha=0.45):
    """uint8 RGB ``frame`` with ``heat`` (``[h, w]`` in [0, 1], any size) over it in jet colours."""
    from matplotlib import colormaps

    height, width = frame.shape[:2]
    heat = np.asarray(Image.fromarray(np.asarray(heat, np.float32)).resize(
        (width, height), Image.Resampling.BILINEAR))
    colours = colormaps["jet"](np.clip(heat, 0, 1))[..., :3] * 255
    return (frame * (1 - alpha) + colours * alpha).round().clip(0, 255).astype(np.uint8)


def contributions(*, workspace, clip_id, fusion):
    """``{"fusion", "label", "prob", "models": {name: {...}}, "modalities": {...}}`` for one
    indexed clip: each model's (and modality's) drop of the fused probability of the label
    when its input is replaced by the missing-score filler."""
    from gemo.bundle import workspace_fusion
    from gemo.scores import align, load_tables

    fitted = workspace_fusion(workspace, fusion)
    tables = load_tables(workspace=workspace, names=fitted.models)
    X, missing = align(tables, [clip_id], field=fitted.inputs)
    if missing.all():
        raise GemoError(f"none of {fusion}'s models scored clip {clip_id}: nothing to explain")
    widths = [X.shape[1] // len(fitted.models)] * len(fitted.models)
    if fitted.inputs == "embeddings":
        widths = [tables[name].embeddings.shape[1] for name in fitted.models]
    starts = np.cumsum([0] + widths)
    modality = {name: tables[name].attrs.get("modality") or "unknown" for name in fitted.models}
    return leave_out(fitted.fuser, X[0], {name: slice(starts[m], starts[m + 1])
                                          for m, name in enumerate(fitted.models)},
                     modality, fill=1.0 / N_CLASSES if fitted.inputs == "probs" else 0.0,
                     missing=dict(zip(fitted.models, missing[0].tolist())), fusion=fusion)


def leave_out(fuser, x, columns, modality, *, fill, missing=None, fusion=None):
    """Contributions of a fitted ``fuser`` on one input row ``x``: ``columns`` maps each model
    to its slice of ``x``, ``modality`` each model to its modality; see :func:`contributions`."""
    probs = fuser.predict_proba(x[None])[0]
    label = int(np.argmax(probs))

    def without(names):
        row = x.copy()
        for name in names:
            row[columns[name]] = fill
        return float(fuser.predict_proba(row[None])[0, label])

    models = {name: {"modality": modality[name], "without": without([name]),
                     "contribution": float(probs[label]) - without([name]),
                     "missing": bool((missing or {}).get(name, False))} for name in columns}
    modalities = {}
    for kind in dict.fromkeys(modality.values()):
        names = [name for name in columns if modality[name] == kind]
        modalities[kind] = {"models": names, "without": without(names),
                            "contribution": float(probs[label]) - without(names)}
    return {"fusion": fusion, "label": CLASSES[label], "prob": float(probs[label]),
            "probs": dict(zip(CLASSES, probs.tolist())), "models": models,
            "modalities": modalities}


def _unit(maps):
    """Each map of ``[N, H, W]`` scaled to [0, 1] (a constant map becomes 0)."""
    low = maps.amin(dim=(-2, -1), keepdim=True)
    span = maps.amax(dim=(-2, -1), keepdim=True) - low
    return torch.where(span > 0, (maps - low) / span.clamp_min(1e-12), torch.zeros_like(maps))


def _class_index(name):
    for index, known in enumerate(CLASSES):
        if str(name).lower() == known.lower():
            return index
    raise GemoError(f"unknown class {name!r}: use one of {', '.join(CLASSES)}")


def _require_frame_model(loaded):
    if loaded.checkpoint["architecture"] != "frame-cnn":
        raise GemoError(f"{loaded.name} is a {loaded.checkpoint['architecture']} model; heat maps "
                        "need a frame-cnn scene model (`gemo train scene --features frames`)")
    if loaded.model.video:
        raise GemoError(f"{loaded.name} has the video backbone {loaded.model.options.backbone}, "
                        "which mixes frames in time, so there is no map per frame: explain a "
                        "model with a frame backbone (small, resnet18, ...)")


def _scene_model(workspace):
    """The workspace's only frame-cnn model, or an error listing them."""
    found = [name for name in artifacts.names_of(workspace) if not artifacts.is_fusion(name)
             and (artifacts.read_config(workspace, name) or {}).get("architecture") == "frame-cnn"]
    if len(found) != 1:
        raise GemoError("choose the scene model with --model: "
                        + (f"this workspace has {', '.join(found)}" if found else
                           "this workspace has no frame-cnn model (`gemo train scene "
                           "--features frames`)"))
    return found[0]


def _index_or_none(workspace):
    try:
        return workspace.load_index()
    except GemoError:
        return None


def _resolve(clip, index):
    """``(path, clip id or None)``: a clip id of the index, or a video file (matched to the
    index by path, so an indexed file gets its contributions too)."""
    clips = {} if index is None else index.by_id()
    if str(clip) in clips:
        return clips[str(clip)].path, str(clip)
    path = Path(clip)
    if not path.is_file():
        raise GemoError(f"{clip}: neither a video file nor a clip id of the workspace's index")
    for known in clips.values():
        if Path(known.path).resolve() == path.resolve():
            return known.path, known.id
    return path, None

