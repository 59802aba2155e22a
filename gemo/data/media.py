"""Media decoding through PyAV (its wheels bundle FFmpeg; no system ffmpeg needed)."""

import math

import av
import numpy as np

from gemo.errors import GemoError


class MediaError(Exception):
    """A clip that cannot give what was asked; ``kind`` names why, for the failure table.

    Kinds: ``decode`` (unreadable or not a video), ``no-audio``, ``no-video``,
    ``too-short``, ``nan`` (features not finite).
    """

    def __init__(self, kind, message):
        super().__init__(message)
        self.kind = kind


def _reason(error):
    """FFmpeg's words for ``error``, without its raw error number and the path."""
    return getattr(error, "strerror", None) or str(error)


def _open(path):
    try:
        return av.open(str(path))
    except av.InvalidDataError as error:
        raise MediaError("decode", f"not a video file or damaged: {_reason(error)}") from None
    except (av.FFmpegError, OSError, UnicodeDecodeError) as error:
        raise MediaError("decode", f"cannot open: {_reason(error)}") from None


def _duration(container, stream):
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    if stream.frames and stream.average_rate:
        return stream.frames / float(stream.average_rate)
    return None


def duration(path):
    """Seconds a clip lasts (its video stream's, else its audio's), from the header only; None
    if it does not say. A file that cannot be opened raises :class:`MediaError`."""
    with _open(path) as container:
        streams = container.streams.video or container.streams.audio
        if not streams:
            raise MediaError("decode", "no video or audio stream")
        return _duration(container, streams[0])


def _start(stream):
    if stream.start_time is not None and stream.time_base is not None:
        return float(stream.start_time * stream.time_base)
    return 0.0


class Media:
    """One clip, decoded at most once for all the feature sets computed from it.

    :meth:`frames` keeps the pictures it picked, so sets that want the same frames
    at other sizes (``frames`` at 224 x 224, ``faces`` at full size) share one
    decode. ``frame_counts`` names the counts of evenly spaced frames that will be
    asked for: the first :meth:`frames` call picks all of them in one decoding
    pass (``frames`` takes 10 per clip, ``faces`` 5). :meth:`audio` keeps the
    signal per sample rate. A decoding error is kept as well and raised again
    to every set that asks.

    >>> media = Media("clip.mp4", frame_counts=(10, 5))     # doctest: +SKIP
    >>> small, times = media.frames(count=10, size=224)     # doctest: +SKIP
    >>> full, _ = media.frames(count=5, max_side=0)         # no second decode  # doctest: +SKIP
    """

    def __init__(self, path, *, frame_counts=()):
        self.path = path
        self.frame_counts = tuple(sorted(set(frame_counts)))
        self._kept = {}

    def _once(self, key, decode):
        """What ``decode()`` returned for ``key``, decoding only the first time; a
        MediaError is kept and raised again."""
        if key not in self._kept:
            try:
                self._kept[key] = decode()
            except MediaError as error:
                self._kept[key] = error
        return self._get(key)

    def _get(self, key):
        kept = self._kept[key]
        if isinstance(kept, MediaError):
            raise MediaError(kept.kind, str(kept))
        return kept

    def frames(self, *, count=10, size=224, min_duration=0.5, max_side=None):
        """Like :func:`read_frames`, sharing the decode with earlier calls and planned counts."""
        picked, times = self._picked(count, min_duration)
        return np.stack([_to_rgb(frame, size, max_side) for frame in picked]), times.copy()

    def frame_size(self, *, count=10, min_duration=0.5):
        """``(height, width)`` of the upright frames in pixels, as ``max_side=0`` gives them,
        without converting any (to map detections on scaled frames back)."""
        frame = self._picked(count, min_duration)[0][0]
        size = (frame.height, frame.width)
        return size[::-1] if _quarter_turns(frame) % 2 else size

    def _picked(self, count, min_duration):
        key = ("video", count, min_duration)
        if key not in self._kept:  # one pass picks this count and the planned ones not yet kept
            counts = {count} | {each for each in self.frame_counts
                                if ("video", each, min_duration) not in self._kept}
            try:
                found = _pick_frames(self.path, counts, min_duration)
            except MediaError as error:
                found = dict.fromkeys(counts, error)
            for each, kept in found.items():
                self._kept[("video", each, min_duration)] = kept
        return self._get(key)

    def audio(self, *, sample_rate=16000, min_duration=0.5):
        """Like :func:`read_audio`, decoding once per ``sample_rate``; the array is read-only."""
        return self._once(("audio", sample_rate, min_duration),
                          lambda: _read_only(read_audio(self.path, sample_rate=sample_rate,
                                                        min_duration=min_duration)))


