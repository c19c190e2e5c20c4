"""Known-model mode networks: a disentangled shape/pose autoencoder (after Wen et al., ECCV 2022).

One encoder serves every object. It maps a square object crop to two unit vectors:

- ``z_o`` (shape code, ``d = 128``): *which* object; pulled to a per-object entry of a bank of
  embeddings by a contrastive loss (:class:`ShapeEmbedding`, :func:`contrastive_shape_loss`).
- ``z_p`` (pose code, ``d = 128``): *how it is oriented*; the known-model codebook is the set of
  ``z_p`` of rendered views, and the rotation of a query is the cosine argmax.

The decoder (:class:`AdaINDecoder`) rebuilds the canonical view of the crop -- the clean render
of the same object at the same rotation, centred and at a fixed scale, black background -- from
``z_p``, its feature maps modulated by AdaIN whose scale/bias come from ``z_o``. So ``z_p`` has
to carry the pose and ``z_o`` the appearance, which is what separates them. Two output branches:
RGB (sigmoid, ``[0, 1]``) and depth (tanh, ``[-1, 1]``: object depth minus the object centre's
depth, divided by the object radius; background is ``+1``, "far").

Rotations enter the networks through the 128-d hyperspherical-harmonics encoding
(:mod:`.rotation_encoding`):

- **Pose code supervision** (:class:`PoseHead`, :func:`pose_code_loss`). Our reading of the
  paper's use of the 4D encoding: a small MLP maps ``hsh(R)`` to a unit "rotation anchor" in
  code space and the loss is ``1 - cos(z_p, anchor(R))``, gradients into both. Every object
  seen at ``R`` is pulled to the *same* anchor, so ``z_p`` becomes object independent and a
  smooth function of the rotation (the encoding is smooth on SO(3)). The reconstruction loss
  keeps ``z_p`` from collapsing onto a constant (the decoder needs the pose from it).
- **Conditioned block** (:class:`ConditionedBlock`): ``B(z_o, R) = normalize(y + FFN(LN(y)))``
  with ``y = bilinear_W(z_o, p) + V p + b``, ``p = MLP(hsh(R))`` and ``W`` a learnable
  ``d x d x d`` tensor. Trained to predict the encoder's ``z_p`` (cosine, stop-gradient on the
  target; by default also on ``z_o``, so it reads the codes without reshaping them). At run time
  it turns one shape code into a full codebook ``{B(z_o, R_i)}`` without rendering the object.

Loss of :meth:`DisentangledAutoencoder.loss` (weights from the issue)::

    loss = recon_rgb + depth_weight * recon_depth          (L1 or L2, see below)
         + 0.004 * contrastive_shape + 0.002 * pose_code
         + cond_weight * (1 - cos(B(sg(z_o), R), sg(z_p)))

``recon_rgb`` compares the RGB output with ``mask * target_rgb`` over all pixels (the black
background is part of the target, so the silhouette is learned); ``recon_depth`` compares the
depth output with ``target_depth`` on the mask and ``+1`` off it.

ONNX: :class:`EncoderExport` (``crops -> (z_o, z_p)``) has no data-dependent control flow; NaN
and inf in the input are replaced by 0 inside with ``torch.where``, so codes stay finite.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import IMAGE_MEAN, IMAGE_STD, make_norm
from .rotation_encoding import HSH_DIM, hsh_encode_matrix

__all__ = [
    "AutoencoderConfig",
    "ShapePoseEncoder",
    "AdaIN",
    "AdaINDecoder",
    "ShapeEmbedding",
    "contrastive_shape_loss",
    "PoseHead",
    "pose_code_loss",
    "ConditionedBlock",
    "DisentangledAutoencoder",
    "EncoderExport",
    "l2_normalize",
]


def l2_normalize(v: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``v / |v|`` along the last dim (export friendly; a zero vector stays zero)."""
    return v * torch.rsqrt((v * v).sum(-1, keepdim=True) + eps)


