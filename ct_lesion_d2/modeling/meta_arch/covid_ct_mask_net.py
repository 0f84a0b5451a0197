"""COVID-CT-Mask-Net: a chest-CT slice classifier on top of a trained lesion Mask R-CNN.

The model of docs/PAPER.md, section 2.

The detector (backbone, RPN, RoI box branch) of the segmentation model runs in inference mode
and ranks B detections per image; each becomes a row ``[confidence, 4 box-regression deltas]``
and module S classifies the flattened B x 5 batch as Control, Common Pneumonia or COVID-19.
Only module S and the affine parameters of the backbone BatchNorm layers are trained (and, an
option beyond the paper, a whole-slice CNN beside S: ``image_branch.py``).
"""

import logging

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN
from detectron2.structures import Boxes
from torch import nn
from torch.nn import functional as F

from ..detect import detect, same_size_groups
from .image_branch import ImageBranch
from .roi_batch import ROW_FEATURES, build_roi_batch
from .slice_features import BURDEN_FEATURE_NAMES, SliceFeatureS, global_average, lesion_burden

__all__ = [
    "CTMaskNetClassifier",
    "build_s_module",
    "decide_class",
    "ranked_roi_batches",
    "roi_batch_options",
]

logger = logging.getLogger(__name__)


def build_s_module(batch_detections, hidden_dim, num_classes, row_width=5):
    """Module S: Linear(5B -> F) + ReLU, Linear(F -> F) + ReLU, Linear(F -> num_classes).

    Args:
        batch_detections (int): B, the ranked detections per image (5 numbers each).
        hidden_dim (int): F.
        num_classes (int): image classes.
        row_width (int): numbers per row (5 in the paper; more with ``ROI_HEAD_FEATURES``).

    Returns:
        nn.Sequential: maps (N, 5B) to (N, num_classes) logits.
    """
    return nn.Sequential(
        nn.Linear(row_width * batch_detections, hidden_dim),
        nn.ReLU(inplace=True),
        nn.Linear(hidden_dim, hidden_dim),
        nn.ReLU(inplace=True),
        nn.Linear(hidden_dim, num_classes),
    )


def roi_batch_options(cfg):
    """The ranked-RoI-batch settings of a config (``MODEL.CT_CLASSIFIER``), read here only.

    Returns:
        dict: ``sigmoid_scores`` and the :func:`build_roi_batch` options (``batch_size``,
        ``score_thresh``, ``nms_thresh``, ``remove_empty_boxes``, ``row_features``), as
        :func:`ranked_roi_batches` takes them.
    """
    ct = cfg.MODEL.CT_CLASSIFIER
    return {
        "sigmoid_scores": ct.SIGMOID_SCORES,
        "batch_size": ct.BATCH_DETECTIONS,
        "score_thresh": ct.ROI_SCORE_THRESH,
        "nms_thresh": ct.ROI_NMS_THRESH,
        "remove_empty_boxes": ct.REMOVE_EMPTY_BOXES,
        "row_features": ct.ROW_FEATURES,
    }


def roi_candidates(roi_heads, features, proposals, sigmoid_scores=False, head_features=False):
    """Per-proposal class confidences, decoded boxes and raw deltas of the RoI box branch.

    Args:
        roi_heads (StandardROIHeads): gives the box pooler, head and predictor.
        features (dict[str, Tensor]): backbone features.
        proposals (list[Instances]): RPN proposals, one per image.
        sigmoid_scores (bool): sigmoid of the class logit as confidence instead of softmax.
        head_features (bool): also return the box head's output (R, FC_DIM).

    Returns:
        tuple[Tensor]: scores (R, K), boxes (R, K, 4) and deltas (R, K, 4) of the R proposals
        of all images in order, K foreground classes (class-agnostic regression: the same box
        for every class); and the box head's output when asked.
    """
    box_features = roi_heads.box_pooler(
        [features[f] for f in roi_heads.box_in_features], [p.proposal_boxes for p in proposals]
    )
    head = roi_heads.box_head(box_features)
    predictions = roi_heads.box_predictor(head)
    logits, deltas = predictions
    num_fg = logits.shape[1] - 1
    if sigmoid_scores:
        scores = torch.sigmoid(logits[:, :num_fg])
    else:
        scores = F.softmax(logits, dim=1)[:, :num_fg]
    boxes = torch.cat(roi_heads.box_predictor.predict_boxes(predictions, proposals))
    # shape[0], not len(): a traced graph keeps it dynamic
    boxes, deltas = (t.reshape(t.shape[0], -1, 4).expand(-1, num_fg, 4) for t in (boxes, deltas))
    return (scores, boxes, deltas, head) if head_features else (scores, boxes, deltas)


