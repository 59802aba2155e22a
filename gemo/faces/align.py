"""Face alignment: a similarity transform taking 5 landmarks onto a 112 x 112 template.

The template is the usual ArcFace one (eyes, nose tip, mouth corners), as
used for aligned crops in Quach's pipeline.

>>> crop = align_face(image, landmarks)          # doctest: +SKIP
>>> crop.shape
(112, 112, 3)
"""

import numpy as np
from PIL import Image

# (x, y) of left eye, right eye, nose, left and right mouth corner in a 112 x 112 crop.
TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)


def similarity_transform(source, target):
    """The 2 x 3 matrix of the least-squares similarity (rotation, scale, shift) source -> target.

    Umeyama's closed form; reflections are excluded.
    """
    source = np.asarray(source, np.float64)
    target = np.asarray(target, np.float64)
    mean_s, mean_t = source.mean(axis=0), target.mean(axis=0)
    cs, ct = source - mean_s, target - mean_t
    covariance = ct.T @ cs / len(source)
    u, singular, vt = np.linalg.svd(covariance)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1
    rotation = u @ np.diag(sign) @ vt
    variance = (cs ** 2).sum() / len(source)
    scale = (singular * sign).sum() / variance if variance > 0 else 1.0
    shift = mean_t - scale * rotation @ mean_s
    return np.hstack([scale * rotation, shift[:, None]])


def align_face(image, landmarks, *, size=112):
    """Warp ``image`` (H, W, 3 uint8) so that ``landmarks`` (5, 2) land on the template.

    Pixels that map outside ``image`` are black.
    """
    template = TEMPLATE_112 * (size / 112.0)
    matrix = similarity_transform(landmarks, template)
    # PIL wants the inverse map: output pixel -> input pixel.
    inverse = np.linalg.inv(np.vstack([matrix, [0.0, 0.0, 1.0]]))[:2]
    # Only the part of the image the crop samples goes to PIL (a whole 720p frame per face cost
    # more than the warp); a whole-pixel shift of the map keeps the samples, up to rounding.
    corners = inverse @ np.array([[0, size, 0, size], [0, 0, size, size], [1, 1, 1, 1]], np.float64)
    height, width = image.shape[:2]
    x0, y0 = (max(0, int(np.floor(low)) - 2) for low in corners.min(axis=1))
    x1, y1 = (min(limit, int(np.ceil(high)) + 2)
              for limit, high in zip((width, height), corners.max(axis=1)))
    if x0 >= x1 or y0 >= y1:
        return np.zeros((size, size, 3), np.uint8)
    inverse[:, 2] -= (x0, y0)
    warped = Image.fromarray(np.ascontiguousarray(image[y0:y1, x0:x1])).transform(
        (size, size), Image.Transform.AFFINE, data=inverse.reshape(-1).tolist(),
        resample=Image.Resampling.BILINEAR,
    )
    return np.asarray(warped)