@dataclass(frozen=True)
class AutoencoderConfig:
    """Sizes and loss weights of :class:`DisentangledAutoencoder`.

    Attributes:
        code_dim: ``d``, size of both codes (128 as in the paper).
        base: base width; encoder stages have ``(1, 2, 4, 8, 8) x base`` channels, the decoder
            mirrors them. 16 for CPU training, 32 for GPU.
        crop: side of the square input crop and of the reconstruction (multiple of 32).
        use_depth: the encoder takes a 4th input channel (normalized depth, see module doc).
        enc_blocks: extra stride-1 conv blocks in each of the 5 encoder stages.
        dec_blocks: extra conv+AdaIN blocks in each decoder stage.
        norm: encoder normalization (``"gn"``, ``"bn"``, ``"none"``).
        hidden: width of the MLPs (pose head, pose projections).
        recon: ``"l1"`` or ``"l2"`` reconstruction loss.
        depth_weight, shape_weight, pose_weight, cond_weight: loss weights.
        temperature, momentum: of the shape embedding bank (InfoNCE, EMA).
        hsh_weighting: ``"heat"`` or ``"none"`` (see :mod:`.rotation_encoding`).
        cond_detach_shape: stop the conditioned block's gradient into ``z_o``.
    """

    code_dim: int = 128
    base: int = 16
    crop: int = 128
    use_depth: bool = False
    enc_blocks: Tuple[int, int, int, int, int] = (1, 1, 1, 1, 0)
    dec_blocks: int = 0
    norm: str = "gn"
    hidden: int = 256
    recon: str = "l1"
    depth_weight: float = 1.0
    shape_weight: float = 0.004
    pose_weight: float = 0.002
    cond_weight: float = 1.0
    temperature: float = 0.07
    momentum: float = 0.99
    hsh_weighting: str = "heat"
    cond_detach_shape: bool = True

    def __post_init__(self) -> None:
        if self.code_dim < 2 or self.base < 1 or self.hidden < 1:
            raise ValueError("code_dim >= 2, base >= 1 and hidden >= 1 are required")
        if self.crop < 32 or self.crop % 32:
            raise ValueError(f"crop must be a positive multiple of 32, got {self.crop}")
        if len(self.enc_blocks) != 5 or any(b < 0 for b in self.enc_blocks) or self.dec_blocks < 0:
            raise ValueError("enc_blocks must be 5 non-negative ints, dec_blocks >= 0")
        if self.recon not in ("l1", "l2"):
            raise ValueError(f"recon must be 'l1' or 'l2', got {self.recon!r}")
        if not 0.0 <= self.momentum < 1.0 or self.temperature <= 0.0:
            raise ValueError("momentum in [0, 1) and temperature > 0 are required")

    @classmethod
    def preset(cls, name: str) -> "AutoencoderConfig":
        """``"cpu"``: base 16 (4.0 M parameters: encoder 1.1 M, decoder 0.6 M, conditioned
        block 2.2 M of which 2.1 M is the bilinear tensor); ``"gpu"``: base 32, deeper encoder
        and decoder (10.6 M)."""
        presets = {
            "cpu": cls(base=16, enc_blocks=(1, 1, 1, 1, 0), dec_blocks=0),
            "gpu": cls(base=32, enc_blocks=(1, 1, 2, 2, 1), dec_blocks=1, hidden=512),
        }
        if name not in presets:
            raise ValueError(f"unknown autoencoder preset {name!r}; "
                             f"choose one of {sorted(presets)}")
        return presets[name]

    @property
    def in_channels(self) -> int:
        return 4 if self.use_depth else 3


def _conv_block(cin: int, cout: int, stride: int, norm: str) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=(norm == "none")),
        make_norm(norm, cout),
        nn.ReLU(inplace=True),
    )


