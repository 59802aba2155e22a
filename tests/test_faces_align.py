import numpy as np
import pytest
from PIL import Image

from gemo.faces.align import TEMPLATE_112, align_face, similarity_transform


def _apply(matrix, points):
    return points @ matrix[:, :2].T + matrix[:, 2]


def test_similarity_transform_recovers_rotation_scale_shift():
    angle, scale, shift = np.deg2rad(25), 1.7, np.array([12.0, -4.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    source = TEMPLATE_112
    target = source @ (scale * rotation).T + shift
    matrix = similarity_transform(source, target)
    np.testing.assert_allclose(matrix[:, :2], scale * rotation, atol=1e-9)
    np.testing.assert_allclose(matrix[:, 2], shift, atol=1e-9)


def test_similarity_transform_never_reflects():
    mirrored = TEMPLATE_112 * [-1, 1]
    matrix = similarity_transform(TEMPLATE_112, mirrored)
    assert np.linalg.det(matrix[:, :2]) > 0


def test_align_face_puts_landmarks_on_the_template():
    # Draw five bright dots at rotated, scaled, shifted template positions on a dark image.
    angle, scale = np.deg2rad(-20), 2.0
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    landmarks = TEMPLATE_112 @ (scale * rotation).T + [60.0, 90.0]
    image = np.zeros((400, 400, 3), np.uint8)
    for x, y in landmarks:
        image[int(round(y)) - 3:int(round(y)) + 4, int(round(x)) - 3:int(round(x)) + 4] = 255
    crop = align_face(image, landmarks)
    assert crop.shape == (112, 112, 3)
    for x, y in TEMPLATE_112:
        assert crop[int(round(y)), int(round(x))].min() > 200, (x, y)
    assert crop[5, 5].max() == 0 and crop[56, 20].max() == 0


@pytest.mark.parametrize("size", [64, 112])
def test_align_face_size(size):
    image = np.full((200, 200, 3), 90, np.uint8)
    assert align_face(image, TEMPLATE_112 + 40, size=size).shape == (size, size, 3)


@pytest.mark.parametrize("shift", [(150.0, 100.0), (-30.0, 10.0), (270.0, 190.0), (900.0, 900.0)])
@pytest.mark.parametrize("angle", [0.0, 35.0])
def test_align_face_samples_as_a_warp_of_the_whole_image(shift, angle):
    """Only the sampled region goes to PIL: the crop must equal a warp of the whole frame
    (up to float rounding of the shifted map: one grey level), for faces inside, across the
    edges and wholly outside the image."""
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    theta = np.deg2rad(angle)
    rotation = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    landmarks = TEMPLATE_112 @ (0.8 * rotation).T + shift
    matrix = similarity_transform(landmarks, TEMPLATE_112)
    inverse = np.linalg.inv(np.vstack([matrix, [0.0, 0.0, 1.0]]))[:2]
    whole = np.asarray(Image.fromarray(image).transform(
        (112, 112), Image.Transform.AFFINE, data=inverse.reshape(-1).tolist(),
        resample=Image.Resampling.BILINEAR))
    crop = align_face(image, landmarks)
    assert np.abs(crop.astype(int) - whole).max() <= 1
    assert np.array_equal(crop == 0, whole == 0)  # the same black outside the image