def ranked_roi_batches(
    roi_heads, features, proposals, sigmoid_scores=False, roi_head_features=False, **batch_options
):
    """The ranked RoI batch of each image, from the RoI box branch of a Mask R-CNN.

    Used by the classifier, and by the predictor to show the batch a segmentation model would
    hand to module S.

    Args:
        roi_heads, features, proposals, sigmoid_scores: as :func:`roi_candidates`.
        roi_head_features (bool): append the box head's output to each row.
        **batch_options: ``build_roi_batch`` options (batch_size, score_thresh, nms_thresh,
            remove_empty_boxes, row_features).

    Returns:
        list[RoIBatch]: rows (B, 5), boxes (B, 4), scores (B,) per image.
    """
    candidates = roi_candidates(
        roi_heads, features, proposals, sigmoid_scores, head_features=roi_head_features
    )
    return roi_batches_from_candidates(candidates, proposals, **batch_options)


def roi_batches_from_candidates(candidates, proposals, **batch_options):
    """Split the candidates of :func:`roi_candidates` by image and rank each image's batch; a
    fourth candidate tensor (the box head's features) is appended to the rows."""
    sizes = [len(p) for p in proposals]
    per_image = zip(*(c.split(sizes) for c in candidates))
    return [
        build_roi_batch(s, b, d, p.image_size, *head, **batch_options)
        for (s, b, d, *head), p in zip(per_image, proposals)
    ]


def rescaled_roi_boxes(batch, inputs, image_size):
    """The boxes of a :class:`RoIBatch`, from the ``image_size`` (height, width) the detector
    saw to the input's ``height``/``width`` where given, as ``Boxes`` (a copy)."""
    height, width = image_size
    boxes = Boxes(batch.boxes.detach().clone())
    boxes.scale(inputs.get("width", width) / width, inputs.get("height", height) / height)
    return boxes


