"""4D hyperspherical-harmonics (HSH) encoding of rotations: ``q in S^3 -> R^128``.

The disentangled autoencoder (Wen et al., ECCV 2022) feeds rotations to its networks as
hyperspherical harmonics of the unit quaternion rather than as a matrix or quaternion: a smooth,
bounded, multi-frequency embedding of SO(3) that linear layers can read. This module is our own
implementation of that idea.

Harmonics
---------
With hyperspherical coordinates of a unit quaternion ``q = (x, y, z, w)``::

    w = cos(chi),  (x, y, z) = sin(chi) * (sin(th) cos(ph), sin(th) sin(ph), cos(th))

(``chi`` is half the rotation angle, ``(th, ph)`` the direction of the rotation axis), the
complex hyperspherical harmonic of degree ``n`` and indices ``0 <= l <= n``, ``|m| <= l`` is::

    Z_nlm(q) = sin^l(chi) C_{n-l}^{l+1}(cos chi) P_l^m(cos th) e^{i m ph}

(``C`` Gegenbauer polynomials, ``P`` associated Legendre functions with the Condon-Shortley
phase). ``Z_{n,l,-m}`` is ``+-conj(Z_nlm)``, so as the paper does we keep ``0 <= m <= l`` and take
real and imaginary parts; ``Im Z_nl0 = 0`` is dropped. Degree ``n`` then has exactly
``(n + 1)^2`` real functions (all of them: ``sum_l (2 l + 1)``).

How the 128 dims are chosen (deterministic)
-------------------------------------------
1. **Antipodal invariance by even degrees.** ``q`` and ``-q`` are the same rotation. ``Z_nlm`` is
   the restriction to ``S^3`` of a homogeneous polynomial of degree ``n``, so
   ``Z_nlm(-q) = (-1)^n Z_nlm(q)``: even degrees are exactly invariant, odd degrees flip sign.
   We use even degrees only. This makes the encoding a *smooth function on SO(3)* (no sign
   canonicalization ``w >= 0``, whose cut at ``w = 0`` -- every 180 degree rotation -- would make
   the encoding jump; and no ``|.|``-symmetrization, which has kinks). The even-degree harmonics
   are the matrix elements of the Wigner D^j, ``j = n / 2``; degree 2 alone already separates
   all rotations (it spans the entries of ``R`` minus its trace part).
2. **No constant.** ``n = 0`` is the constant 1 and says nothing about the rotation (every layer
   that reads the encoding has a bias): dropped.
3. **Count.** ``n = 2, 4, 6`` give ``9 + 25 + 49 = 83`` functions. (For reference, the literal
   "``n = 0..6``, ``0 <= m <= l``, real + imaginary parts minus the zero imaginary parts of
   ``m = 0``" count is ``168 - 28 = 140 = sum_{n<=6} (n+1)^2``, of which the odd degrees are not
   antipodally invariant and the even ones give 84 including the constant.) The remaining
   ``128 - 83 = 45`` come from degree 8, taking its functions in the canonical order below:
   ``l = 0..5`` (36 functions) and ``l = 6`` with ``m = 0..4`` (9 functions).
4. **Canonical order** (the order of the output dims): ``n`` ascending, then ``l``, then ``m``,
   then real before imaginary; the first 128 functions of that list over ``n in (2, 4, 6, 8)``.
   :func:`hsh_terms` returns it.

Scaling
-------
Each function is normalized to unit mean square over uniformly random rotations (``"none"``
weighting: the 128 features are orthonormal under the Haar measure, Gram matrix = identity),
and by default (``"heat"``) degree ``n`` is then multiplied by
``exp(-tau (n (n + 2) - 8) / 2)`` with ``tau = 0.07`` (1, 0.57, 0.25, 0.08 for ``n = 2..8``).
``n (n + 2)`` is the Laplacian eigenvalue on ``S^3``, so by the addition theorem the inner
product ``<h(q1), h(q2)>`` is (up to the partial degree 8) the heat kernel of SO(3) at time
``tau`` minus its constant: a function of the geodesic angle only, *strictly decreasing* on
``[0, pi]`` for this ``tau`` (checked numerically; ``tau <= 0.065`` is not monotone), so encoding
distance grows monotonically with rotation distance. Unweighted, all degrees count alike and
the distance saturates beyond about 50 degrees (useful resolution, useless as a metric). The
networks read the encoding through linear layers, which can undo any per-degree scaling.

Numerics
--------
The torch version never computes an angle: ``sin^l(chi) P_l^m(cos th) e^{i m ph}`` is the regular
solid harmonic of ``(x, y, z)``, a polynomial evaluated by the stable three-term recurrences
(``R_mm = (-1)^m (2m-1)!! (x + i y)^m``, ``R_{m+1,m} = (2m+1) z R_mm``,
``(l - m) R_lm = (2l - 1) z R_{l-1,m} - (l + m - 1) |v|^2 R_{l-2,m}``) and
``C_k^a(w)`` by its recurrence. Everything is a polynomial of ``q``: no singularity at the
identity, at 180 degrees or on the coordinate poles, exact gradients, fixed control flow (ONNX
exportable). The numpy reference (:func:`hsh_encode_numpy`) computes the same thing the textbook
way, from the angles ``(chi, th, ph)`` with :mod:`scipy.special`, as an independent check.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import TYPE_CHECKING, List, NamedTuple

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = [
    "HSH_DIM",
    "HSH_DEGREES",
    "HSH_TAU",
    "HSHTerm",
    "hsh_terms",
    "hsh_scales",
    "hsh_encode",
    "hsh_encode_matrix",
    "hsh_encode_numpy",
    "hsh_encode_matrix_numpy",
]

HSH_DIM = 128
HSH_DEGREES = (2, 4, 6, 8)
HSH_TAU = 0.07
_WEIGHTINGS = ("heat", "none")


class HSHTerm(NamedTuple):
    """One output dimension: ``Re`` (``part = 0``) or ``Im`` (``part = 1``) of ``Z_nlm``."""

    n: int
    l: int  # noqa: E741 (the standard name of the index)
    m: int
    part: int


@lru_cache(maxsize=None)
def _terms() -> tuple:
    out: List[HSHTerm] = []
    for n in HSH_DEGREES:
        for l in range(n + 1):  # noqa: E741
            for m in range(l + 1):
                out.append(HSHTerm(n, l, m, 0))
                if m > 0:
                    out.append(HSHTerm(n, l, m, 1))
    return tuple(out[:HSH_DIM])


def hsh_terms() -> List[HSHTerm]:
    """The 128 ``(n, l, m, part)`` of the output dims, in output order (see module docstring)."""
    return list(_terms())


def _mean_sq_complex(n: int, l: int, m: int) -> float:  # noqa: E741
    """``E |Z_nlm|^2`` over the uniform probability measure on ``S^3`` (closed form).

    Radial part (``x = cos chi``, measure ``sin^2 chi dchi``):
    ``int (1-x^2)^(l+1/2) C_{n-l}^{l+1}(x)^2 dx = pi 2^(-2l-1) (n+l+1)! / ((n-l)! (n+1) l!^2)``;
    angular part: ``int |P_l^m e^{i m ph}|^2 = 4 pi (l+m)! / ((2l+1) (l-m)!)``; the volume of
    ``S^3`` is ``2 pi^2``.
    """
    f = math.factorial
    radial = math.pi * 2.0 ** (-2 * l - 1) * f(n + l + 1) / (f(n - l) * (n + 1) * f(l) ** 2)
    angular = 4.0 * math.pi * f(l + m) / ((2 * l + 1) * f(l - m))
    return radial * angular / (2.0 * math.pi**2)


@lru_cache(maxsize=None)
def _scales(weighting: str) -> tuple:
    if weighting not in _WEIGHTINGS:
        raise ValueError(f"weighting must be one of {_WEIGHTINGS}, got {weighting!r}")
    out = []
    for t in _terms():
        s = (math.sqrt(2.0) if t.m > 0 else 1.0) / math.sqrt(_mean_sq_complex(t.n, t.l, t.m))
        if weighting == "heat":
            s *= math.exp(-HSH_TAU * (t.n * (t.n + 2) - 8) / 2.0)
        out.append(s)
    return tuple(out)


def hsh_scales(weighting: str = "heat") -> np.ndarray:
    """Per-dim factors applied to the raw ``Re/Im Z_nlm``, shape ``(128,)``, float64."""
    return np.array(_scales(weighting))


def _check_weighting(weighting: str) -> None:
    if weighting not in _WEIGHTINGS:
        raise ValueError(f"weighting must be one of {_WEIGHTINGS}, got {weighting!r}")


# --------------------------------------------------------------------------------------------
# torch (batched, differentiable, fixed control flow)
# --------------------------------------------------------------------------------------------


def hsh_encode(q_xyzw: "torch.Tensor", weighting: str = "heat") -> "torch.Tensor":
    """HSH encoding of rotations given as quaternions.

    Args:
        q_xyzw: quaternions ``(x, y, z, w)``, shape ``(..., 4)``; normalized here (any non-zero
            4-vector), either sign (``q`` and ``-q`` give the same encoding).
        weighting: ``"heat"`` (default, per-degree heat-kernel weights, monotone distance) or
            ``"none"`` (orthonormal features).

    Returns:
        ``(..., 128)``, same dtype/device as ``q_xyzw``; differentiable.
    """
    import torch

    _check_weighting(weighting)
    q = q_xyzw / torch.linalg.vector_norm(q_xyzw, dim=-1, keepdim=True).clamp_min(1e-12)
    x, y, z, w = q.unbind(-1)
    r2 = x * x + y * y + z * z
    terms = _terms()
    lmax = max(t.l for t in terms)
    kmax = {}
    for t in terms:
        kmax[t.l] = max(kmax.get(t.l, 0), t.n - t.l)

    # Regular solid harmonics R_lm = |v|^l P_l^m(cos th) e^{i m ph} as (re, im) polynomials.
    solid = {}
    zero = torch.zeros_like(x)
    pre, pim = torch.ones_like(x), zero  # (x + i y)^m
    double_fact = 1.0  # (2m - 1)!!
    for m in range(lmax + 1):
        if m > 0:
            pre, pim = pre * x - pim * y, pre * y + pim * x
            double_fact *= 2 * m - 1
        c = (-1.0) ** m * double_fact
        solid[m, m] = (c * pre, c * pim)
        if m + 1 <= lmax:
            a_re, a_im = solid[m, m]
            solid[m + 1, m] = ((2 * m + 1) * z * a_re, (2 * m + 1) * z * a_im)
        for l in range(m + 2, lmax + 1):  # noqa: E741
            (p1r, p1i), (p2r, p2i) = solid[l - 1, m], solid[l - 2, m]
            solid[l, m] = (((2 * l - 1) * z * p1r - (l + m - 1) * r2 * p2r) / (l - m),
                           ((2 * l - 1) * z * p1i - (l + m - 1) * r2 * p2i) / (l - m))

    # Gegenbauer C_k^{l+1}(w), k = 0..kmax[l].
    geg = {}
    for l, kk in kmax.items():  # noqa: E741
        a = l + 1.0
        geg[0, l] = torch.ones_like(w)
        if kk >= 1:
            geg[1, l] = 2.0 * a * w
        for k in range(2, kk + 1):
            geg[k, l] = (2.0 * (k + a - 1.0) * w * geg[k - 1, l]
                         - (k + 2.0 * a - 2.0) * geg[k - 2, l]) / k

    scales = _scales(weighting)
    feats = [s * geg[t.n - t.l, t.l] * solid[t.l, t.m][t.part] for t, s in zip(terms, scales)]
    return torch.stack(feats, dim=-1)


def hsh_encode_matrix(R: "torch.Tensor", weighting: str = "heat") -> "torch.Tensor":
    """HSH encoding of rotation matrices ``(..., 3, 3)`` -> ``(..., 128)`` (torch).

    Goes through :func:`~sixd_pose_ros.geometry.rotations.quat_xyzw_from_matrix_torch`; its
    branch and sign choices do not matter because the encoding is even in ``q``, so the
    result is a smooth function of ``R``.
    """
    from sixd_pose_ros.geometry.rotations import quat_xyzw_from_matrix_torch

    return hsh_encode(quat_xyzw_from_matrix_torch(R), weighting)


# --------------------------------------------------------------------------------------------
# numpy reference (textbook formulas from the hyperspherical angles)
# --------------------------------------------------------------------------------------------


def hsh_encode_numpy(q_xyzw: np.ndarray, weighting: str = "heat") -> np.ndarray:
    """Reference implementation of :func:`hsh_encode` from the angles ``(chi, th, ph)``.

    Uses ``scipy.special.eval_gegenbauer`` and ``scipy.special.lpmv`` (Condon-Shortley phase);
    float64. Slower and less accurate near the poles than the torch polynomials, meant for
    tests and offline use.

    Args:
        q_xyzw: quaternions, shape ``(..., 4)`` (normalized here).
        weighting: as in :func:`hsh_encode`.

    Returns:
        ``(..., 128)`` float64.
    """
    from scipy.special import eval_gegenbauer, lpmv

    _check_weighting(weighting)
    q = np.asarray(q_xyzw, dtype=np.float64)
    if q.shape[-1] != 4:
        raise ValueError(f"expected (..., 4) quaternions, got shape {q.shape}")
    q = q / np.maximum(np.linalg.norm(q, axis=-1, keepdims=True), 1e-12)
    x, y, z, w = np.moveaxis(q, -1, 0)
    chi = np.arctan2(np.sqrt(x * x + y * y + z * z), w)
    th = np.arctan2(np.sqrt(x * x + y * y), z)
    ph = np.arctan2(y, x)
    out = []
    for t, s in zip(_terms(), _scales(weighting)):
        radial = np.sin(chi) ** t.l * eval_gegenbauer(t.n - t.l, t.l + 1.0, np.cos(chi))
        azim = np.sin(t.m * ph) if t.part else np.cos(t.m * ph)
        out.append(s * radial * lpmv(t.m, t.l, np.cos(th)) * azim)
    return np.stack(out, axis=-1)


def hsh_encode_matrix_numpy(R: np.ndarray, weighting: str = "heat") -> np.ndarray:
    """:func:`hsh_encode_numpy` of rotation matrices ``(..., 3, 3)`` -> ``(..., 128)``."""
    from sixd_pose_ros.geometry.rotations import quat_xyzw_from_matrix

    return hsh_encode_numpy(quat_xyzw_from_matrix(R), weighting)
