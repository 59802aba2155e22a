"""A small synthetic dataset in the VGAF layout, for demos and end-to-end tests.

Each clip's class is planted twice, independently and imperfectly: with
probability ``cue_noise`` the picture is *ambiguous*, an even blend of the true
class and another one (half the people and the background of each), and
likewise, drawn separately, for the sound (the two classes' sounds mixed). A
model of one modality can at best guess between the two on an ambiguous clip,
so it is right about ``1 - cue_noise / 2`` of the time; a fusion that trusts
the clear modality is right unless both are ambiguous (``1 - cue_noise**2 / 2``).

* Picture: "people" (head + body blobs) on a background. Positive = light warm
  background, yellow/orange people jumping; Neutral = mid grey-blue, slow drift;
  Negative = dark background, dark red/purple people trembling. A source video
  fixes the background tint, crowd size and body scale (its "style"); each clip
  adds its own positions, speeds, colour jitter, grain and flicker.
* Sound: Positive = major chord on a high root, plucked on a regular beat, with
  claps; Neutral = speech-like hum (harmonics of 140-220 Hz, syllable rhythm);
  Negative = low, rough (detuned, beating) tones with rumbling noise bursts.
  Always some background noise (never silent) and a random loudness.

Splits: every split gets ``max(2, round(clips_per_class * factor))`` clips per
class, cut into source videos of 1-3 segments (ids ``<video>_<segment>``; a
video's segments share class and style). Video numbers are unique and shuffled.

Same seed -> byte-identical files (x264 runs single-threaded, muxer bitexact).

>>> make_dataset("demo/", clips_per_class=20, seed=0)  # doctest: +SKIP
"""

import json
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from multiprocessing import get_context
from pathlib import Path

import av
import numpy as np
from av.codec.context import Flags
from scipy.signal import lfilter

from gemo import threads
from gemo.data.cartoon import CLASS_EXPRESSIONS, draw_face
from gemo.files import atomic_write, write_text
from gemo.labels import CLASSES, vgaf_code

_BACKGROUND = np.array([[150, 140, 110], [115, 118, 122], [72, 64, 74]], np.float32)
_PALETTES = np.array([  # three person colours per class, RGB
    [[250, 200, 60], [245, 140, 50], [255, 230, 120]],
    [[150, 155, 165], [120, 135, 150], [170, 170, 160]],
    [[110, 30, 40], [80, 40, 90], [60, 60, 70]],
], np.float32)


def make_dataset(out, *, clips_per_class=8, seed=0, duration=5.0, width=320, height=180, fps=15,
                 sample_rate=16000, splits=(("Train", 1.0), ("Val", 0.5), ("Test", 0.5)),
                 cue_noise=0.3, progress=None, workers=None):
    """Write a synthetic VGAF-layout dataset under ``out`` and return its path.

    ``progress(done, total)`` is called after each clip; ``workers`` processes
    render clips in parallel (each clip has its own seed, so the output does not
    depend on it). Clips from an earlier
    synth run in ``out`` (listed in its synth.json) are removed first so that
    a smaller re-run leaves no stale clips behind.
    """
    if clips_per_class < 1 or width % 2 or height % 2:
        raise ValueError("clips_per_class must be >= 1 and width/height even (yuv420p)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    remove_previous(out, "synth.json")
    rng = np.random.default_rng(seed)
    clips = _plan(rng, clips_per_class, splits, cue_noise)
    for name, _ in splits:
        (out / name).mkdir(exist_ok=True)
    jobs = [(out / clip["split"] / f"{clip['id']}.mp4", clip.pop("seed"), clip.pop("style"), dict(clip),
             dict(duration=duration, width=width, height=height, fps=fps, sample_rate=sample_rate))
            for clip in clips]
    workers = threads.processes(workers)
    parallel = workers > 1
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) if parallel else nullcontext() as pool:
        results = pool.map(_render, jobs) if pool else map(_render, jobs)
        for done, _ in enumerate(results, start=1):
            if progress is not None:
                progress(done, len(clips))
    for name, _ in splits:
        lines = ["Vid_name Label"] + [
            f"{c['id']} {vgaf_code(c['label'])}" for c in clips if c["split"] == name]
        write_text(out / f"{name}_labels.txt", "\n".join(lines) + "\n")
    params = dict(clips_per_class=clips_per_class, seed=seed, duration=duration, width=width,
                  height=height, fps=fps, sample_rate=sample_rate, cue_noise=cue_noise,
                  splits=[list(s) for s in splits])
    meta = {"params": params, "classes": list(CLASSES), "clips": clips}
    write_text(out / "synth.json", json.dumps(meta, indent=1) + "\n")  # last: marks completion
    return out