@META_ARCH_REGISTRY.register()
class CTMaskNetClassifier(GeneralizedRCNN):
    """COVID-CT-Mask-Net image classifier: a frozen Mask R-CNN detector (no mask branch) + S.

    Inputs are Detectron2's ``list[dict]`` with ``"image"`` and, for training, ``"class_id"``
    (int: 0 Control, 1 Common Pneumonia, 2 COVID-19). Training returns
    ``{"loss_cls_image"}``; inference returns per image ``class_logits``, ``class_probs``
    (sigmoid), ``pred_class`` (argmax, or ``MODEL.CT_CLASSIFIER.DECISION_THRESHOLD`` on
    the second class's probability for two classes), ``roi_boxes`` (``Boxes``, B ranked rows,
    rescaled to the input's ``height``/``width``), ``roi_scores`` (B,) and
    ``roi_num_detections`` (distinct detections before replication). An image on which no
    detection survives (no proposal with a non-empty box) is classified from a batch of B zero
    rows.

    Building it loads nothing. A classifier starts from a trained segmentation checkpoint
    (``MODEL.CT_CLASSIFIER.SEGMENTATION_WEIGHTS``), which the trainer loads when training
    starts (:func:`load_segmentation_weights`); a trained classifier checkpoint
    (``MODEL.WEIGHTS``) holds the detector too and is loaded alone (:func:`load_model_weights`).
    """

    @configurable
    def __init__(
        self,
        *,
        classifier,
        batch_detections,
        roi_score_thresh=-0.01,
        roi_nms_thresh=0.75,
        remove_empty_boxes=True,
        sigmoid_scores=False,
        row_features="deltas",
        train_bn_affine=True,
        roi_head_features=False,
        burden_score_thresh=None,
        global_features=False,
        image_branch=None,
        decision_threshold=None,
        **kwargs,
    ):
        """
        Args:
            classifier (nn.Module): module S, (N, 5B) -> (N, num_classes) logits.
            batch_detections (int): B, ranked detections per image.
            roi_score_thresh (float): RoI score threshold (below 0: none dropped for its score).
            roi_nms_thresh (float): IoU threshold of the class-specific NMS.
            remove_empty_boxes (bool): remove zero-area boxes and replicate survivors to B.
            sigmoid_scores (bool): sigmoid of the class logit as confidence instead of softmax.
            row_features (str): "deltas" (raw regression) or "boxes" (decoded, normalised).
            train_bn_affine (bool): train the backbone BatchNorm weight and bias beside S.
            roi_head_features (bool): append the box head's output to each row.
            burden_score_thresh (float or None): give S the lesion burden of the mask head's
                detections scoring at least this (None: off; needs a mask head).
            global_features (bool): give S the global average of the RoI heads' (last) map.
            image_branch (ImageBranch or None): a trainable whole-slice CNN whose features
                join S's slice features, or whose logits are added to S's (its ``fusion``;
                never cached; trains with S).
            decision_threshold (float or None): None for the argmax of the logits (the paper);
                for two classes, call the second (positive) class when its probability is at
                least this (:func:`decide_class`).
            **kwargs: :class:`GeneralizedRCNN` arguments; roi_heads as ``StandardROIHeads``.
        """
        super().__init__(**kwargs)
        if row_features not in ROW_FEATURES:
            raise ValueError(f"MODEL.CT_CLASSIFIER.ROW_FEATURES must be one of {ROW_FEATURES}")
        if getattr(self.roi_heads, "mask_on", False) != (burden_score_thresh is not None):
            raise ValueError(
                "CTMaskNetClassifier has a mask head exactly when "
                "MODEL.CT_CLASSIFIER.LESION_BURDEN_FEATURES is on (MODEL.MASK_ON follows it)"
            )
        self.classifier = classifier
        self.num_classes = getattr(classifier, "num_classes", None) or classifier[-1].out_features
        self.roi_head_features = roi_head_features
        self.burden_score_thresh = burden_score_thresh
        self.global_features = global_features
        self.image_branch = image_branch
        self.batch_options = {
            "batch_size": batch_detections,
            "score_thresh": roi_score_thresh,
            "nms_thresh": roi_nms_thresh,
            "remove_empty_boxes": remove_empty_boxes,
            "row_features": row_features,
        }
        self.sigmoid_scores = sigmoid_scores
        self.decision_threshold = check_decision_threshold(decision_threshold, self.num_classes)
        self._freeze_detector(train_bn_affine)

    @classmethod
    def from_config(cls, cfg):
        # MODEL.CT_CLASSIFIER.SEGMENTATION_WEIGHTS is not read here: the model is built
        # random and a checkpointer step fills it (segmentation_weights.py).
        ct = cfg.MODEL.CT_CLASSIFIER
        options = roi_batch_options(cfg)
        cfg = cfg.clone()
        cfg.defrost()
        cfg.MODEL.MASK_ON = ct.LESION_BURDEN_FEATURES
        base = super().from_config(cfg)
        image_branch = None
        if ct.IMAGE_BRANCH:
            image_branch = ImageBranch(
                ct.IMAGE_BRANCH,
                ct.IMAGE_BRANCH_SIZE,
                cfg.MODEL.PIXEL_MEAN,
                cfg.MODEL.PIXEL_STD,
                ct.IMAGE_BRANCH_FUSION,
                ct.NUM_CLASSES,
                detector_bottom_up=base["backbone"].bottom_up,
            )
        return {
            **base,
            "classifier": _build_s(ct, base["backbone"], base["roi_heads"], image_branch),
            "batch_detections": options["batch_size"],
            "roi_score_thresh": options["score_thresh"],
            "roi_nms_thresh": options["nms_thresh"],
            "remove_empty_boxes": options["remove_empty_boxes"],
            "sigmoid_scores": options["sigmoid_scores"],
            "row_features": options["row_features"],
            "train_bn_affine": ct.TRAIN_BN_AFFINE,
            "roi_head_features": ct.ROI_HEAD_FEATURES,
            "burden_score_thresh": (ct.BURDEN_SCORE_THRESH if ct.LESION_BURDEN_FEATURES else None),
            "global_features": ct.GLOBAL_FEATURES,
            "image_branch": image_branch,
            "decision_threshold": ct.DECISION_THRESHOLD if ct.DECISION_THRESHOLD >= 0 else None,
        }

    @property
    def slice_feature_dim(self):
        """int: length of the detector's slice-feature vector S gets beside the rows (0 in the
        paper), what the RoI cache holds; the image branch's features come after it."""
        dim = len(BURDEN_FEATURE_NAMES) if self.burden_score_thresh is not None else 0
        if self.global_features:
            dim += self.backbone.output_shape()[self.roi_heads.box_in_features[-1]].channels
        return dim

    @property
    def image_feature_dim(self):
        """int: length of the image branch's feature vector in S's input (0 without the branch
        or with its ``"logits"`` fusion)."""
        return self.image_branch.s_input_dim if self.image_branch is not None else 0

    @property
    def detector(self):
        """tuple[nn.Module]: the modules reused from the segmentation model (backbone, RPN,
        RoI heads), kept in inference mode."""
        return (self.backbone, self.proposal_generator, self.roi_heads)

    def _freeze_detector(self, train_bn_affine):
        """Freeze the detector, except the backbone BatchNorm weight/bias if asked, and put it
        in inference mode."""
        for module in self.detector:
            module.requires_grad_(False)
        for module in self.backbone.modules():
            if train_bn_affine and isinstance(module, nn.modules.batchnorm._BatchNorm):
                if module.affine:
                    module.weight.requires_grad_(True)
                    module.bias.requires_grad_(True)
        self.train(self.training)
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        what = "S + backbone BN" + (" + image branch" if self.image_branch is not None else "")
        logger.info(f"CTMaskNetClassifier: {trainable:,} trainable parameters ({what})")

    def train(self, mode=True):
        """Set module S to ``mode``; the detector always stays in inference mode, so the RPN and
        RoI heads behave as at test time and BatchNorm running statistics never change."""
        super().train(mode)
        for module in self.detector:
            module.train(False)
        return self

    def forward(self, batched_inputs):
        """
        Args:
            batched_inputs (list[dict]): ``"image"`` (C, H, W); ``"class_id"`` (int) for
                training; optional ``"height"``, ``"width"`` for the output ``roi_boxes``.
                Inputs may instead carry precomputed ``"roi_rows"`` (B, W) and, with a
                slice-feature option, ``"slice_features"`` (D,), with ``"image"`` too for the
                image branch (see
                ``ct_lesion_d2.modeling.meta_arch.roi_batch_cache.compute_roi_batch_records``): the
                detector is then skipped and only module S runs.

        Returns:
            dict[str, Tensor] in training (``loss_cls_image``), else list[dict] (see class;
            only the class outputs for precomputed rows).
        """
        if "roi_rows" in batched_inputs[0]:
            rows = torch.stack([x["roi_rows"] for x in batched_inputs]).to(self.device)
            slice_features = None
            if "slice_features" in batched_inputs[0]:
                slice_features = torch.stack([x["slice_features"] for x in batched_inputs])
            logits = self.class_logits(rows, slice_features, batched_inputs)
            if self.training:
                return {"loss_cls_image": self.losses(logits, batched_inputs)}
            return [class_outputs(logit, self.decision_threshold) for logit in logits]
        batches, image_sizes, slice_features = self.detect_s_inputs(batched_inputs)
        rows = torch.stack([b.rows for b in batches])
        logits = self.class_logits(rows, slice_features, batched_inputs)
        if self.training:
            return {"loss_cls_image": self.losses(logits, batched_inputs)}
        return self._outputs(logits, batches, batched_inputs, image_sizes)

    def class_logits(self, rows, slice_features, batched_inputs):
        """The image logits (N, num_classes): module S on the rows and the slice features, with
        the image branch of the inputs' ``"image"`` where the model has one."""
        slice_features = self.with_image_features(slice_features, batched_inputs)
        logits = self.classifier(self.s_input(rows, slice_features))
        return self.with_image_logits(logits, batched_inputs)

    def with_image_features(self, slice_features, batched_inputs):
        """The detector's slice features (or None), then the image branch's features of each
        input's ``"image"`` when the model has the branch with ``"features"`` fusion."""
        if not self.image_feature_dim:
            return slice_features
        image_features = self.image_branch(self._branch_images(batched_inputs))
        if slice_features is None:
            return image_features
        return torch.cat([slice_features.to(image_features), image_features], dim=1)

    def with_image_logits(self, logits, batched_inputs):
        """S's logits, plus the image branch's own logits with ``"logits"`` fusion."""
        if self.image_branch is None or self.image_branch.fusion != "logits":
            return logits
        features = self.image_branch(self._branch_images(batched_inputs))
        return logits + self.image_branch.head(features)

    @staticmethod
    def _branch_images(batched_inputs):
        """The inputs' ``"image"`` for the image branch (cached RoI rows come with one too)."""
        if "image" not in batched_inputs[0]:
            raise ValueError(
                "MODEL.CT_CLASSIFIER.IMAGE_BRANCH needs each input's 'image', cached RoI rows "
                "too (the RoI-batch cache loader adds it)"
            )
        return [x["image"] for x in batched_inputs]

    def s_input(self, rows, slice_features=None):
        """The input of module S: the flattened rows (N, B * W), then the slice features."""
        flat = rows.flatten(1)
        if slice_features is None:
            return flat
        return torch.cat([flat, slice_features.to(flat)], dim=1)

    def detect_roi_batches(self, batched_inputs):
        """Run the detector and rank the RoI batch of each image.

        Args:
            batched_inputs (list[dict]): as in :meth:`forward`, with ``"image"``.

        Returns:
            tuple[list[RoIBatch], list[tuple[int, int]]]: the batches and the (resized) image
            sizes the detector saw.
        """
        batches, image_sizes, _ = self.detect_s_inputs(batched_inputs)
        return batches, image_sizes

    def detect_s_inputs(self, batched_inputs):
        """The detector's ranked RoI batches and, when configured, the slice features; one
        detector pass per group of equal-sized images (``same_size_groups``), so that an
        image's RoI batch does not depend on the other images of its batch.

        Returns:
            tuple: the batches, the (resized) image sizes the detector saw, and the (N, D)
            slice features (None when no slice-feature option is on), in input order.
        """
        groups = same_size_groups(batched_inputs)
        if len(groups) == 1:
            return self._detect_s_inputs_of_one_size(batched_inputs)
        n = len(batched_inputs)
        batches, image_sizes, slice_features = [None] * n, [None] * n, None
        for group in groups:
            part = self._detect_s_inputs_of_one_size([batched_inputs[i] for i in group])
            for j, i in enumerate(group):
                batches[i], image_sizes[i] = part[0][j], part[1][j]
            if part[2] is not None:
                if slice_features is None:
                    slice_features = part[2].new_empty((n, part[2].shape[1]))
                slice_features[group] = part[2]
        return batches, image_sizes, slice_features

    def _detect_s_inputs_of_one_size(self, batched_inputs):
        """:meth:`detect_s_inputs` on images of one size: one detector pass."""
        burden = self.burden_score_thresh is not None
        images, features, proposals, _ = detect(self, batched_inputs, roi_heads=False)
        candidates = roi_candidates(
            self.roi_heads, features, proposals, self.sigmoid_scores, head_features=True
        )
        rows_from = candidates if self.roi_head_features else candidates[:3]
        batches = roi_batches_from_candidates(rows_from, proposals, **self.batch_options)
        slice_features = []
        if burden:
            # the RoI heads' inference from the box head output above (not a second RoIAlign)
            predictions = self.roi_heads.box_predictor(candidates[3])
            instances, _ = self.roi_heads.box_predictor.inference(predictions, proposals)
            # masks only for the detections the burden counts
            instances = [i[i.scores >= self.burden_score_thresh] for i in instances]
            instances = self.roi_heads.forward_with_given_boxes(features, instances)
            slice_features.append(
                torch.stack(
                    [
                        lesion_burden(
                            inst, x["image"][:, :h, :w].to(self.device), self.burden_score_thresh
                        )
                        for inst, x, (h, w) in zip(instances, batched_inputs, images.image_sizes)
                    ]
                )
            )
        if self.global_features:
            name = self.roi_heads.box_in_features[-1]
            stride = self.backbone.output_shape()[name].stride
            slice_features.append(global_average(features[name], images.image_sizes, stride))
        slice_features = torch.cat(slice_features, dim=1) if slice_features else None
        return batches, images.image_sizes, slice_features

    def roi_batches(self, features, proposals):
        """The ranked RoI batch of each image (see :func:`ranked_roi_batches`)."""
        return ranked_roi_batches(
            self.roi_heads,
            features,
            proposals,
            self.sigmoid_scores,
            roi_head_features=self.roi_head_features,
            **self.batch_options,
        )

    def losses(self, logits, batched_inputs):
        """Sigmoid binary cross-entropy of the image logits against the one-hot class."""
        class_ids = torch.as_tensor([x["class_id"] for x in batched_inputs], device=logits.device)
        targets = F.one_hot(class_ids.long(), self.num_classes).to(logits.dtype)
        return F.binary_cross_entropy_with_logits(logits, targets)

    def _outputs(self, logits, batches, batched_inputs, image_sizes):
        """Per-image inference dicts, with ``roi_boxes`` rescaled to the output resolution."""
        return [
            self.image_outputs(logit, batch, inputs, image_size, self.decision_threshold)
            for logit, batch, inputs, image_size in zip(
                logits, batches, batched_inputs, image_sizes
            )
        ]

    @classmethod
    def image_outputs(cls, logit, batch, inputs, image_size, decision_threshold=None):
        """One image's inference dict from its logits and :class:`RoIBatch`.

        ``image_size`` is the (height, width) the RoI boxes are in; they are rescaled to the
        input's ``height``/``width`` where given; ``decision_threshold`` as the model's.
        Exported classifiers use it too.
        """
        return {
            **class_outputs(logit, decision_threshold),
            "roi_boxes": rescaled_roi_boxes(batch, inputs, image_size),
            "roi_scores": batch.scores,
            "roi_num_detections": batch.num_detections,
        }