def _init_convs(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


# ---------------------------------------------------------------------------------- encoder
class ShapePoseEncoder(nn.Module):
    """Crop ``(B, C, S, S)`` -> ``(z_o, z_p)``, both ``(B, d)`` and unit norm.

    ``C = 3`` (RGB in ``[0, 1]``), or 4 with ``use_depth`` (RGB + normalized depth). Shared trunk:
    5 stride-2 stages (``S -> S / 32``). Shape head: 1x1 conv, global average pool, MLP (pooling
    makes it less sensitive to where things are, i.e. to pose). Pose head: flatten the
    ``S/32 x S/32`` map (keeps the layout), MLP.
    """

    def __init__(self, cfg: AutoencoderConfig = AutoencoderConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        b, d = cfg.base, cfg.code_dim
        widths = (b, 2 * b, 4 * b, 8 * b, 8 * b)
        stages, cin = [], cfg.in_channels
        for width, n_extra in zip(widths, cfg.enc_blocks):
            layers = [_conv_block(cin, width, 2, cfg.norm)]
            layers += [_conv_block(width, width, 1, cfg.norm) for _ in range(n_extra)]
            stages.append(nn.Sequential(*layers))
            cin = width
        self.trunk = nn.Sequential(*stages)
        c, s = widths[-1], cfg.crop // 32
        self.shape_conv = nn.Sequential(nn.Conv2d(c, c, 1, bias=(cfg.norm == "none")),
                                        make_norm(cfg.norm, c), nn.ReLU(inplace=True))
        self.shape_mlp = nn.Sequential(nn.Linear(c, cfg.hidden), nn.ReLU(inplace=True),
                                       nn.Linear(cfg.hidden, d))
        self.pose_mlp = nn.Sequential(nn.Linear(c * s * s, cfg.hidden), nn.ReLU(inplace=True),
                                      nn.Linear(cfg.hidden, d))
        mean = list(IMAGE_MEAN) + [0.0] * (cfg.in_channels - 3)
        std = list(IMAGE_STD) + [1.0] * (cfg.in_channels - 3)
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        _init_convs(self)

    def forward(self, crops: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Args: crops ``(B, C, S, S)``. Returns ``(z_o, z_p)``, ``(B, d)`` each, unit norm."""
        x = torch.where(torch.isfinite(crops), crops, torch.zeros_like(crops))
        x = (x - self.mean) / self.std
        f = self.trunk(x)
        z_o = self.shape_mlp(self.shape_conv(f).mean(dim=(2, 3)))
        z_p = self.pose_mlp(f.flatten(1))
        return l2_normalize(z_o), l2_normalize(z_p)


# ---------------------------------------------------------------------------------- decoder
class AdaIN(nn.Module):
    """Adaptive instance norm: ``(1 + gamma(z)) * instnorm(x) + beta(z)``, ``gamma, beta`` linear
    in the style code ``z``."""

    def __init__(self, channels: int, style_dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.affine = nn.Linear(style_dim, 2 * channels)
        nn.init.normal_(self.affine.weight, std=0.1)
        nn.init.zeros_(self.affine.bias)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(2, 3), keepdim=True)
        var = ((x - mean) ** 2).mean(dim=(2, 3), keepdim=True)
        xn = (x - mean) * torch.rsqrt(var + self.eps)
        gamma, beta = self.affine(z).chunk(2, dim=-1)
        return xn * (1.0 + gamma[:, :, None, None]) + beta[:, :, None, None]


class _UpStage(nn.Module):
    """Nearest x2 upsampling, then ``1 + extra`` x (conv3x3 -> AdaIN -> ReLU)."""

    def __init__(self, cin: int, cout: int, style_dim: int, extra: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            [nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1) for i in range(1 + extra)])
        self.norms = nn.ModuleList([AdaIN(cout, style_dim) for _ in range(1 + extra)])

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        for conv, norm in zip(self.convs, self.norms):
            x = F.relu(norm(conv(x), z))
        return x


class AdaINDecoder(nn.Module):
    """``(z_p, z_o)`` -> canonical view: RGB ``(B, 3, S, S)`` in ``[0, 1]`` and depth
    ``(B, 1, S, S)`` in ``[-1, 1]``.

    ``z_p`` is mapped to an ``8 base x S/32 x S/32`` map and upsampled 5 times (widths
    ``8, 4, 2, 1`` x base for the 4 shared stages); the last stage is separate for the RGB and
    the depth branch. Every conv is followed by AdaIN conditioned on ``z_o``.
    """

    def __init__(self, cfg: AutoencoderConfig = AutoencoderConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        b, d = cfg.base, cfg.code_dim
        self.s0 = cfg.crop // 32
        self.c0 = 8 * b
        self.fc = nn.Linear(d, self.c0 * self.s0 * self.s0)
        self.norm0 = AdaIN(self.c0, d)
        widths = (8 * b, 4 * b, 2 * b, b)
        stages, cin = [], self.c0
        for w in widths:
            stages.append(_UpStage(cin, w, d, cfg.dec_blocks))
            cin = w
        self.stages = nn.ModuleList(stages)
        self.rgb_stage = _UpStage(cin, b, d, 0)
        self.depth_stage = _UpStage(cin, b, d, 0)
        self.rgb_out = nn.Conv2d(b, 3, 3, padding=1)
        self.depth_out = nn.Conv2d(b, 1, 3, padding=1)
        _init_convs(self)
        for m in (self.rgb_out, self.depth_out):
            nn.init.normal_(m.weight, std=0.01)

    def forward(self, z_p: torch.Tensor, z_o: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        x = self.fc(z_p).view(-1, self.c0, self.s0, self.s0)
        x = F.relu(self.norm0(x, z_o))
        for stage in self.stages:
            x = stage(x, z_o)
        rgb = torch.sigmoid(self.rgb_out(self.rgb_stage(x, z_o)))
        depth = torch.tanh(self.depth_out(self.depth_stage(x, z_o)))
        return rgb, depth


# ---------------------------------------------------------------------------- shape embedding
class ShapeEmbedding(nn.Module):
    """Bank of per-object shape embeddings ``(num_objects, d)``, updated by EMA.

    ``update(z_o, ids)``: for each object ``k`` in the batch with mean code ``mu_k``,
    ``bank[k] <- m * bank[k] + (1 - m) * mu_k`` (then re-normalized to unit length when
    ``renormalize``); objects not in the batch keep their entry. Entries start as random unit
    vectors (nearly orthogonal for ``d = 128``), not as the first batch mean: at initialization
    the encoder maps every object to almost the same ``z_o``, and entries copied from it would
    be nearly identical, leaving InfoNCE without a signal. The bank is a buffer: saved with the
    state dict, never trained by gradients.

    Args:
        num_objects: number of training objects (ids ``0 .. num_objects - 1``).
        dim: code size ``d``.
        momentum: EMA momentum ``m`` (0.99).
        temperature: InfoNCE temperature (0.07).
        renormalize: keep entries unit length after each update.
    """

    def __init__(self, num_objects: int, dim: int = 128, momentum: float = 0.99,
                 temperature: float = 0.07, renormalize: bool = True,
                 generator: Optional[torch.Generator] = None) -> None:
        super().__init__()
        if num_objects < 1:
            raise ValueError("num_objects must be >= 1")
        self.momentum = float(momentum)
        self.temperature = float(temperature)
        self.renormalize = renormalize
        bank = torch.randn(num_objects, dim, generator=generator)
        self.register_buffer("bank", l2_normalize(bank))

    @classmethod
    def from_config(cls, cfg: AutoencoderConfig, num_objects: int, **kw) -> "ShapeEmbedding":
        return cls(num_objects, cfg.code_dim, cfg.momentum, cfg.temperature, **kw)

    @property
    def num_objects(self) -> int:
        return self.bank.shape[0]

    @torch.no_grad()
    def update(self, z_o: torch.Tensor, object_ids: torch.Tensor) -> None:
        """EMA update from a batch: ``z_o (B, d)``, ``object_ids (B,)`` long."""
        z = z_o.detach().to(self.bank.dtype)
        ids = object_ids.to(self.bank.device).long()
        sums = torch.zeros_like(self.bank).index_add_(0, ids, z)
        ones = torch.ones(ids.shape[0], device=self.bank.device, dtype=self.bank.dtype)
        counts = torch.zeros_like(self.bank[:, 0]).index_add_(0, ids, ones)
        seen = counts > 0
        mean = sums / counts.clamp_min(1.0)[:, None]
        new = self.momentum * self.bank + (1.0 - self.momentum) * mean
        if self.renormalize:
            new = l2_normalize(new)
        self.bank.copy_(torch.where(seen[:, None], new, self.bank))


def contrastive_shape_loss(z_o: torch.Tensor, object_ids: torch.Tensor,
                           bank: Union[ShapeEmbedding, torch.Tensor],
                           temperature: Optional[float] = None) -> torch.Tensor:
    """InfoNCE of shape codes against the bank: positive = the object's own entry.

    ``loss = mean_b CE(z_o[b] . bank^T / T, id[b])``; the bank is a constant (no gradient).

    Args:
        z_o: ``(B, d)`` unit shape codes.
        object_ids: ``(B,)`` long.
        bank: a :class:`ShapeEmbedding` or its ``(K, d)`` tensor.
        temperature: default the bank's (0.07), or 0.07 for a bare tensor.
    """
    if isinstance(bank, ShapeEmbedding):
        t = bank.temperature if temperature is None else temperature
        entries = bank.bank
    else:
        t = 0.07 if temperature is None else temperature
        entries = bank
    # clone: the bank is updated in place right after (EMA) while autograd still needs it.
    logits = z_o @ entries.detach().to(z_o.dtype).clone().t() / t
    return F.cross_entropy(logits, object_ids.to(z_o.device).long())


# ------------------------------------------------------------------------- rotation heads
class PoseHead(nn.Module):
    """``hsh(R) (.., 128)`` -> unit "rotation anchor" in pose-code space ``(.., d)`` (MLP)."""

    def __init__(self, d: int = 128, hidden: int = 256, weighting: str = "heat") -> None:
        super().__init__()
        self.weighting = weighting
        self.mlp = nn.Sequential(nn.Linear(HSH_DIM, hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, d))

    def forward(self, R: torch.Tensor) -> torch.Tensor:
        """Args: R ``(..., 3, 3)``. Returns ``(..., d)`` unit vectors."""
        return l2_normalize(self.mlp(hsh_encode_matrix(R, self.weighting)))


def pose_code_loss(z_p: torch.Tensor, R: torch.Tensor, head: PoseHead) -> torch.Tensor:
    """``mean(1 - cos(z_p, head(R)))``: ties the pose code to the rotation through its HSH
    encoding (gradients into both the codes and the head). ``z_p (B, d)``, ``R (B, 3, 3)``."""
    anchor = head(R.to(z_p.dtype))
    return (1.0 - (l2_normalize(z_p) * anchor).sum(-1)).mean()


class ConditionedBlock(nn.Module):
    """Shape-conditioned pose code ``B(z_o, R) -> z_p_hat`` (unit norm).

    ``p = MLP(hsh(R))`` (``d``), ``y = z_o^T W_k p + (V p)_k + b_k`` with ``W`` a learnable
    ``d x d x d`` tensor (``F.bilinear``; the linear term ``V p`` gives the block a
    rotation-only path from the start), then a pre-norm residual FFN
    ``y + FFN(LN(y))`` and L2 normalization.
    """

    def __init__(self, d: int = 128, hidden: int = 256, weighting: str = "heat") -> None:
        super().__init__()
        self.d = d
        self.weighting = weighting
        self.pose_proj = nn.Sequential(nn.Linear(HSH_DIM, hidden), nn.ReLU(inplace=True),
                                       nn.Linear(hidden, d), nn.LayerNorm(d))
        self.W = nn.Parameter(torch.randn(d, d, d) / d**0.5)
        self.bias = nn.Parameter(torch.zeros(d))
        self.lin = nn.Linear(d, d, bias=False)
        self.ffn_norm = nn.LayerNorm(d)
        self.ffn = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def pose_input(self, R: torch.Tensor) -> torch.Tensor:
        """``p = MLP(hsh(R))``: ``(..., 3, 3)`` -> ``(..., d)``."""
        return self.pose_proj(hsh_encode_matrix(R, self.weighting))

    def _head(self, y: torch.Tensor) -> torch.Tensor:
        return l2_normalize(y + self.ffn(self.ffn_norm(y)))

    def forward(self, z_o: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
        """Args: z_o ``(B, d)`` (or ``(d,)``, broadcast), R ``(B, 3, 3)``. Returns ``(B, d)``."""
        p = self.pose_input(R.to(z_o.dtype))
        batch = p.shape[:-1]
        z = z_o.expand(*batch, self.d).reshape(-1, self.d)
        p = p.reshape(-1, self.d)
        y = F.bilinear(z, p, self.W, self.bias) + self.lin(p)
        return self._head(y).reshape(*batch, self.d)

    def codes_for(self, z_o: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
        """``B(z_o[n], R[n, k])`` for ``z_o (N, d)`` and ``R (N, K, 3, 3)`` -> ``(N, K, d)``, with
        gradients: each shape code against its own K candidate rotations (what a retrieval loss
        needs), contracting ``W`` with each ``z_o`` once as :meth:`codebook` does."""
        p = self.pose_input(R.to(z_o.dtype))  # (N, K, d)
        M = torch.einsum("ni,kij->nkj", z_o, self.W)  # (N, d_out, d_in)
        y = torch.einsum("nkj,ncj->nck", M, p) + self.bias + self.lin(p)
        return self._head(y)

    @torch.no_grad()
    def codebook(self, z_o: torch.Tensor, R: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
        """Codebook of one object without rendering: ``B(z_o, R_i)`` for ``R (N, 3, 3)``.

        ``W`` is contracted with ``z_o`` once (``M = z_o^T W``, ``d x d``) so the cost is that of
        a linear layer per rotation. Returns ``(N, d)`` unit codes.
        """
        z = z_o.reshape(-1)
        M = torch.einsum("i,kij->kj", z, self.W)
        out = []
        for s in range(0, R.shape[0], chunk):
            p = self.pose_input(R[s:s + chunk].to(z.dtype))
            out.append(self._head(p @ M.t() + self.bias + self.lin(p)))
        return torch.cat(out, 0) if out else torch.zeros(0, self.d, dtype=z.dtype)


# ------------------------------------------------------------------------------ the model
class DisentangledAutoencoder(nn.Module):
    """Encoder + AdaIN decoder + pose head + conditioned block (the shape bank lives outside,
    in a :class:`ShapeEmbedding`, because its size is the number of training objects).

    ``loss(batch, bank)`` expects a dict of tensors (``S = cfg.crop``):

    - ``crop`` ``(B, 3, S, S)`` in ``[0, 1]`` (4 channels with ``use_depth``): the augmented
      input crop.
    - ``target_rgb`` ``(B, 3, S, S)`` in ``[0, 1]``: canonical view, i.e. the clean render of the
      same object at the same rotation, centred, fixed scale (multiplied by ``mask`` here).
    - ``target_depth`` ``(B, 1, S, S)``: ``(z - z_centre) / radius`` on the object (values off the
      mask are ignored and replaced by ``+1``).
    - ``mask`` ``(B, 1, S, S)``: 1 on the object in the canonical view.
    - ``R`` ``(B, 3, 3)``: object-to-camera rotation shown by the crop (and the target).
    - ``object_id`` ``(B,)`` long, index into the bank.
    """

    def __init__(self, cfg: AutoencoderConfig = AutoencoderConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = ShapePoseEncoder(cfg)
        self.decoder = AdaINDecoder(cfg)
        self.pose_head = PoseHead(cfg.code_dim, cfg.hidden, cfg.hsh_weighting)
        self.cond_block = ConditionedBlock(cfg.code_dim, cfg.hidden, cfg.hsh_weighting)

    def forward(self, crops: torch.Tensor) -> Dict[str, torch.Tensor]:
        """``crops (B, C, S, S)`` -> ``dict(z_o, z_p`` ``(B, d)``, ``rgb (B, 3, S, S)``,
        ``depth (B, 1, S, S))``."""
        z_o, z_p = self.encoder(crops)
        rgb, depth = self.decoder(z_p, z_o)
        return {"z_o": z_o, "z_p": z_p, "rgb": rgb, "depth": depth}

    @torch.no_grad()
    def encode(self, crops: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Inference: ``(z_o, z_p)`` without gradients (GroupNorm: same in train/eval)."""
        return self.encoder(crops)

    def _recon(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        diff = pred - target
        return diff.abs().mean() if self.cfg.recon == "l1" else (diff * diff).mean()

    def loss(self, batch: Dict[str, torch.Tensor], bank: ShapeEmbedding,
             update_bank: bool = True) -> Dict[str, torch.Tensor]:
        """Combined training loss (see the module docstring) and its parts.

        The bank is read before and, with ``update_bank``, EMA-updated after the loss is
        computed (with the detached ``z_o``).

        Returns:
            dict with ``loss`` (to backpropagate) and the detached parts ``recon``,
            ``recon_rgb``, ``recon_depth``, ``shape``, ``pose``, ``cond``, plus the outputs
            ``z_o``, ``z_p``, ``rgb``, ``depth`` (attached).
        """
        cfg = self.cfg
        out = self(batch["crop"])
        mask = batch["mask"].to(out["rgb"].dtype)
        target_rgb = batch["target_rgb"] * mask
        target_depth = torch.where(mask > 0.5, batch["target_depth"], torch.ones_like(mask))
        recon_rgb = self._recon(out["rgb"], target_rgb)
        recon_depth = self._recon(out["depth"], target_depth)
        recon = recon_rgb + cfg.depth_weight * recon_depth
        ids = batch["object_id"]
        shape = contrastive_shape_loss(out["z_o"], ids, bank)
        R = batch["R"].to(out["z_p"].dtype)
        pose = pose_code_loss(out["z_p"], R, self.pose_head)
        z_o_in = out["z_o"].detach() if cfg.cond_detach_shape else out["z_o"]
        z_hat = self.cond_block(z_o_in, R)
        cond = (1.0 - (z_hat * out["z_p"].detach()).sum(-1)).mean()
        total = (recon + cfg.shape_weight * shape + cfg.pose_weight * pose
                 + cfg.cond_weight * cond)
        if update_bank:
            bank.update(out["z_o"], ids)
        parts = {"recon": recon, "recon_rgb": recon_rgb, "recon_depth": recon_depth,
                 "shape": shape, "pose": pose, "cond": cond}
        result = {"loss": total, **{k: v.detach() for k, v in parts.items()}}
        result.update(out)
        return result

    @torch.no_grad()
    def conditioned_codebook(self, z_o: torch.Tensor, R: torch.Tensor,
                             chunk: int = 8192) -> torch.Tensor:
        """Shape-conditioned codebook ``(N, d)`` for one shape code ``z_o (d,)`` and rotations
        ``R (N, 3, 3)`` (:meth:`ConditionedBlock.codebook`)."""
        return self.cond_block.codebook(z_o, R, chunk)


class EncoderExport(nn.Module):
    """ONNX/TensorRT view of the encoder: ``forward(crops) -> (z_o, z_p)``.

    ``torch.onnx.export(EncoderExport(model), (crops,), path, dynamo=True,
    dynamic_shapes=EncoderExport.dynamic_shapes(), input_names=EncoderExport.input_names,
    output_names=EncoderExport.output_names)`` gives a graph with a dynamic batch (the crop
    size is fixed by the pose MLP).
    """

    input_names = ["crops"]
    output_names = ["z_o", "z_p"]

    def __init__(self, model: Union[DisentangledAutoencoder, ShapePoseEncoder]) -> None:
        super().__init__()
        self.encoder = model.encoder if isinstance(model, DisentangledAutoencoder) else model

    def forward(self, crops: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(crops)

    @staticmethod
    def dynamic_shapes(max_batch: int = 4096):
        from torch.export import Dim

        return ({0: Dim("batch", min=1, max=max_batch)},)