def _render(job):
    """Draw, synthesise and encode one clip (runs in a worker process when workers > 1)."""
    path, seed, style, clip, media = job
    rng = np.random.default_rng(seed)
    frames = _frames(rng, style, clip["visual"], media["duration"], media["width"], media["height"],
                     media["fps"])
    _paste_faces(frames, rng, clip["face"], style, media["fps"])
    audio = _audio(rng, style, clip["audio"], media["duration"], media["sample_rate"])
    write_mp4(path, frames=frames, audio=audio, fps=media["fps"], sample_rate=media["sample_rate"])


def _plan(rng, clips_per_class, splits, cue_noise):
    """Clip list with ids, classes, planted cues, per-clip seeds and per-video styles."""
    groups = []  # (split, class, segments)
    for name, factor in splits:
        for label in range(len(CLASSES)):
            left = max(2, round(clips_per_class * factor))
            while left > 0:
                segments = min(left, int(rng.integers(1, 4)))
                groups.append((name, label, segments))
                left -= segments
    numbers = rng.permutation(len(groups)) + 1  # so the id does not give away the class

    def cue(label):  # [true class], or with probability cue_noise [true, another] blended
        if rng.random() < cue_noise:
            return [label, int((label + rng.integers(1, 3)) % 3)]
        return [label]

    clips = []
    for (name, label, segments), number in zip(groups, numbers):
        style = {"tint": rng.uniform(-12, 12, 3), "people": int(rng.integers(3, 7)),
                 "faces": int(rng.integers(2, 5)), "skin": rng.uniform(150, 235),
                 "scale": rng.uniform(0.8, 1.3), "noise": rng.uniform(0.002, 0.01)}
        for segment in range(1, segments + 1):
            clips.append({"id": f"{number}_{segment}", "split": name, "label": label,
                          "visual": cue(label), "audio": cue(label), "face": cue(label),
                          "seed": int(rng.integers(2**63)), "style": style})
    return clips