def check_decision_threshold(threshold, num_classes):
    """``threshold`` if it is None or a probability in [0, 1] for a two-class model.

    Raises:
        ValueError: naming ``MODEL.CT_CLASSIFIER.DECISION_THRESHOLD`` and the fix.
    """
    if threshold is None:
        return None
    if num_classes != 2:
        raise ValueError(
            f"MODEL.CT_CLASSIFIER.DECISION_THRESHOLD {threshold} needs two classes (the second "
            f"the positive one), the model has {num_classes}; set it to -1 for the argmax"
        )
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(
            f"MODEL.CT_CLASSIFIER.DECISION_THRESHOLD must be a probability in [0, 1] (or -1 "
            f"for the argmax), got {threshold}"
        )
    return float(threshold)


def decide_class(class_probs, decision_threshold=None):
    """The predicted class of one image from its class probabilities (K,).

    The argmax (the paper) when ``decision_threshold`` is None; else, for two classes, class 1
    when its probability (the score its ROC and AUC are computed from) is at least the
    threshold, class 0 otherwise: an operating point of that ROC, chosen on a validation split
    (``ct_lesion_d2.evaluation.operating_point``).
    """
    if decision_threshold is None:
        return class_probs.argmax()
    return (class_probs[1] >= decision_threshold).long()


