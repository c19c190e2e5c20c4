"""ONNX export of every network the estimators run, cached and written atomically.

One :class:`NetworkSpec` per graph says what to export (an ``nn.Module`` mapping tensors to a
tuple of tensors), its inputs with their dynamic dimensions, and the identity of the weights
(and of any data baked in as constants). The same spec serves the three backends: torch runs
``spec.module`` directly, ONNX Runtime runs the exported graph, TensorRT builds an engine from
that graph with an optimization profile made of the dimensions' ``(min, opt, max)``.

Graphs (all float32 in and out):

=====================  ==================================  ====================================
name                   inputs -> outputs                   dynamic dimensions
=====================  ==================================  ====================================
``detector_features``  query ``(1, 3, 16 h, 16 w)`` ->      ``h``, ``w`` (the image pyramid's
                       features ``(1, C, h, w)``           levels share one graph)
``detector_head``      features -> heatmap_logits,         ``h``, ``w``; the object's reference
                       log2_scale ``(1,1,h,w)``, offset    kernels are baked in as constants,
                       ``(1,2,h,w)``                       one graph per object (TensorRT has no
                                                           convolution with tensor weights)
``encoder``            crops ``(B, 3, 128, 128)`` ->       ``B``
                       z_o, z_p ``(B, 128)``
``refiner``            query_crop, K_query, R_in, t_in,    ``B``, ``n_refs``
                       ref_feats, K_ref, R_ref, t_ref ->
                       quat, offset, log2_scale
``selector``           query ``(B, 3, 128, 128)`` ->       ``B``; the object's prepared reference
                       scores ``(B, N, A)``, angle         features and viewing directions are
                       ``(B, N, 2)``                       baked in, one graph per object
``patch_backbone``     crops ``(B, 3, 224, 224)`` ->       ``B`` (template-sized query crops)
                       features ``(B, C, 14, 14)``
``patch_backbone_      images ``(B, 3, H, W)`` ->          ``B``, ``H``, ``W``: one ONNX file;
dynamic``              features ``(B, C, H/16, W/16)``     two TensorRT profiles (tags ``image``:
                                                           the image at every feature scale;
                                                           ``crops``: the refiner's and the
                                                           verifier's crop pairs)
=====================  ==================================  ====================================

The codebook lookup stays a torch matrix product on the backend's device (codes resident
there): it is one ``(1, 128) x (128, N)`` product plus top-k, which a separate engine would not
make faster but would make a copy of the codes per object.

A new network needs only a ``*_spec()`` builder here, registered in :data:`SPEC_BUILDERS`; the
backends, the TensorRT cache and ``sixd-pose build-engines`` need no change.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from sixd_pose_ros.engines.cache import (
    CacheEntry,
    CacheError,
    ensure_writable,
    sha256_bytes,
)
from sixd_pose_ros.errors import SixdPoseError

__all__ = [
    "EXPORT_FORMAT_VERSION",
    "OPSET",
    "SPEC_BUILDERS",
    "DetectorFeaturesExport",
    "DetectorHeadExport",
    "DynDim",
    "ExportError",
    "NetworkSpec",
    "OnnxArtifact",
    "RefinerExport",
    "TensorSpec",
    "TwoPassGroupNorm",
    "detector_features_spec",
    "detector_head_spec",
    "encoder_spec",
    "ensure_onnx",
    "export_onnx_bytes",
    "exportable",
    "exporter_facts",
    "module_identity",
    "patch_backbone_dynamic_spec",
    "patch_backbone_spec",
    "pyramid_sizes",
    "refiner_spec",
]

LOG = logging.getLogger(__name__)

#: Bump when a wrapper below changes what it computes: old cached graphs are then not reused.
EXPORT_FORMAT_VERSION = 2  # 2: GroupNorm exported as TwoPassGroupNorm
OPSET = 18
#: Largest dynamic size an exported graph accepts (the TensorRT profiles are much tighter).
_EXPORT_MAX_SIDE = 4096
_EXPORT_MAX_BATCH = 256


class ExportError(SixdPoseError):
    """A network cannot be exported to ONNX; the message names the fix."""


# ------------------------------------------------------------------------------- shapes
@dataclass(frozen=True)
class DynDim:
    """A dynamic dimension: ``size = multiple * v`` with ``v`` in ``[min, max]`` and ``opt`` the
    size TensorRT tunes for. ``(min, opt, max)`` are in units of ``multiple``."""

    min: int
    opt: int
    max: int
    multiple: int = 1
    #: An image side (any integer, so ``multiple`` 1): exported over the same wide range as the
    #: multiples of 16 are, so that the one ONNX file serves profiles of other ranges too.
    spatial: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise ValueError(f"need 1 <= min <= opt <= max, got {self}")


@dataclass(frozen=True)
class TensorSpec:
    """An input: its name and dims, each an int (static) or the name of a :class:`DynDim`."""

    name: str
    dims: tuple


@dataclass
class NetworkSpec:
    """Everything needed to run one graph on any backend.

    Attributes:
        name: graph name (``detector_features``, ``detector_head``, ``encoder``, ``refiner``).
        module: eval-mode torch module, ``forward(*inputs) -> tuple of tensors``.
        inputs: the inputs in call order.
        output_names: the outputs in return order.
        dyn: the dynamic dimensions named in ``inputs``.
        identity: sha256 of the weights and of any constants baked into the graph.
        tag: distinguishes graphs of the same name and identity kind (e.g. the object name of a
            detector head); part of the file name, not of the key.
        shared_export: specs of one graph that differ only in their TensorRT profile (the
            dynamic patch backbone's ``image`` and ``crops``) share one ONNX file, named after
            ``name`` alone: exporting it takes seconds, and the graphs are the same.
    """

    name: str
    module: nn.Module
    inputs: tuple[TensorSpec, ...]
    output_names: tuple[str, ...]
    dyn: dict[str, DynDim] = field(default_factory=dict)
    identity: str = ""
    tag: str = ""
    shared_export: bool = False

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

    @property
    def cache_name(self) -> str:
        return f"{self.name}-{self.tag}" if self.tag else self.name

    @property
    def onnx_name(self) -> str:
        """The ONNX cache file's name (see ``shared_export``)."""
        return self.name if self.shared_export else self.cache_name

    def _shape(self, spec: TensorSpec, pick: Callable[[DynDim], int]) -> tuple[int, ...]:
        return tuple(d if isinstance(d, int) else self.dyn[d].multiple * pick(self.dyn[d]) for d in spec.dims)

    def profile(self) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
        """``{input: (min_shape, opt_shape, max_shape)}``: a TensorRT optimization profile."""
        return {t.name: (self._shape(t, lambda d: d.min), self._shape(t, lambda d: d.opt),
                         self._shape(t, lambda d: d.max)) for t in self.inputs}

    def example_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shapes for tracing: ``opt``, but at least 2 on every dynamic dimension (torch.export
        specializes a dimension traced at size 1 and the graph would then be static there)."""
        return {t.name: self._shape(t, lambda d: max(2, d.opt)) for t in self.inputs}

    def dynamic_shapes(self) -> tuple:
        """``dynamic_shapes`` for ``torch.onnx.export(dynamo=True)``: one ``Dim`` per name,
        shared by every input that uses it, over a wide range (so one ONNX file serves any
        image size; the TensorRT profile is what is tight)."""
        from torch.export import Dim

        dims = {}
        for name, d in self.dyn.items():
            wide = d.multiple > 1 or d.spatial
            hi = (_EXPORT_MAX_SIDE // d.multiple) if wide else max(d.max, _EXPORT_MAX_BATCH)
            dims[name] = Dim(name, min=1, max=max(hi, d.max))
        out = []
        for t in self.inputs:
            axes = {}
            for i, d in enumerate(t.dims):
                if not isinstance(d, int):
                    m = self.dyn[d].multiple
                    axes[i] = dims[d] * m if m > 1 else dims[d]
            out.append(axes)
        return tuple(out)

    def facts(self) -> dict:
        """What the exported graph depends on: the cache key's facts."""
        return {"network": self.name, "identity": self.identity, "inputs": [[t.name, list(t.dims)] for t in self.inputs],
                "dyn_multiples": {k: v.multiple for k, v in sorted(self.dyn.items())},
                "outputs": list(self.output_names), **exporter_facts()}


def exporter_facts() -> dict:
    """The exporter's version facts (torch, onnxscript, opset, our wrappers' version)."""
    try:
        import onnxscript

        onnxscript_version = onnxscript.__version__
    except ImportError:
        onnxscript_version = None
    return {"torch": torch.__version__, "onnxscript": onnxscript_version, "opset": OPSET,
            "export_format": EXPORT_FORMAT_VERSION}


def module_identity(module: nn.Module, *extra: torch.Tensor, config: object = None) -> str:
    """sha256 of a module's state (names, dtypes, shapes, bytes), its config and extra tensors.

    Hashing the state rather than a weights file lets any in-memory model (a freshly trained
    one, one loaded from anywhere) key the cache, and two files holding the same weights share
    their exports.
    """
    h = hashlib.sha256()
    h.update(repr(config if config is not None else getattr(module, "cfg", getattr(module, "config", None))).encode())
    for name, value in sorted(module.state_dict().items()):
        t = value.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    for t in extra:
        t = t.detach().cpu().float().contiguous()
        h.update(f"extra|{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


# ------------------------------------------------------------------------------- wrappers
class DetectorFeaturesExport(nn.Module):
    """``query (B, 3, 16 h, 16 w)`` in ``[0, 1]`` -> correlation features ``(B, C, h, w)``.

    :meth:`Detector.query_features` without its checks and padding: the caller pads the image
    to multiples of 16 (bottom/right zeros, exactly as ``query_features`` does), so the graph
    has no data-dependent padding and TensorRT sees plain convolutions.
    """

    def __init__(self, detector) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, query: torch.Tensor) -> tuple[torch.Tensor]:
        q = torch.where(torch.isfinite(query), query, torch.zeros_like(query))
        return (self.detector._features(q),)


class DetectorHeadExport(nn.Module):
    """``features (B, C, h, w)`` -> ``(heatmap_logits, log2_scale, offset)`` for one object,
    whose reference kernels are constants of the graph (buffers ``kernel0..``)."""

    def __init__(self, detector, kernels: Sequence[torch.Tensor]) -> None:
        super().__init__()
        self.detector = detector
        self.n_scales = len(kernels)
        for i, k in enumerate(kernels):
            self.register_buffer(f"kernel{i}", k.detach().float().clone(), persistent=False)

    def kernels(self) -> tuple[torch.Tensor, ...]:
        return tuple(getattr(self, f"kernel{i}") for i in range(self.n_scales))

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        from sixd_pose_ros.models.detector import RefFeatures

        out = self.detector.detect(features, RefFeatures(self.kernels()))
        return out.heatmap_logits, out.log2_scale, out.offset


class RefinerExport(nn.Module):
    """:class:`VolumeRefiner` as ``(query_crop, K_query, R_in, t_in, ref_feats, K_ref, R_ref,
    t_ref) -> (quat, offset, log2_scale)`` (shapes in :meth:`VolumeRefiner.forward`)."""

    input_names = ("query_crop", "K_query", "R_in", "t_in", "ref_feats", "K_ref", "R_ref", "t_ref")
    output_names = ("quat", "offset", "log2_scale")

    def __init__(self, refiner) -> None:
        super().__init__()
        self.refiner = refiner

    def forward(self, query_crop, K_query, R_in, t_in, ref_feats, K_ref, R_ref, t_ref):
        out = self.refiner(query_crop, K_query, R_in, t_in, ref_feats, K_ref, R_ref, t_ref)
        return out.quat, out.offset, out.log2_scale


class TwoPassGroupNorm(nn.Module):
    """``nn.GroupNorm`` with its variance computed from centred values, for export.

    The exporter lowers GroupNorm to ONNX InstanceNormalization, which ONNX Runtime's CPU kernel
    computes as ``E[x^2] - E[x]^2``: on features whose mean is large against their spread that
    cancels digits, and the detector's L2-normalized features then differ from torch's by ~1e-3
    (measured on rendered frames). Centring first (``mean((x - mean)^2)``) keeps ONNX Runtime
    within 1e-5 of torch; TensorRT fuses the same ops into its normalization layer.
    """

    def __init__(self, gn: nn.GroupNorm) -> None:
        super().__init__()
        self.groups, self.eps, self.affine = gn.num_groups, gn.eps, gn.affine
        self.weight, self.bias = gn.weight, gn.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        g = x.reshape(shape[0], self.groups, -1)
        centred = g - g.mean(dim=2, keepdim=True)
        var = (centred * centred).mean(dim=2, keepdim=True)
        y = (centred * torch.rsqrt(var + self.eps)).reshape(shape)
        if self.affine:
            view = (1, -1) + (1,) * (x.dim() - 2)
            y = y * self.weight.view(view) + self.bias.view(view)
        return y


def exportable(module: nn.Module) -> nn.Module:
    """A copy of ``module`` with every GroupNorm replaced by :class:`TwoPassGroupNorm` (same
    parameters, same function); the original is left as it is for the torch backend."""
    import copy

    out = copy.deepcopy(module)
    for name, child in list(out.named_modules()):
        for attr, sub in list(child.named_children()):
            if isinstance(sub, nn.GroupNorm):
                setattr(child, attr, TwoPassGroupNorm(sub))
    return out


# ------------------------------------------------------------------------------- specs
def pyramid_sizes(image_wh: tuple[int, int], scales: Sequence[float]) -> list[tuple[int, int]]:
    """``(W, H)`` of each pyramid level as the estimator resizes it (``round``, at least 16)."""
    w, h = int(image_wh[0]), int(image_wh[1])
    return [(w, h) if s == 1.0 else (max(16, round(w * s)), max(16, round(h * s))) for s in scales]


def _cells_range(image_wh: tuple[int, int], scales: Sequence[float]) -> tuple[DynDim, DynDim]:
    """Feature-grid ranges ``(h, w)`` (cells of 16 px after padding) over the pyramid; opt =
    the full-resolution level."""
    sizes = pyramid_sizes(image_wh, scales)
    hs = [-(-h // 16) for _, h in sizes]
    ws = [-(-w // 16) for w, _ in sizes]
    full_w, full_h = -(-int(image_wh[0]) // 16), -(-int(image_wh[1]) // 16)
    return (DynDim(min(hs), full_h, max(hs + [full_h])), DynDim(min(ws), full_w, max(ws + [full_w])))


def detector_features_spec(detector, image_wh: tuple[int, int] = (640, 480),
                           scales: Sequence[float] = (1.0, 0.5)) -> NetworkSpec:
    """The detector's backbone + projection for queries of ``image_wh`` and its pyramid."""
    h, w = _cells_range(image_wh, scales)
    return NetworkSpec(
        "detector_features", DetectorFeaturesExport(detector).eval(),
        (TensorSpec("query", (1, 3, "h16", "w16")),), ("features",),
        {"h16": DynDim(h.min, h.opt, h.max, 16), "w16": DynDim(w.min, w.opt, w.max, 16)},
        identity=module_identity(detector))


def detector_head_spec(detector, kernels: Sequence[torch.Tensor], tag: str,
                       image_wh: tuple[int, int] = (640, 480), scales: Sequence[float] = (1.0, 0.5)) -> NetworkSpec:
    """The correlation head of one object (``kernels`` from :meth:`Detector.encode_references`)."""
    h, w = _cells_range(image_wh, scales)
    c = int(detector.cfg.feat_dim)
    return NetworkSpec(
        "detector_head", DetectorHeadExport(detector, kernels).eval(),
        (TensorSpec("features", (1, c, "h", "w")),), ("heatmap_logits", "log2_scale", "offset"),
        {"h": h, "w": w}, identity=module_identity(detector, *kernels), tag=tag)


def encoder_spec(autoencoder, max_batch: int = 8) -> NetworkSpec:
    """The shape/pose encoder (:class:`EncoderExport`) with a dynamic batch of crops."""
    from sixd_pose_ros.models.autoencoder import EncoderExport

    enc = EncoderExport(autoencoder).eval()
    cfg = getattr(autoencoder, "cfg", None)
    crop = int(getattr(cfg, "crop", 128))
    channels = 4 if getattr(cfg, "use_depth", False) else 3
    return NetworkSpec("encoder", enc, (TensorSpec("crops", ("batch", channels, crop, crop)),),
                       tuple(EncoderExport.output_names), {"batch": DynDim(1, 1, max_batch)},
                       identity=module_identity(enc.encoder, config=cfg))


class PatchBackboneExport(nn.Module):
    """``images (B, 3, H, W)`` float RGB in [0, 1] -> ``(features (B, C, ceil(H/16),
    ceil(W/16)),)``: the frozen pretrained backbone as one graph, so that TensorRT / ONNX
    Runtime run it too. Its "same" paddings are fixed pads (computed once for the weights'
    224 px), so the graph has no shape-dependent branch and exports with any H and W."""

    output_names = ("features",)

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, crops: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.backbone(crops),)


def patch_backbone_spec(backbone, size: int = 224, max_batch: int = 16) -> NetworkSpec:
    """The frozen patch backbone (features/efficientnet.py) on template-sized crops."""
    module = PatchBackboneExport(backbone).eval()
    return NetworkSpec("patch_backbone", module, (TensorSpec("crops", ("batch", 3, size, size)),),
                       PatchBackboneExport.output_names, {"batch": DynDim(1, 4, max_batch)},
                       identity=module_identity(backbone, config=backbone.identity))


def patch_backbone_dynamic_spec(backbone, sizes: Sequence[tuple[int, int]], opt: tuple[int, int], tag: str,
                                batch: tuple[int, int, int] = (1, 1, 1)) -> NetworkSpec:
    """The frozen patch backbone on images of any size: batch, height and width dynamic.

    Why a second spec beside :func:`patch_backbone_spec`: the whole-image encode of feature
    detection runs the backbone on the frame at up to 9 scales (sizes that are not multiples of
    16), and the render-and-match refiner and the verifier on crop pairs of other sides (448
    and 224 px); a static graph per size would be a dozen exports and engines.

    The ONNX graph is the same for every ``tag`` (``shared_export``: exported once, any size up
    to 4096 px); what differs is the TensorRT profile, which is one engine per tag: ``sizes``
    (``(W, H)`` pairs the caller will run, e.g. every feature scale of the camera image) give
    its min and max, ``opt`` (``(W, H)``) the shape its kernels are tuned for, and ``batch`` its
    ``(min, opt, max)`` batch. TensorRT runs any shape within the profile; a frame outside it
    (another camera) raises, and the runner then falls back to the next backend.

    The cache key is the backbone's identity (variant, block, wheel version, weights sha256)
    and its state, as for every graph: other weights, another export.
    """
    module = PatchBackboneExport(backbone).eval()
    ws = [int(w) for w, _ in sizes] + [int(opt[0])]
    hs = [int(h) for _, h in sizes] + [int(opt[1])]
    dyn = {"batch": DynDim(*batch), "height": DynDim(min(hs), int(opt[1]), max(hs), spatial=True),
           "width": DynDim(min(ws), int(opt[0]), max(ws), spatial=True)}
    return NetworkSpec("patch_backbone_dynamic", module, (TensorSpec("images", ("batch", 3, "height", "width")),),
                       PatchBackboneExport.output_names, dyn,
                       identity=module_identity(backbone, config=backbone.identity), tag=tag, shared_export=True)


def refiner_spec(refiner, max_batch: int = 4) -> NetworkSpec:
    """The volume refiner with a dynamic batch and ``config.n_refs`` references (dynamic in
    the graph, fixed in the TensorRT profile)."""
    cfg = refiner.config
    s, c, f = cfg.crop_size, cfg.feat_channels, cfg.crop_size // 4
    dims = {"query_crop": ("batch", 3, s, s), "K_query": ("batch", 3, 3), "R_in": ("batch", 3, 3),
            "t_in": ("batch", 3), "ref_feats": ("batch", "n_refs", c, f, f), "K_ref": ("batch", "n_refs", 3, 3),
            "R_ref": ("batch", "n_refs", 3, 3), "t_ref": ("batch", "n_refs", 3)}
    return NetworkSpec("refiner", RefinerExport(refiner).eval(),
                       tuple(TensorSpec(n, dims[n]) for n in RefinerExport.input_names),
                       RefinerExport.output_names,
                       {"batch": DynDim(1, 1, max_batch), "n_refs": DynDim(cfg.n_refs, cfg.n_refs, cfg.n_refs)},
                       identity=module_identity(refiner))


class SelectorWithReferences(nn.Module):
    """``query (B, 3, S, S)`` -> ``(scores (B, N, A), angle (B, N, 2))`` for one object, whose
    prepared reference features and viewing directions are constants of the graph (as the
    detector head's kernels are: TensorRT wants them as weights, and they never change per frame)."""

    def __init__(self, selector, refs) -> None:
        super().__init__()
        self.selector = selector
        self.n_levels = len(refs.levels)
        for i, level in enumerate(refs.levels):
            self.register_buffer(f"level{i}", level.detach().float().clone(), persistent=False)
        self.register_buffer("directions", refs.directions.detach().float().clone(), persistent=False)

    def forward(self, query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from sixd_pose_ros.models.selector import SelectorRefs

        refs = SelectorRefs(tuple(getattr(self, f"level{i}") for i in range(self.n_levels)), self.directions)
        out = self.selector(query, refs)
        return out.scores, out.angle


def selector_spec(selector, refs, tag: str, crop_size: int = 128, max_batch: int = 4) -> NetworkSpec:
    """The viewpoint selector of one object (``refs`` from ``ViewpointSelector.prepare_references``)."""
    module = SelectorWithReferences(selector, refs).eval()
    return NetworkSpec("selector", module, (TensorSpec("query", ("batch", 3, crop_size, crop_size)),),
                       ("scores", "angle"), {"batch": DynDim(1, 1, max_batch)},
                       identity=module_identity(selector, *refs.levels, refs.directions), tag=tag)


#: Graph name -> spec builder.
SPEC_BUILDERS: dict[str, Callable[..., NetworkSpec]] = {
    "detector_features": detector_features_spec,
    "detector_head": detector_head_spec,
    "encoder": encoder_spec,
    "refiner": refiner_spec,
    "selector": selector_spec,
}


# ------------------------------------------------------------------------------- export
def _example_inputs(spec: NetworkSpec) -> tuple[torch.Tensor, ...]:
    """Plausible tracing inputs (values do not change the graph; identity rotations and a
    pinhole K keep every op finite while tracing)."""
    gen = torch.Generator().manual_seed(0)
    out = []
    for name, shape in spec.example_shapes().items():
        if shape[-2:] == (3, 3) and name.startswith("K"):
            k = torch.tensor([[200.0, 0.0, 63.5], [0.0, 200.0, 63.5], [0.0, 0.0, 1.0]])
            out.append(k.expand(shape).contiguous())
        elif shape[-2:] == (3, 3):
            out.append(torch.eye(3).expand(shape).contiguous())
        elif shape[-1:] == (3,) and name.startswith("t"):
            out.append(torch.tensor([0.0, 0.0, 5.0]).expand(shape).contiguous())
        else:
            out.append(torch.rand(shape, generator=gen))
    return tuple(out)


@contextlib.contextmanager
def _quiet_loggers(names: Sequence[str] = ("torch.onnx", "torch.export", "onnx_ir", "onnxscript")):
    """The exporter's libraries log every pass at INFO; keep only their errors meanwhile."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def export_onnx_bytes(spec: NetworkSpec) -> bytes:
    """Export ``spec.module`` with ``torch.onnx.export(dynamo=True)`` and return the model.

    The exporter's chatter (its progress lines and warnings) is silenced: the caller logs one
    line per graph instead.

    Raises:
        ExportError: onnxscript is missing or the exporter fails.
    """
    try:
        import onnxscript  # noqa: F401  (the dynamo exporter needs it)
    except ImportError as exc:
        raise ExportError("ONNX export needs onnxscript: pip install onnx onnxscript") from exc
    module = exportable(spec.module).eval()
    args = _example_inputs(spec)
    try:
        with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), _quiet_loggers():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(module, args, dynamo=True, dynamic_shapes=spec.dynamic_shapes(),
                                        input_names=list(spec.input_names),
                                        output_names=list(spec.output_names), opset_version=OPSET,
                                        verbose=False)
            return program.model_proto.SerializeToString()
    except Exception as exc:  # the exporter raises many types; all mean "this graph does not export"
        raise ExportError(f"exporting {spec.name} to ONNX failed ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''}); use backend 'torch'") from exc


@dataclass
class OnnxArtifact:
    """An exported graph: its bytes, their sha256, and the cache file (None when kept in memory)."""

    spec_name: str
    data: bytes
    sha256: str
    path: Path | None
    seconds: float = 0.0
    cached: bool = False


def ensure_onnx(spec: NetworkSpec, folder: str | os.PathLike | None) -> OnnxArtifact:
    """The ONNX graph of ``spec``: from the cache when its key matches, else exported (and
    stored when ``folder`` is writable).

    ``folder=None`` keeps the export in memory. A cache folder that cannot be written logs a
    warning naming the fix and also keeps the export in memory: a read-only cache must not stop
    the robot, only slow its start.
    """
    entry = None
    if folder is not None:
        entry = CacheEntry.for_facts(Path(folder) / "onnx", spec.onnx_name, spec.facts(), "onnx")
        data = entry.load()
        if data is not None:
            LOG.debug("onnx cache hit %s", entry.path)
            return OnnxArtifact(spec.name, data, sha256_bytes(data), entry.path, cached=True)
        stale = entry.siblings()
        # Visible (WARNING) because it stalls a start for seconds: say why and that it is once.
        LOG.warning("exporting %s to ONNX, once for these weights (%s); cached in %s", spec.onnx_name,
                    f"other weights or exporter than {stale[0].name}" if stale else "not cached yet",
                    entry.folder)
    t0 = time.perf_counter()
    data = export_onnx_bytes(spec)
    seconds = time.perf_counter() - t0
    path = None
    if entry is not None:
        try:
            ensure_writable(entry.folder)
            # Other keys of the same graph stay: two weight sets in use on one machine (a test's
            # and the node's) must not evict each other at every start. Delete the folder to trim.
            path = entry.store(data, spec.facts(), seconds=round(seconds, 3))
        except CacheError as exc:
            LOG.warning("%s; keeping the %s export in memory", exc, spec.cache_name)
    LOG.info("exported %s in %.1f s%s", spec.cache_name, seconds, f" -> {path}" if path else "")
    return OnnxArtifact(spec.name, data, sha256_bytes(data), path, seconds=seconds)