def _frames(rng, style, classes, duration, width, height, fps):
    """(T, H*3/2, W) uint8 yuv420p frames: people with the palettes and motion of ``classes``.

    With two classes (an ambiguous cue) the background is their average and
    the people alternate between them. People are drawn as numbers into a
    label map, then coloured through a lookup table straight into YUV: far
    cheaper than drawing RGB and converting frames.
    """
    count = max(1, round(duration * fps))
    t = np.arange(count)[:, None] / fps
    k, unit = style["people"], height / 180  # unit: pixels of a 180-line frame
    # Background: class level + the video's tint + clip jitter, lighter at the top, static grain.
    colour = _BACKGROUND[classes].mean(axis=0) + style["tint"] + rng.uniform(-10, 10, 3)
    ramp = np.linspace(20, -10, height, dtype=np.float32)[:, None, None]
    grain = rng.normal(0, 5, (height, width, 1)).astype(np.float32)
    background = _yuv(colour + ramp + grain)
    x0 = rng.uniform(0.1, 0.9, k) * width
    y0 = rng.uniform(0.55, 0.8, k) * height
    who = np.array(classes)[np.arange(k) % len(classes)]  # each person's class
    x, y = np.empty((count, k)), np.empty((count, k))
    for cls in classes:
        mine = who == cls
        x[:, mine], y[:, mine] = _motion(rng, cls, x0[mine], y0[mine], t, unit)
    x = width - np.abs(np.mod(x, 2 * width) - width)  # bounce off the frame edges
    colours = _PALETTES[who, rng.integers(3, size=k)] + rng.uniform(-20, 20, (k, 3))
    table = np.vstack([np.zeros((1, 3)), _yuv(colours)]).astype(np.int16)  # label 0: background
    sprites = [_person(r) for r in 9 * unit * style["scale"] * rng.uniform(0.85, 1.15, k)]
    labels = np.zeros((count, height, width), np.uint8)
    for i in range(count):
        for j in np.argsort(y[i]):  # nearer (lower) people drawn last, in front
            mask, top, left = sprites[j]
            _paste(labels[i], mask, round(y[i, j]) - top, round(x[i, j]) - left, j + 1)
    flicker = rng.normal(0, 3, (count, 1, 1)).round().astype(np.int16)
    planes = []
    for c, step in ((0, 1), (1, 2), (2, 2)):  # Y full size, U and V subsampled 2x2
        where = labels[:, ::step, ::step]
        plane = np.broadcast_to(background[::step, ::step, c], where.shape).copy()
        plane[where > 0] = table[where[where > 0], c]
        plane += flicker if c == 0 else 0
        planes.append(np.clip(plane, 0, 255).astype(np.uint8).reshape(count, -1))
    return np.concatenate(planes, axis=1).reshape(count, height * 3 // 2, width)


def _paste_faces(frames, rng, classes, style, fps):
    """Draw the clip's faces, drifting slowly across the top of the frame, into yuv420p frames.

    Faces alternate between the expressions of ``classes`` (the face cue); they
    are about 0.38 of the frame height, large enough for detection at 40 px.
    """
    count, rows, width = frames.shape
    height = rows * 2 // 3
    size = 2 * (round(0.38 * height) // 2)  # even: chroma planes are half size
    k = style["faces"]
    slots = (np.arange(k) + 0.5) * width / k - size / 2  # evenly spread, apart when k <= 4
    for j, x0 in enumerate(slots):
        expression = CLASS_EXPRESSIONS[classes[j % len(classes)]]
        tone = style["skin"] + rng.uniform(-8, 8)
        skin = (int(min(tone + 15, 255)), int(tone * 0.8), int(tone * 0.67))
        rgb, mask = draw_face(expression, size=size, skin=skin)
        yuv = _yuv(rgb.astype(np.float32))
        drift = rng.uniform(-6, 6) * np.arange(count) / fps
        top = 2 * (int(rng.uniform(0.02, 0.12) * height) // 2)
        for i in range(count):
            left = 2 * (int(np.clip(x0 + drift[i], 0, width - size)) // 2)
            y_plane = frames[i, :height].reshape(height, width)
            y_plane[top:top + size, left:left + size][mask] = yuv[..., 0][mask]
            chroma = frames[i, height:].reshape(2, height // 2, width // 2)
            small = mask[::2, ::2]
            for c in (1, 2):
                region = chroma[c - 1, top // 2:(top + size) // 2, left // 2:(left + size) // 2]
                region[small] = yuv[::2, ::2, c][small]


def _motion(rng, cls, x0, y0, t, unit):
    """Positions (T, k) of people of class ``cls`` starting at (x0, y0)."""
    k = len(x0)
    if cls == 0:  # jumping and walking
        vx = rng.uniform(10, 30, k) * rng.choice([-1, 1], k) * unit
        jump = rng.uniform(10, 22, k) * unit * np.abs(np.sin(np.pi * rng.uniform(1.5, 2.5, k) * t
                                                             + rng.uniform(0, np.pi, k)))
        return x0 + vx * t, y0 - jump
    if cls == 1:  # slow drift, slight sway
        return (x0 + rng.uniform(-8, 8, k) * unit * t,
                y0 + unit * np.sin(2 * np.pi * 0.3 * t + rng.uniform(0, 6, k)))
    # trembling random walk
    return (x0 + np.cumsum(rng.normal(0, 1.5 * unit, (len(t), k)), axis=0),
            y0 + rng.normal(0, 1.5 * unit, (len(t), k)))


def _yuv(rgb):
    """RGB -> BT.601 limited-range YUV, what decoders assume for untagged H.264."""
    matrix = np.array([[0.257, 0.504, 0.098], [-0.148, -0.291, 0.439], [0.439, -0.368, -0.071]])
    yuv = np.clip(rgb, 0, 255) @ matrix.T + [16, 128, 128]
    return np.round(yuv).astype(np.int16)


def _person(radius):
    """Mask of a head disc over an elliptic body, and the head centre's row/column in it."""
    top, half = int(np.ceil(radius)), int(np.ceil(1.1 * radius))
    yy, xx = np.ogrid[-top:int(np.ceil(3.5 * radius)) + 1, -half:half + 1]
    body = (xx / (1.1 * radius)) ** 2 + ((yy - 1.6 * radius) / (1.9 * radius)) ** 2 <= 1
    return body | (xx**2 + yy**2 <= radius**2), top, half


def _paste(canvas, mask, top, left, value):
    """Set ``canvas`` to ``value`` under ``mask`` placed at (top, left), clipped to the frame."""
    h, w = canvas.shape
    y0, y1 = max(top, 0), min(top + mask.shape[0], h)
    x0, x1 = max(left, 0), min(left + mask.shape[1], w)
    if y0 < y1 and x0 < x1:
        canvas[y0:y1, x0:x1][mask[y0 - top:y1 - top, x0 - left:x1 - left]] = value


def _audio(rng, style, classes, duration, rate):
    """Mono float32 signal in [-1, 1]: the sounds of ``classes`` mixed at equal loudness."""
    t = np.arange(round(duration * rate)) / rate
    signal = sum(_sound(rng, cls, t, rate) for cls in classes)
    signal = signal / (np.abs(signal).max() + 1e-9) * rng.uniform(0.2, 0.8)  # random loudness
    signal = signal + rng.normal(0, style["noise"], t.size)  # never silent
    return np.clip(signal, -1, 1).astype(np.float32)


def _sound(rng, cls, t, rate):
    """Unit-peak signal whose timbre, pitch and rhythm follow class ``cls``."""
    if cls == 0:  # bright major chord, plucked on a regular beat, plus claps
        root, beat = rng.uniform(330, 520), rng.uniform(2, 3.5)
        tone = sum(np.sin(2 * np.pi * root * ratio * h * t) / h
                   for ratio in (1, 5 / 4, 3 / 2, 2) for h in (1, 2, 3, 4))
        phase = np.mod(t * beat + rng.random(), 1)
        clap = rng.normal(0, 1, t.size) * np.exp(-np.mod(phase + 0.5, 1) * 60)
        signal = tone * np.exp(-phase * 6) + 2 * np.diff(clap, prepend=0)  # diff: high-pass
    elif cls == 1:  # speech-like hum: harmonics under a formant, syllable-rate amplitude
        f0 = rng.uniform(140, 220) * (1 + 0.03 * np.sin(2 * np.pi * rng.uniform(0.5, 1.5) * t))
        formant = rng.uniform(450, 800)
        phase = 2 * np.pi * np.cumsum(f0) / rate
        signal = sum(np.exp(-((h * f0.mean() - formant) / 400) ** 2) * np.sin(h * phase)
                     for h in range(1, 11))
        signal = signal * (0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(3, 5) * t
                                              + rng.uniform(0, 6)))
    else:  # low rough tones (two detuned voices beat) plus rumbling noise bursts
        f0, rough = rng.uniform(55, 95), rng.uniform(15, 35)
        signal = sum(np.sin(2 * np.pi * f * h * t) / h
                     for f in (f0, f0 + rough) for h in (1, 2, 3))
        rumble = lfilter([1], [1, -0.995], rng.normal(0, 1, t.size))  # brown: below ~15 Hz
        bursts = np.mod(t * rng.uniform(0.7, 1.5) + rng.random(), 1) < rng.uniform(0.2, 0.5)
        signal = signal + 1.5 * rumble / rumble.std() * bursts
    return signal / (np.abs(signal).max() + 1e-9)


def write_mp4(path, *, frames, audio=None, fps, sample_rate=16000):
    """Encode an H.264 (+ AAC when ``audio`` is given) mp4, via ``.tmp`` renamed into place.

    ``frames`` are RGB ``(T, H, W, 3)`` or yuv420p planes ``(T, H*3/2, W)`` (uint8);
    ``audio`` is mono float32 in [-1, 1] or None for a clip without sound.
    Deterministic: the same input gives the same bytes (see module doc).
    """
    path = Path(path)
    rgb = frames.ndim == 4
    def encode(tmp):
        with av.open(str(tmp), "w", format="mp4", options={"fflags": "+bitexact"}) as container:
            video = container.add_stream("libx264", rate=fps)
            video.width = frames.shape[2]
            video.height = frames.shape[1] if rgb else frames.shape[1] * 2 // 3
            video.pix_fmt = "yuv420p"
            # zerolatency: no lookahead/B-frames; with them, x264's output varied between runs
            # under CPU load (seen here), and the same seed must give the same bytes.
            video.codec_context.options = {"preset": "veryfast", "tune": "zerolatency", "crf": "23",
                                           "threads": "1"}
            video.codec_context.flags |= Flags.bitexact
            video.codec_context.thread_count = 1  # x264's frame threads make output vary run to run
            sound = None
            if audio is not None:
                sound = container.add_stream("aac", rate=sample_rate, layout="mono")
                sound.codec_context.options = {"aac_coder": "fast"}  # 2x quicker, good enough here
                sound.codec_context.flags |= Flags.bitexact
            done = 0

            def audio_until(end):  # AAC takes 1024-sample frames; pts count samples
                nonlocal done
                while sound is not None and done < min(end, audio.size):
                    frame = av.AudioFrame.from_ndarray(audio[None, done:done + 1024],
                                                       format="fltp", layout="mono")
                    frame.sample_rate, frame.pts = sample_rate, done
                    container.mux(sound.encode(frame))
                    done += 1024

            for i, array in enumerate(frames):  # interleave: audio up to this frame's end first
                audio_until((i + 1) * sample_rate / fps)
                frame = av.VideoFrame.from_ndarray(array, format="rgb24" if rgb else "yuv420p")
                frame.pts = i
                container.mux(video.encode(frame))
            if sound is not None:
                audio_until(audio.size)
                container.mux(sound.encode(None))
            container.mux(video.encode(None))
    atomic_write(path, encode)




def remove_previous(out, listing):
    """Delete the clips an earlier run wrote here, listed in its ``listing`` JSON file (and
    any half-written ``.tmp``), so that a smaller re-run leaves no stale clips behind."""
    meta = out / listing
    if meta.is_file():
        for clip in json.loads(meta.read_text(encoding="utf-8")).get("clips", []):
            (out / clip["split"] / f"{clip['id']}.mp4").unlink(missing_ok=True)
        meta.unlink()
    for tmp in out.glob("*/*.mp4.tmp"):
        tmp.unlink()