def check_rgb(image, *, task):
    """``image`` as an array, or a :class:`GemoError` unless it is H x W x 3 uint8 RGB, the
    pictures :meth:`Media.frames` gives and the detectors take (``task``: "face detection")."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
        raise GemoError(f"{task} takes H x W x 3 uint8 RGB images, not {image.dtype} "
                        f"{image.shape}")
    return image


def _read_only(array):
    array.flags.writeable = False  # shared by several feature sets: none may change it
    return array


def read_frames(path, *, count=10, size=224, min_duration=0.5, max_side=None):
    """Decode ``count`` RGB frames evenly spaced in time, resized to ``size`` x ``size``.

    Target times are the centres of ``count`` equal slices of the clip; for
    each, the nearest decoded frame is kept (non-reference frames are not
    decoded, so it can be up to two frame intervals away; ``timestamps`` say
    which frame was taken). Only the kept frames are
    converted and scaled. A rotation stored with the video (the display matrix
    phones write for portrait clips) is applied, so frames come out upright as
    players show them; only multiples of 90 degrees are honoured (others, and
    mirroring, are ignored). Returns ``(frames, timestamps)``: uint8 array of shape
    ``(count, size, size, 3)`` and float64 seconds from the stream start.

    ``max_side`` keeps the aspect ratio instead (``size`` is then unused): frames
    are scaled down so that their longer side is at most ``max_side`` pixels
    (never up); ``max_side=0`` keeps the stored resolution. Face detection wants
    this: squashing would distort faces and shrink them below detectable sizes.

    >>> frames, times = read_frames("clip.mp4", count=10, size=224)  # doctest: +SKIP
    """
    return Media(path).frames(count=count, size=size, min_duration=min_duration,
                              max_side=max_side)


def _pick_frames(path, counts, min_duration):
    """For each of ``counts``: the decoded frames nearest that many target times, and their
    times in seconds; one decoding pass serves them all."""
    with _open(path) as container:
        if not container.streams.video:
            raise MediaError("no-video", "no video stream")
        stream = container.streams.video[0]
        # Skip decoding frames no other frame refers to (B-frames): about a third less work;
        # each kept frame is then the nearest decodable one, within two frame intervals.
        stream.codec_context.skip_frame = "NONREF"
        # One decoding thread: clips are decoded in parallel by the workers, and FFmpeg's
        # default slice threads cost 10% more CPU here for no gain.
        stream.codec_context.thread_count = 1
        duration = _duration(container, stream)
        if duration is not None and duration < min_duration:
            raise MediaError("too-short", f"video lasts {duration:.2f} s (< {min_duration} s)")
        start = _start(stream)
        targets = {count: [start + (i + 0.5) * (duration or 0.0) / count for i in range(count)]
                   for count in counts}
        picked = {count: [] for count in counts}
        previous = None
        try:
            for frame in container.decode(stream):
                if frame.time is None:
                    continue
                for count, chosen in picked.items():
                    while len(chosen) < count and frame.time >= targets[count][len(chosen)]:
                        target = targets[count][len(chosen)]
                        nearest = frame
                        if previous is not None and target - previous.time <= frame.time - target:
                            nearest = previous
                        chosen.append(nearest)
                if all(len(chosen) == count for count, chosen in picked.items()):
                    break
                previous = frame
        except av.FFmpegError as error:
            if previous is None:
                raise MediaError("decode", f"video decoding failed: {_reason(error)}") from None
            # A truncated tail: the frames decoded so far are still good.
        if previous is None and not any(picked.values()):
            raise MediaError("decode", "no video frame could be decoded")
    out = {}
    for count, chosen in picked.items():
        chosen += [previous] * (count - len(chosen))  # targets past the last decoded frame
        out[count] = (chosen, np.asarray([frame.time - start for frame in chosen], np.float64))
    return out


def _to_rgb(frame, size, max_side=None):
    turns = _quarter_turns(frame)
    if max_side is None:
        width = height = size
    else:
        scale = min(1.0, max_side / max(frame.width, frame.height)) if max_side else 1.0
        width = max(1, round(frame.width * scale))
        height = max(1, round(frame.height * scale))
    # One thread, as the decoder: PyAV 17+ scales on a new pool of one thread per core for
    # every frame, and each hand-off to a core the other worker holds waits for it.
    if (width, height) == (frame.width, frame.height):
        rgb = frame.to_ndarray(format="rgb24", threads=1)
    else:
        rgb = frame.to_ndarray(format="rgb24", width=width, height=height, interpolation="AREA",
                               threads=1)
    if turns:
        rgb = np.ascontiguousarray(np.rot90(rgb, turns))
    return rgb


def _quarter_turns(frame):
    """Counter-clockwise quarter turns that make ``frame`` upright (its display matrix)."""
    try:
        angle = frame.rotation  # degrees counter-clockwise, from the DISPLAYMATRIX side data
    except (AttributeError, ValueError, TypeError):
        return 0
    if not angle or angle % 90:
        return 0
    return int(angle // 90) % 4


def read_audio(path, *, sample_rate=16000, min_duration=0.5):
    """Decode the first audio stream as mono float32 at ``sample_rate`` (nominally in [-1, 1]).

    The result is trimmed to the stream's declared duration, which drops the
    AAC encoder padding the decoder returns.

    >>> signal = read_audio("clip.mp4", sample_rate=16000)  # doctest: +SKIP
    """
    with _open(path) as container:
        if not container.streams.audio:
            raise MediaError("no-audio", "no audio stream")
        stream = container.streams.audio[0]
        duration = _duration(container, stream)
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        chunks = []
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
        except av.FFmpegError as error:
            if not chunks:
                raise MediaError("decode", f"audio decoding failed: {_reason(error)}") from None
    signal = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    if duration is not None:
        signal = signal[: int(math.ceil(duration * sample_rate))]
    if len(signal) < min_duration * sample_rate:
        raise MediaError(
            "too-short", f"audio lasts {len(signal) / sample_rate:.2f} s (< {min_duration} s)"
        )
    return signal.astype(np.float32, copy=False)
