"""The detection stage both modes share: one backbone pass per pyramid level, per-object peaks.

The detector sees objects of ``ref_size * 2^-1 .. 2^0.5`` pixels; running the shared feature
network on the image at several scales (``detection_scales``) extends that range to near objects.
Per object, its correlation head (the object's reference kernels baked in) runs on every level.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch

from sixd_pose_ros.models.detector import Detection, DetectorOutput, decode_topk, initial_translation


def images_to_tensor(images: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float in [0, 1] on ``device`` (the division runs there)."""
    t = torch.from_numpy(np.ascontiguousarray(images)).to(device)
    return t.permute(0, 3, 1, 2).float().div_(255.0)


def padded_query(image: np.ndarray, device: torch.device | str) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H', W') with H', W' padded (bottom/right, zeros) to multiples of
    16, as Detector.query_features pads: the exported feature graph expects it done."""
    q = images_to_tensor(image[None], device)
    ph, pw = (-q.shape[2]) % 16, (-q.shape[3]) % 16
    return torch.nn.functional.pad(q, (0, pw, 0, ph)) if ph or pw else q


def image_pyramid(features, rgb: np.ndarray, scales, device) -> list:
    """``[(scale, (h, w), query features)]``: the feature runner on the image at each scale."""
    pyramid = []
    height, width = rgb.shape[:2]
    for s in scales:
        image = rgb if s == 1.0 else cv2.resize(
            rgb, (max(16, round(width * s)), max(16, round(height * s))), interpolation=cv2.INTER_AREA)
        pyramid.append((s, image.shape[:2], features(padded_query(image, device))[0]))
    return pyramid


def detector_outputs(pyramid: list, head, stride: int) -> list:
    """``[(scale, (h, w), DetectorOutput)]``: one object's correlation head on every level."""
    outputs = []
    for s, hw, qfeat in pyramid:
        heat, log2_scale, offset = head(qfeat)
        outputs.append((s, hw, DetectorOutput(heat, log2_scale, offset, scale_logits=heat.new_zeros(0),
                                              stride=stride)))
    return outputs


def detect_peaks(outputs: list, ref_size: float, k: int = 1) -> list[Detection]:
    """Up to ``k`` detections of one object over the pyramid (the head's ``outputs`` of
    :func:`detector_outputs`), best first, full-resolution pixels.

    Peaks of different levels that fall on one object (centres closer than half the larger box)
    count once: several hypotheses are meant to be different places.
    """
    found = []
    for s, hw, out in outputs:
        for det in decode_topk(out, hw, ref_size, k=k)[0]:
            if np.isfinite(det.score):
                det.center_xy = det.center_xy / s
                det.box_size = det.box_size / s
                found.append(det)
    found.sort(key=lambda d: -d.score)
    kept: list[Detection] = []
    for det in found:
        if all(np.linalg.norm(det.center_xy - o.center_xy) > 0.5 * max(det.box_size, o.box_size) for o in kept):
            kept.append(det)
        if len(kept) == k:
            break
    return kept


def peak_places(detector, pyramid: list, head, K: np.ndarray, scale: float, k: int,
                min_score: float) -> tuple[list, list]:
    """The detector's ``k`` best peaks that reach ``min_score`` as places ``(detection, centre,
    None)`` (the centre from the box size, ``scale`` units per normalized unit), and the
    detector's outputs (its heat elsewhere: :func:`heat_near`)."""
    outputs = detector_outputs(pyramid, head, detector.cfg.stride)
    dets = [d for d in detect_peaks(outputs, detector.cfg.ref_size, k) if d.score >= min_score]
    return [(d, scale * initial_translation(d.center_xy, d.box_size, K), None) for d in dets], outputs


def heat_near(outputs: list, center_xy: np.ndarray, radius_px: float = 0.0) -> float:
    """The detector's highest centre probability within ``radius_px`` (at least one cell) of a
    full-resolution pixel, over all levels: what the detector thinks of a place it did not
    pick as a peak."""
    best = 0.0
    for s, _, out in outputs:
        logits = out.heatmap_logits[0, 0]
        h, w = logits.shape
        stride = out.stride
        ci, cj = (center_xy[1] * s) / stride, (center_xy[0] * s) / stride
        r = max(1.0, radius_px * s / stride)
        i0, i1 = int(max(0, np.floor(ci - r))), int(min(h, np.ceil(ci + r) + 1))
        j0, j1 = int(max(0, np.floor(cj - r))), int(min(w, np.ceil(cj + r) + 1))
        if i0 >= i1 or j0 >= j1:
            continue
        window = logits[i0:i1, j0:j1]
        value = float(torch.sigmoid(torch.nan_to_num(window.max().float(), nan=-30.0)))
        best = max(best, value)
    return best


def detection_box(det: Detection) -> np.ndarray:
    """(x0, y0, x1, y1) of the square the detection's sphere fills."""
    half = det.box_size / 2
    return np.array([det.center_xy[0] - half, det.center_xy[1] - half,
                     det.center_xy[0] + half, det.center_xy[1] + half])
