"""VOC detection AP, as detectron2's VOC protocol computes it.

:func:`evaluate_detections` reproduces detectron2's ``PascalVOCDetectionEvaluator`` (itself the
py-faster-rcnn port of the VOC devkit): per class and IoU threshold, greedy matching in order of
decreasing score, VOC07 11-point AP (or the area under the interpolated curve), then ``AP50``,
``AP75`` and ``AP`` (the mean over IoU 0.50:0.95 step 0.05 of the mean over classes), in
percent. Difficult ground-truth boxes (``target["difficult"]`` of
:class:`transfer.voc_dataset.VOCDetection`) make a detection neither a true nor a false
positive and do not count as positives (the VOC07 protocol).

Examples:
    >>> recall = np.array([0.25, 0.5, 0.5, 0.75])
    >>> precision = np.array([1.0, 1.0, 2 / 3, 0.75])
    >>> round(voc_ap(recall, precision), 6)  # (6 * 1.0 + 2 * 0.75) / 11
    0.681818
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from torch import Tensor

from transfer.voc_format import VOC_CLASSES

VOC_IOU_THRESHOLDS: tuple[float, ...] = tuple(t / 100.0 for t in range(50, 100, 5))
"""IoU thresholds 0.50, 0.55, ..., 0.95 (as detectron2 builds them: ``t / 100.0``)."""


def voc_ap(recall: Any, precision: Any, use_07_metric: bool = True) -> float:
    """Average precision from a precision/recall curve, as the VOC devkit (py-faster-rcnn port).

    Args:
        recall: (k,) cumulative recall of the detections sorted by decreasing score.
        precision: (k,) cumulative precision at the same points.
        use_07_metric: VOC07's 11-point interpolated AP: the mean over recall thresholds
            ``np.arange(0.0, 1.1, 0.1)`` of the highest precision at a recall >= the threshold
            (0 when none). The thresholds are built exactly as detectron2 does, so 0.3, 0.6 and
            0.7 are one ulp above their decimal values (a recall of exactly 3/10 does not reach
            the 0.3 point). False: the area under the monotone precision envelope (VOC 2010+).

    Returns:
        AP in [0, 1] (0.0 for an empty curve).

    Raises:
        ValueError: ``recall`` and ``precision`` are not 1-D of the same length.

    Examples:
        >>> recall, precision = np.array([0.5, 1.0]), np.array([1.0, 0.5])
        >>> round(voc_ap(recall, precision), 6)  # (6 * 1.0 + 5 * 0.5) / 11
        0.772727
        >>> float(voc_ap(recall, precision, use_07_metric=False))  # 0.5 * 1.0 + 0.5 * 0.5
        0.75
    """
    rec = np.asarray(recall, dtype=np.float64)
    prec = np.asarray(precision, dtype=np.float64)
    if rec.ndim != 1 or rec.shape != prec.shape:
        raise ValueError(
            f"recall and precision must be 1-D arrays of the same length, got shapes "
            f"{rec.shape} and {prec.shape}."
        )
    if use_07_metric:
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            reached = rec >= t
            ap += (float(prec[reached].max()) if reached.any() else 0.0) / 11.0
        return ap
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # precision envelope, non-increasing
    steps = np.where(mrec[1:] != mrec[:-1])[0]  # points where recall changes
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def _as_numpy(value: Any, dtype: Any) -> np.ndarray:
    if isinstance(value, Tensor):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=dtype)


def _pairwise_iou(boxes: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """IoU (d, g) of x1y1x2y2 boxes (d, 4) and (g, 4) in continuous coordinates."""
    ix1 = np.maximum(boxes[:, None, 0], gt[None, :, 0])
    iy1 = np.maximum(boxes[:, None, 1], gt[None, :, 1])
    ix2 = np.minimum(boxes[:, None, 2], gt[None, :, 2])
    iy2 = np.minimum(boxes[:, None, 3], gt[None, :, 3])
    inter = np.maximum(ix2 - ix1, 0.0) * np.maximum(iy2 - iy1, 0.0)  # (d, g)
    area_d = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])  # (d,)
    area_g = (gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1])  # (g,)
    return inter / (area_d[:, None] + area_g[None, :] - inter)


def _check_image(
    kind: str, i: int, item: Mapping[str, Any], keys: tuple[str, ...], num_classes: int
) -> dict[str, np.ndarray]:
    missing = [k for k in keys if k not in item]
    if missing:
        raise ValueError(
            f"{kind}[{i}] has no {', '.join(repr(k) for k in missing)}; expected a mapping with "
            f"{', '.join(repr(k) for k in keys)}."
        )
    out: dict[str, np.ndarray] = {"boxes": _as_numpy(item["boxes"], np.float64).reshape(-1, 4)}
    out["labels"] = _as_numpy(item["labels"], np.int64).reshape(-1)
    n = len(out["boxes"])
    for key in keys[2:]:
        out[key] = _as_numpy(item[key], np.float64 if key == "scores" else bool).reshape(-1)
    for key, value in out.items():
        if len(value) != n:
            raise ValueError(f"{kind}[{i}] has {n} boxes but {len(value)} {key}.")
    bad = out["labels"][(out["labels"] < 1) | (out["labels"] > num_classes)]
    if bad.size:
        raise ValueError(
            f"{kind}[{i}] has label {int(bad[0])}; expected labels 1..{num_classes} (label i is "
            f"classes[i - 1]; 0 is the background and never a detection)."
        )
    return out


def evaluate_detections(
    detections: Sequence[Mapping[str, Any]],
    ground_truth: Sequence[Mapping[str, Any]],
    iou_thresholds: Sequence[float] = VOC_IOU_THRESHOLDS,
    classes: Sequence[str] = VOC_CLASSES,
    use_07_metric: bool = True,
) -> dict[str, Any]:
    """VOC detection AP as detectron2's ``PascalVOCDetectionEvaluator`` computes it.

    For each class and IoU threshold ``t``: the detections of the class over all images are
    sorted by decreasing score (stable sort: ties keep their input order); each takes the
    ground-truth box of its class in its image with the highest IoU. If that IoU is ``> t``
    (strictly, as detectron2 and py-faster-rcnn; the MATLAB devkit uses ``>=``): a difficult box
    makes the detection neither TP nor FP, an unclaimed box makes it a TP and claims the box, a
    claimed one makes it a FP (no fall-back to the next-best box); otherwise it is a FP.
    Recall is over the non-difficult boxes; AP is :func:`voc_ap`.

    Boxes are 0-based continuous ``x1, y1, x2, y2`` on both sides, and IoU has no "+1": this is
    exactly detectron2's "+1" IoU on its 1-based inclusive boxes (it writes detections with
    ``x1 + 1, y1 + 1`` and reads the XML boxes unshifted).

    Classes without a non-difficult ground-truth box are left out of the means (their entry in
    ``per_class`` is None). detectron2 counts them as AP 0; on VOC07 test every class has boxes,
    so the numbers agree there.

    Args:
        detections: Per image, a mapping with ``boxes`` (k, 4), ``scores`` (k,) and ``labels``
            (k,) in 1..len(classes) (tensors or arrays), e.g. torchvision's detector output.
        ground_truth: Per image (same order), ``boxes`` (n, 4), ``labels`` (n,) and
            ``difficult`` (n,), e.g. :meth:`VOCDetection.target`.
        iou_thresholds: IoU thresholds in (0, 1); default 0.50:0.95 step 0.05.
        classes: Class names; label ``i`` is ``classes[i - 1]``.
        use_07_metric: 11-point AP (VOC07 test, what detectron2 uses for 2007) or the area
            metric (detectron2 for 2012).

    Returns:
        In percent: ``AP`` (mean over thresholds of the mean over classes), ``AP<t>`` for every
        threshold (``AP50``, ``AP55``, ..., ``AP95`` by default), ``per_class`` (class name ->
        ``{"AP": ..., "AP50": ..., ...}`` or None), ``num_ground_truth`` (class name ->
        non-difficult boxes) and ``num_classes_evaluated``.

    Raises:
        ValueError: Different numbers of images, a missing key, inconsistent lengths, a label
            outside 1..len(classes), a threshold outside (0, 1), or no non-difficult
            ground-truth box at all.

    Examples:
        >>> gt = [{"boxes": [[0, 0, 10, 10]], "labels": [1], "difficult": [False]}]
        >>> det = [{"boxes": [[0, 0, 10, 8], [30, 30, 40, 40]], "scores": [0.9, 0.8],
        ...         "labels": [1, 1]}]
        >>> result = evaluate_detections(det, gt, classes=("cat",))
        >>> [round(result[k], 2) for k in ("AP50", "AP75", "AP")]  # IoU 0.8: TP while t < 0.8
        [100.0, 100.0, 60.0]
    """
    if len(detections) != len(ground_truth):
        raise ValueError(
            f"Got detections for {len(detections)} images but ground truth for "
            f"{len(ground_truth)}; expected one entry per image in the same order."
        )
    thresholds = [float(t) for t in iou_thresholds]
    if not thresholds or any(not 0.0 < t < 1.0 for t in thresholds):
        raise ValueError(f"iou_thresholds must be non-empty values in (0, 1), got {thresholds}.")
    num_classes = len(classes)
    dets = [
        _check_image("detections", i, d, ("boxes", "labels", "scores"), num_classes)
        for i, d in enumerate(detections)
    ]
    gts = [
        _check_image("ground_truth", i, g, ("boxes", "labels", "difficult"), num_classes)
        for i, g in enumerate(ground_truth)
    ]

    ap = np.full((num_classes, len(thresholds)), np.nan)  # (C, T), NaN: no positives
    npos_per_class: dict[str, int] = {}
    for c, name in enumerate(classes, start=1):
        gt_difficult = [g["difficult"][g["labels"] == c] for g in gts]  # per image (n_i,)
        npos = int(sum(int((~d).sum()) for d in gt_difficult))
        npos_per_class[name] = npos
        if npos == 0:
            continue
        # Per detection: image, score, best IoU and index of that ground-truth box.
        image_idx, scores, ovmax, jmax = [], [], [], []
        for i, (d, g) in enumerate(zip(dets, gts, strict=True)):
            mask = d["labels"] == c
            if not mask.any():
                continue
            boxes = d["boxes"][mask]  # (k, 4)
            gt_boxes = g["boxes"][g["labels"] == c]  # (n, 4)
            image_idx.append(np.full(len(boxes), i))
            scores.append(d["scores"][mask])
            if len(gt_boxes):
                iou = _pairwise_iou(boxes, gt_boxes)  # (k, n)
                ovmax.append(iou.max(axis=1))
                jmax.append(iou.argmax(axis=1))
            else:
                ovmax.append(np.full(len(boxes), -np.inf))
                jmax.append(np.zeros(len(boxes), dtype=np.int64))
        if not scores:
            ap[c - 1] = 0.0
            continue
        order = np.argsort(-np.concatenate(scores), kind="stable")
        image_sorted = np.concatenate(image_idx)[order].tolist()
        ov_sorted = np.concatenate(ovmax)[order].tolist()
        j_sorted = np.concatenate(jmax)[order].tolist()
        difficult_lists = [d.tolist() for d in gt_difficult]
        for t_idx, t in enumerate(thresholds):
            claimed = [[False] * len(d) for d in difficult_lists]
            tp = np.zeros(len(order))
            fp = np.zeros(len(order))
            for k, (i, ov, j) in enumerate(zip(image_sorted, ov_sorted, j_sorted, strict=True)):
                if ov > t:
                    if difficult_lists[i][j]:
                        continue
                    if claimed[i][j]:
                        fp[k] = 1.0
                    else:
                        tp[k] = 1.0
                        claimed[i][j] = True
                else:
                    fp[k] = 1.0
            tp_cum, fp_cum = np.cumsum(tp), np.cumsum(fp)
            recall = tp_cum / npos
            precision = tp_cum / np.maximum(tp_cum + fp_cum, np.finfo(np.float64).eps)
            ap[c - 1, t_idx] = voc_ap(recall, precision, use_07_metric)

    evaluated = ~np.isnan(ap[:, 0])  # (C,)
    if not evaluated.any():
        raise ValueError(
            "The ground truth holds no non-difficult box of any class, so AP is undefined; "
            "evaluate on images with annotated objects."
        )
    keys = [f"AP{round(t * 100)}" for t in thresholds]
    per_threshold = 100.0 * ap[evaluated].mean(axis=0)  # (T,) mean over classes
    result: dict[str, Any] = {"AP": float(per_threshold.mean())}
    result.update({key: float(v) for key, v in zip(keys, per_threshold, strict=True)})
    result["per_class"] = {
        name: (
            {"AP": float(100.0 * ap[c].mean())}
            | {key: float(100.0 * v) for key, v in zip(keys, ap[c], strict=True)}
            if evaluated[c]
            else None
        )
        for c, name in enumerate(classes)
    }
    result["num_ground_truth"] = npos_per_class
    result["num_classes_evaluated"] = int(evaluated.sum())
    return result
