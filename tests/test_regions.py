"""Primary facial regions (eyes, nose, mouth) as masks and weight maps."""
from __future__ import annotations

import pytest
import torch

from ifqa_loss import regions

# Mean 68-point iBUG landmarks (x, y) of FFHQ-style aligned 256x256 faces (rounded; a typical frontal face).
MEAN_FACE_256 = [
    [57, 120], [58, 139], [60, 157], [64, 176], [70, 193], [81, 208], [95, 220], [110, 230], [128, 233], [146, 230],
    [161, 220], [175, 208], [186, 193], [193, 176], [196, 157], [199, 139], [200, 120], [70, 107], [79, 99], [91, 97],
    [104, 100], [116, 105], [140, 104], [152, 99], [164, 97], [177, 99], [186, 107], [128, 120], [128, 133],
    [128, 145], [128, 158], [114, 167], [121, 169], [128, 171], [135, 169], [142, 167], [84, 121], [92, 117],
    [101, 117], [109, 124], [100, 125], [91, 124], [147, 124], [155, 117], [164, 117], [172, 121], [165, 125],
    [156, 125], [101, 188], [111, 184], [121, 182], [128, 184], [135, 182], [145, 184], [155, 188], [145, 197],
    [136, 201], [128, 202], [120, 201], [111, 197], [105, 188], [121, 189], [128, 189], [135, 189], [151, 188],
    [135, 191], [128, 192], [121, 191],
]
PRIMARY = [i for idx in regions.REGION_LANDMARKS.values() for i in idx]


@pytest.fixture
def landmarks():
    """Two faces: the mean face, and the same face shifted 20 px right, 10 px up and shrunk by 10 %."""
    mean = torch.tensor(MEAN_FACE_256, dtype=torch.float32)
    moved = (mean - 128) * 0.9 + 128 + torch.tensor([20.0, -10.0])
    return torch.stack([mean, moved])


def _values_at(mask, lm, size):
    """Mask values at the pixels holding each landmark: (N, 68)."""
    px = (lm / 256 * size).floor().long().clamp(0, size - 1)
    return torch.stack([mask[i, 0, px[i, :, 1], px[i, :, 0]] for i in range(lm.shape[0])])


def test_landmark_mask_range_and_coverage(landmarks):
    mask = regions.primary_region_mask(256, landmarks)
    assert mask.shape == (2, 1, 256, 256) and mask.dtype == torch.float32
    assert mask.min() >= 0 and mask.max() <= 1
    assert set(mask.unique().tolist()) == {0.0, 1.0}  # hard mask by default
    area = mask.mean(dim=(1, 2, 3))
    assert (area > 0.02).all() and (area < 0.3).all()  # non-empty, but not the whole image
    vals = _values_at(mask, landmarks, 256)
    assert (vals[:, PRIMARY] == 1).all(), "every eye, nose and mouth landmark lies inside the mask"
    # the jaw line (0-16) is outside the primary regions
    assert (vals[:, :17] == 0).all()
    # each face's mask follows its own landmarks
    assert (mask[0] != mask[1]).float().mean() > 0.01
    assert area[1] < area[0]  # the shrunk face has smaller regions


def test_each_region_is_covered_separately(landmarks):
    boxes = regions.boxes_from_landmarks(landmarks, 256)
    assert boxes.shape == (2, 4, 4)
    assert ((boxes >= 0) & (boxes <= 1)).all()
    assert (boxes[..., 2] > boxes[..., 0]).all() and (boxes[..., 3] > boxes[..., 1]).all()
    for r, (name, idx) in enumerate(regions.REGION_LANDMARKS.items()):
        one = regions.region_masks(boxes[:, r:r + 1], 256)
        vals = _values_at(one, landmarks, 256)
        assert (vals[:, list(idx)] == 1).all(), name
        others = [i for i in PRIMARY if i not in idx]
        assert (vals[:, others] == 0).all(), f"{name} region spills onto other regions' landmarks"


def test_landmark_size_scales(landmarks):
    at256 = regions.primary_region_mask(128, landmarks, landmark_size=256)
    at512 = regions.primary_region_mask(128, landmarks * 2, landmark_size=512)
    torch.testing.assert_close(at256, at512)
    assert at256.shape == (2, 1, 128, 128)
    big = regions.primary_region_mask(512, landmarks * 2)  # landmark_size defaults to the mask size
    vals = _values_at(big, landmarks, 512)
    assert (vals[:, PRIMARY] == 1).all()


def test_bad_landmark_shape():
    with pytest.raises(ValueError, match=r"\(N, 68, 2\)"):
        regions.primary_region_mask(256, torch.zeros(1, 5, 2))


def test_template_mask_similar_to_landmark_mask():
    lm = torch.tensor(MEAN_FACE_256, dtype=torch.float32)[None]
    template = regions.primary_region_mask(256)
    from_lm = regions.primary_region_mask(256, lm)
    assert template.shape == (1, 1, 256, 256)
    assert template.min() >= 0 and template.max() <= 1
    ratio = (template.sum() / from_lm.sum()).item()
    assert 0.8 < ratio < 1.25
    iou = ((template * from_lm).sum() / (template + from_lm).clamp(max=1).sum()).item()
    assert iou > 0.8
    vals = _values_at(template, lm, 256)
    assert vals[0, PRIMARY].mean() > 0.9  # the template covers (almost) all primary landmarks of a typical face
    assert regions.primary_region_mask(64, n=3).shape == (3, 1, 64, 64)


def test_soft_mask_and_margin():
    boxes = regions.template_boxes(1)
    hard = regions.region_masks(boxes, 256)
    soft = regions.region_masks(boxes, 256, softness=0.3)
    assert soft.min() >= 0 and soft.max() <= 1
    assert ((soft > 0) & (soft < 1)).any()  # a ramp exists
    assert (soft[hard == 1] == 1).all()  # the ramp lies outside the hard mask
    wider = regions.region_masks(boxes, 256, margin=0.06)
    assert wider.sum() > hard.sum() and (wider[hard == 1] == 1).all()


@pytest.mark.parametrize("weight", [0.0, 2.0, 4.5])
def test_primary_region_weight_map_values(weight, landmarks):
    wmap = regions.primary_region_weight_map(256, weight=weight)
    assert wmap.shape == (1, 1, 256, 256)
    mask = regions.primary_region_mask(256)
    expected_values = {1.0} if weight == 0 else {1.0, 1.0 + weight}
    assert set(wmap.unique().tolist()) == expected_values
    torch.testing.assert_close(wmap, 1.0 + weight * mask)
    with_lm = regions.primary_region_weight_map(256, weight=weight, landmarks=landmarks)
    assert with_lm.shape == (2, 1, 256, 256)
    assert set(with_lm.unique().tolist()) == expected_values
    vals = _values_at(with_lm, landmarks, 256)
    assert (vals[:, PRIMARY] == 1 + weight).all() and (vals[:, :17] == 1).all()


def test_negative_weight_rejected():
    with pytest.raises(ValueError, match="weight must be >= 0"):
        regions.primary_region_weight_map(256, weight=-1.0)
