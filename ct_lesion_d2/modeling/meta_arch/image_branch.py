"""A trainable whole-slice CNN beside module S (``MODEL.CT_CLASSIFIER.IMAGE_BRANCH``).

Beyond the paper, off in its configs. The ranked RoI batch carries box statistics and no
appearance, and the slice classifiers a user would pick instead (a torchvision ResNet18 from
scratch, ``ct_lesion_d2.benchmark.slice_classifier_baseline``) score better on the UCSD slices
than S on the frozen detector's rows. This branch gives the classifier that appearance: a CNN
sees the whole slice downscaled to fit ``IMAGE_BRANCH_SIZE``, and ``IMAGE_BRANCH_FUSION`` says
where its pooled feature vector goes:

- ``"features"``: into S's side branch (``SliceFeatureS``), beside the detector's slice
  features; S's last layer classifies both;
- ``"logits"``: through a linear layer of its own to class logits, added to S's logits (one
  loss on the sum), so the branch learns from its own layer whatever S's rate.

``IMAGE_BRANCH`` names the network:

- ``"resnet18"``: torchvision's ResNet18 from random initialisation;
- ``"detector_backbone"``: a trainable copy of the detector's own ResNet (its bottom-up, up to
  the stage the FPN reads: ResNet18_T1 with GroupNorm in the real-CT configs), which
  :func:`~.segmentation_weights.initialize_from_segmenter` fills with the segmentation
  checkpoint's weights when training starts. Pretraining on CT without any download: the
  segmenter learnt it from lesion masks; the frozen detector keeps its own weights;
- ``"ct_resnet"``: the same architecture from random initialisation (the control that tells
  the pretraining from the architecture).

It trains with S (the detector stays frozen), so it is never part of the RoI cache: in cached
mode the loader hands it the training mapper's augmented image of each record beside the cached
rows (``roi_batch_cache.py``).
"""

import copy

import torch
import torchvision
from detectron2.structures import ImageList
from torch import nn
from torch.nn import functional as F

__all__ = ["DETECTOR_BACKBONE", "IMAGE_BRANCH_ARCHS", "IMAGE_BRANCH_FUSIONS", "ImageBranch"]

# name -> (torchvision constructor, width of its pooled feature vector)
TORCHVISION_ARCHS = {"resnet18": (torchvision.models.resnet18, 512)}
# the archs that copy the detector's ResNet: from its trained weights, or its architecture only
DETECTOR_BACKBONE = "detector_backbone"
DETECTOR_ARCHS = (DETECTOR_BACKBONE, "ct_resnet")
IMAGE_BRANCH_ARCHS = (*TORCHVISION_ARCHS, *DETECTOR_ARCHS)
IMAGE_BRANCH_FUSIONS = ("features", "logits")


class ImageBranch(nn.Module):
    """A torchvision CNN without its last layer: slices -> (N, out_features) pooled features.

    Each slice (3, H, W) in 0-255 is normalised by ``pixel_mean`` / ``pixel_std`` and resized so
    that its longer side is ``size`` (bilinear, antialiased; the aspect ratio kept). The
    detector's ResNet normalises each sample on its own (GroupNorm or frozen BatchNorm), so the
    detector archs see one slice at a time, unpadded: a slice's features do not depend on the
    other slices of its batch, and training sees what inference sees. torchvision's ResNet18
    normalises over the batch in training anyway; its slices are zero-padded to a common size as
    Detectron2's ``ImageList`` does, and its global pooling averages over the padding too. With
    ``"logits"`` fusion, ``head`` maps the features to class logits.
    """

    def __init__(
        self,
        arch,
        size,
        pixel_mean,
        pixel_std,
        fusion="features",
        num_classes=None,
        detector_bottom_up=None,
    ):
        """
        Args:
            arch (str): one of ``IMAGE_BRANCH_ARCHS``.
            size (int): the longer side of the slice as the branch sees it, in pixels.
            pixel_mean, pixel_std (Sequence[float]): per-channel normalisation (0-255 units).
            fusion (str): one of ``IMAGE_BRANCH_FUSIONS``.
            num_classes (int or None): classes of the ``"logits"`` head (needed by it).
            detector_bottom_up (detectron2.modeling.Backbone or None): the detector's ResNet,
                whose architecture ``"detector_backbone"`` and ``"ct_resnet"`` copy.
        """
        super().__init__()
        if arch not in IMAGE_BRANCH_ARCHS:
            raise ValueError(
                f"MODEL.CT_CLASSIFIER.IMAGE_BRANCH must be '' (off) or one of "
                f"{sorted(IMAGE_BRANCH_ARCHS)}, got {arch!r}"
            )
        if fusion not in IMAGE_BRANCH_FUSIONS:
            raise ValueError(
                f"MODEL.CT_CLASSIFIER.IMAGE_BRANCH_FUSION must be one of {IMAGE_BRANCH_FUSIONS}, "
                f"got {fusion!r}"
            )
        self.arch, self.size, self.fusion = arch, size, fusion
        if arch in DETECTOR_ARCHS:
            if detector_bottom_up is None:
                raise ValueError(f"IMAGE_BRANCH {arch!r} needs the detector's bottom-up ResNet")
            # the detector is still random here (its checkpoint is loaded after building)
            self.net = PooledBackbone(copy.deepcopy(detector_bottom_up).requires_grad_(True))
            self.out_features = self.net.out_features
        else:
            constructor, self.out_features = TORCHVISION_ARCHS[arch]
            self.net = constructor(weights=None)
            self.net.fc = nn.Identity()
        self.head = nn.Linear(self.out_features, num_classes) if fusion == "logits" else None
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)

    def initialize_from_detector(self, detector_bottom_up):
        """Copy the detector's trained ResNet weights into the branch (``"detector_backbone"``;
        :func:`~.segmentation_weights.initialize_from_segmenter` calls it for that arch only).

        Returns:
            int: the number of tensors copied.
        """
        state = detector_bottom_up.state_dict()  # strict: the same architecture by construction
        self.net.body.load_state_dict(state)
        return len(state)

    @property
    def s_input_dim(self):
        """int: how many numbers the branch adds to S's input (its features with ``"features"``
        fusion, none with ``"logits"``)."""
        return self.out_features if self.fusion == "features" else 0

    def resized(self, image):
        """One normalised slice, its longer side scaled to ``size``: (3, h, w)."""
        image = (image.to(self.pixel_mean) - self.pixel_mean) / self.pixel_std
        height, width = image.shape[-2:]
        scale = self.size / max(height, width)
        shape = (max(1, round(height * scale)), max(1, round(width * scale)))
        return F.interpolate(image[None], size=shape, mode="bilinear", antialias=True)[0]

    def forward(self, images):
        """
        Args:
            images (list[Tensor]): (3, H, W) slices in 0-255, any sizes.

        Returns:
            Tensor: (N, out_features).
        """
        resized = [self.resized(x) for x in images]
        if self.arch in DETECTOR_ARCHS:
            return torch.cat([self.net(x[None]) for x in resized])
        return self.net(ImageList.from_tensors(resized, 32).tensor)


class PooledBackbone(nn.Module):
    """A Detectron2 backbone as a feature extractor: the global average of its last output."""

    def __init__(self, body):
        super().__init__()
        self.body = body
        shapes = body.output_shape()
        self.out_name = list(shapes)[-1]
        self.out_features = shapes[self.out_name].channels

    def forward(self, x):
        return self.body(x)[self.out_name].mean(dim=(2, 3))
