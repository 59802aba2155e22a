"""gemo's MTCNN cascade against facenet-pytorch's own, and its area-averaged crops."""

import numpy as np
import pytest
import torch
from facenet_pytorch.models.utils.detect_face import detect_face
from PIL import Image
from skimage.data import astronaut
from torch.nn import functional

from gemo.errors import GemoError
from gemo.faces import mtcnn
from gemo.faces.detect import create_detector


@pytest.fixture(scope="module")
def nets():
    detector = create_detector("mtcnn")
    detector.load()
    return detector._nets


def _group_photo():
    """A 360 x 640 'group': the astronaut's face at four sizes on a grey, noisy background."""
    rng = np.random.default_rng(0)
    canvas = rng.normal(120, 20, (360, 640, 3)).clip(0, 255).astype(np.uint8)
    face = Image.fromarray(astronaut()[20:220, 140:310])  # the face with some margin
    for x, y, width in ((20, 40, 150), (230, 60, 100), (400, 120, 70), (520, 200, 50)):
        height = round(width * face.height / face.width)
        canvas[y:y + height, x:x + width] = np.asarray(face.resize((width, height)))
    return canvas


def test_cascade_matches_facenet_pytorch(nets):
    """Same stages, thresholds and box arithmetic as facenet-pytorch's detect_face: the same
    faces, boxes within float rounding, on a batch of two different images."""
    batch = np.stack([_group_photo(), np.ascontiguousarray(_group_photo()[:, ::-1])])
    ours = mtcnn.detect(nets, batch, min_size=20.0)
    with torch.no_grad():
        theirs_boxes, theirs_points = detect_face(batch, 20.0, *nets, list(mtcnn.THRESHOLDS),
                                                  mtcnn.FACTOR, torch.device("cpu"))
    for (boxes, scores, landmarks), their_boxes, their_points in zip(ours, theirs_boxes,
                                                                     theirs_points):
        their_boxes = np.asarray(their_boxes, np.float32).reshape(-1, 5)
        their_points = np.asarray(their_points, np.float32).reshape(-1, 5, 2)
        assert len(boxes) >= 4  # the four pasted faces at least
        assert len(boxes) == len(their_boxes)
        order, their_order = np.argsort(boxes[:, 0]), np.argsort(their_boxes[:, 0])
        np.testing.assert_allclose(boxes[order], their_boxes[their_order, :4], atol=0.05)
        np.testing.assert_allclose(scores[order], their_boxes[their_order, 4], atol=1e-4)
        np.testing.assert_allclose(landmarks[order], their_points[their_order], atol=0.05)


@pytest.mark.parametrize("shape", [(2, 120, 160, 3), (1, 10, 30, 3)])  # 10 px: no pyramid level
def test_no_candidate_at_any_stage_gives_empty_arrays(nets, shape):
    flat = np.full(shape, 128, np.uint8)
    found = mtcnn.detect(nets, flat, min_size=20.0)
    assert len(found) == shape[0]
    for boxes, scores, landmarks in found:
        assert boxes.shape == (0, 4) and scores.shape == (0,) and landmarks.shape == (0, 5, 2)


@pytest.mark.parametrize("shape, size", [((37, 53), (23, 31)), ((37, 53), (50, 70)),
                                         ((360, 640), (217, 385))])
def test_area_resize_is_interpolate_area(shape, size):
    pixels = torch.randint(0, 256, (1, *shape, 3), dtype=torch.uint8)
    table = mtcnn._summed_area_table(pixels)
    ours = mtcnn._area_resize(table[0], size)
    theirs = functional.interpolate(pixels.permute(0, 3, 1, 2).float(), size=size, mode="area")
    torch.testing.assert_close(ours, theirs[0].permute(1, 2, 0), atol=1e-4, rtol=0)


def test_area_crops_are_interpolate_area_of_each_span():
    pixels = torch.randint(0, 256, (2, 40, 60, 3), dtype=torch.uint8)
    table = mtcnn._summed_area_table(pixels)
    spans = torch.tensor([[3, 30, 5, 40], [0, 40, 0, 60], [10, 12, 20, 21], [39, 40, 59, 60]])
    owner = torch.tensor([1, 0, 1, 0])
    crops = mtcnn._area_crops(table, owner, spans, 24)
    for crop, (top, bottom, left, right), image in zip(crops, spans.tolist(), owner.tolist()):
        part = pixels[image, top:bottom, left:right].permute(2, 0, 1)[None].float()
        expected = functional.interpolate(part, size=(24, 24), mode="area")[0].permute(1, 2, 0)
        torch.testing.assert_close(crop, expected, atol=1e-4, rtol=0)


def test_boxes_wholly_outside_the_image_are_dropped_with_their_crops(nets):
    pixels = torch.from_numpy(_group_photo()[None])
    table = mtcnn._summed_area_table(pixels)
    boxes = torch.tensor([[30.0, 50.0, 170.0, 190.0, 0.9],     # inside
                          [-90.0, 10.0, -20.0, 80.0, 0.9],     # left of the image
                          [700.0, 10.0, 760.0, 70.0, 0.9],     # right of it
                          [600.0, 300.0, 700.0, 400.0, 0.9]])  # across the corner: clipped
    owner = torch.zeros(4, dtype=torch.long)
    with torch.no_grad():
        (reg, prob), kept, _ = mtcnn._classify(nets[1], table, boxes, owner, 24, 32)
    assert torch.equal(kept, boxes[[0, 3]]) and len(reg) == len(prob) == 2
    assert prob[0, 1] > 0.7  # the crop that stayed with the first box is the face's


def test_detector_takes_frames_scaled_elsewhere():
    image = np.repeat(np.repeat(_group_photo(), 2, axis=0), 2, axis=1)  # 720 x 1280
    small = np.asarray(Image.fromarray(image).resize((640, 360), Image.Resampling.BOX))
    detector = create_detector("mtcnn", max_side=640)
    [faces] = detector.detect([image], scaled=[small])
    assert len(faces) >= 4 and faces.boxes[:, 2].max() > 640  # in the 1280-wide pixels
    with pytest.raises(GemoError, match="scaled image is 320 x 180, not 640 x 360"):
        detector.detect([image], scaled=[small[::2, ::2]])
    with pytest.raises(GemoError, match="1 scaled images for 2 images"):
        detector.detect([image, image], scaled=[small])


@pytest.mark.parametrize("part, shape", [("pnet", (2, 3, 57, 83)), ("rnet", (33, 3, 24, 24)),
                                         ("onet", (33, 3, 48, 48))])
def test_nets_compute_what_facenet_pytorchs_compute_bit_for_bit(part, shape):
    """gemo's own P-, R- and O-Net (facenet-pytorch's would import torchvision) load
    facenet-pytorch's weight files strictly and give exactly its outputs."""
    from facenet_pytorch.models import mtcnn as facenet

    from gemo.faces import mtcnn_nets

    theirs = getattr(facenet, part[0].upper() + "Net")(pretrained=True).eval()
    ours = mtcnn_nets.build(part)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    images = (torch.rand(shape, generator=torch.Generator().manual_seed(1)) - 0.5) * 2
    for layout in (torch.contiguous_format, torch.channels_last):  # gemo runs channels-last
        with torch.no_grad():
            expected = theirs.to(memory_format=layout)(images.contiguous(memory_format=layout))
            got = ours.to(memory_format=layout)(images.contiguous(memory_format=layout))
        assert len(got) == len(expected) == (3 if part == "onet" else 2)
        for mine, reference in zip(got, expected):
            assert torch.equal(mine, reference)
