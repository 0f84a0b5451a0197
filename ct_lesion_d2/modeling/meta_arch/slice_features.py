"""Slice-level inputs of module S beyond the paper: lesion burden and a global backbone feature.

The paper's S sees only the ranked RoI batch (a confidence and four box numbers per row). These
options of ``CTMaskNetClassifier`` (``MODEL.CT_CLASSIFIER``, all off in the paper's configs)
give it what the batch lacks, computed from the same frozen detector pass:

- ``LESION_BURDEN_FEATURES``: :func:`lesion_burden`, 10 numbers from the mask head's lesions
  (``BURDEN_FEATURE_NAMES``);
- ``GLOBAL_FEATURES``: :func:`global_average`, the RoI heads' feature map averaged over the
  image (not over the batch padding).

They reach S through a side branch (:class:`SliceFeatureS`): the rows go through S's two hidden
layers as in the paper, the slice vector through one small layer, and S's last layer sees both.
"""

import math

import cv2
import numpy as np
import torch
from detectron2.layers.mask_ops import paste_masks_in_image
from torch import nn

__all__ = [
    "BURDEN_FEATURE_NAMES",
    "SliceFeatureS",
    "crude_lung_mask",
    "global_average",
    "lesion_burden",
]

# sizes are sqrt(lesion area / image area); counts as log(1 + n) to keep the scale near 1
BURDEN_FEATURE_NAMES = (
    "lesion_area_over_image",
    "lesion_area_over_lung",
    "lung_area_over_image",
    "log1p_num_lesions",
    "lesion_size_q25",
    "lesion_size_q50",
    "lesion_size_q75",
    "lesion_size_max",
    "lesion_score_max",
    "lesion_score_mean",
)
# the lung area a burden is divided by is at least this fraction of the image
MIN_LUNG_FRACTION = 0.01


def crude_lung_mask(grey):
    """A crude lung mask: dark pixels inside the outline of the largest bright region.

    Otsu's threshold splits the slice into bright (body wall, mediastinum) and dark (air, lung)
    pixels; the largest bright connected component is taken as the body and its outer contour
    filled; the dark pixels inside it are the lung. No learning and no HU: it works on any 8-bit
    slice, and fails gracefully (a dark background counts as outside the body; a figure whose
    largest bright region is its white margin gives a lung of all dark pixels).

    Args:
        grey (np.ndarray): (H, W) uint8 slice.

    Returns:
        np.ndarray: (H, W) bool.
    """
    _, bright = cv2.threshold(grey, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(bright, connectivity=8)
    if count <= 1:
        return np.zeros(grey.shape, dtype=bool)
    body = (labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))).astype(np.uint8)
    contours, _ = cv2.findContours(body, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    filled = np.zeros_like(body)
    cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)
    return (filled > 0) & (bright == 0)


def lesion_burden(instances, image, score_thresh):
    """The lesion-burden vector of one slice (``BURDEN_FEATURE_NAMES``).

    Args:
        instances (Instances): the RoI heads' detections in the frame of ``image``, with
            ``pred_boxes``, ``scores`` and ``pred_masks`` (R, 1, M, M) probabilities.
        image (Tensor): (C, H, W) the slice as the detector saw it (0-255, before normalising).
        score_thresh (float): detections with a lower score are not lesions.

    Returns:
        Tensor: (10,) float32 on the device of ``image``.
    """
    height, width = image.shape[-2:]
    area = float(height * width)
    grey = image[0].detach().clamp(0, 255).round().to(torch.uint8).cpu().numpy()
    lung = torch.from_numpy(crude_lung_mask(grey)).to(image.device)
    lung_area = max(float(lung.sum()), MIN_LUNG_FRACTION * area)
    keep = instances.scores >= score_thresh
    scores = instances.scores[keep].float()
    if len(scores):
        masks = paste_masks_in_image(
            instances.pred_masks[keep][:, 0], instances.pred_boxes[keep], (height, width), 0.5
        )
        union = masks.any(dim=0)
        sizes = torch.sqrt(masks.flatten(1).sum(dim=1).float() / area)
        quantiles = torch.quantile(sizes, sizes.new_tensor([0.25, 0.5, 0.75, 1.0]))
        lesion, inside = float(union.sum()), float((union & lung).sum())
        tail = [*quantiles.tolist(), float(scores.max()), float(scores.mean())]
    else:
        lesion = inside = 0.0
        tail = [0.0] * 6
    values = [
        lesion / area,
        inside / lung_area,
        float(lung.sum()) / area,
        math.log1p(len(scores)),
        *tail,
    ]
    return torch.tensor(values, dtype=torch.float32, device=image.device)


def global_average(feature, image_sizes, stride):
    """Average a batched feature map over each image's own cells, not its padding.

    Args:
        feature (Tensor): (N, C, H', W') backbone feature map of a padded batch.
        image_sizes (list[tuple[int, int]]): the (height, width) of each image before padding.
        stride (int): the map's stride.

    Returns:
        Tensor: (N, C).
    """
    pooled = [
        feature[i, :, : math.ceil(h / stride), : math.ceil(w / stride)].mean(dim=(1, 2))
        for i, (h, w) in enumerate(image_sizes)
    ]
    return torch.stack(pooled)


class SliceFeatureS(nn.Module):
    """Module S with a side branch for a slice-feature vector.

    The input is one flat vector per image, ``[flattened rows, slice features]``: the rows go
    through ``Linear(rows_dim -> F) + ReLU, Linear(F -> F) + ReLU`` (the paper's S without its
    last layer), the slice features through ``Linear(slice_dim -> H) + ReLU``, and
    ``Linear(F + H -> num_classes)`` classifies both.
    """

    def __init__(self, rows_dim, slice_dim, hidden_dim, slice_hidden_dim, num_classes):
        """
        Args:
            rows_dim (int): B times the row width.
            slice_dim (int): length of the slice-feature vector.
            hidden_dim (int): F.
            slice_hidden_dim (int): H.
            num_classes (int): image classes.
        """
        super().__init__()
        self.rows_dim, self.num_classes = rows_dim, num_classes
        self.in_features = rows_dim + slice_dim
        self.rows = nn.Sequential(
            nn.Linear(rows_dim, hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, hidden_dim),
            nn.ReLU(inplace=True),
        )
        self.slice = nn.Sequential(nn.Linear(slice_dim, slice_hidden_dim), nn.ReLU(inplace=True))
        self.head = nn.Linear(hidden_dim + slice_hidden_dim, num_classes)

    def forward(self, x):
        rows, slice_features = x[:, : self.rows_dim], x[:, self.rows_dim :]
        return self.head(torch.cat([self.rows(rows), self.slice(slice_features)], dim=1))