def class_outputs(logit, decision_threshold=None):
    """The class part of an inference dict, from one image's logits (K,)."""
    probs = torch.sigmoid(logit)
    return {
        "class_logits": logit,
        "class_probs": probs,
        "pred_class": decide_class(probs, decision_threshold),
    }


def _build_s(ct, backbone, roi_heads, image_branch=None):
    """Module S for a ``MODEL.CT_CLASSIFIER`` config node: the paper's ``build_s_module`` when
    no slice-feature option (burden, global, image branch) is on (wider rows with
    ``ROI_HEAD_FEATURES``), else :class:`SliceFeatureS` (the image branch's features counted by
    its ``s_input_dim``)."""
    row_width = 5 + (roi_heads.box_head.output_shape.channels if ct.ROI_HEAD_FEATURES else 0)
    slice_dim = len(BURDEN_FEATURE_NAMES) if ct.LESION_BURDEN_FEATURES else 0
    if ct.GLOBAL_FEATURES:
        slice_dim += backbone.output_shape()[roi_heads.box_in_features[-1]].channels
    if image_branch is not None:
        slice_dim += image_branch.s_input_dim
    if not slice_dim:
        return build_s_module(ct.BATCH_DETECTIONS, ct.HIDDEN_DIM, ct.NUM_CLASSES, row_width)
    return SliceFeatureS(
        row_width * ct.BATCH_DETECTIONS,
        slice_dim,
        ct.HIDDEN_DIM,
        ct.SLICE_HIDDEN_DIM,
        ct.NUM_CLASSES,
    )
