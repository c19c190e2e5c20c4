"""Procedural objects: the only objects the networks of this package ever see in training.

No pretrained weights and no scanned object sets are available here, so every detector, selector,
refiner and autoencoder is trained from scratch on objects made by this package, and evaluated on
*held-out* objects made by it as well. Three properties follow from that use, and the code is built
around them:

* **Determinism.** ``make_object(split, index)`` always returns the identical mesh (same vertex
  bytes), so a dataset is reproducible from its list of ``(split, index)`` keys alone and nothing
  but those keys has to be stored or shipped.
* **A clean split.** Every object draws all its randomness from ``object_seed(split, index)``, a
  ``numpy.random.SeedSequence`` whose entropy is ``(SPLIT_CODE[split], index)``. Two different keys
  are two different entropy tuples, so a held-out object can never be the same draw as a training
  object; the shape parameters are continuous, so two draws never give the same shape.
* **Variety with honest labels.** Families (primitives, superquadrics, lathes, extrusions, unions,
  swept tubes, and tapered / twisted / bent variants of all of them) are mixed by weighted choice,
  and each object records its rotational symmetry. Labels that claim *no* symmetry are checked
  numerically when the object is made (``_has_hidden_symmetry``), because an asymmetric label on a
  symmetric object would teach a pose network that two identical views have different poses.

Conventions: meters; symmetry axes are the object's z axis through the origin; symmetric objects are
centred on that axis, the others on their bounding box centre. Symmetry labels describe the shape
(what ADD-S needs); ``visual_symmetry`` says whether the appearance keeps it (a textured cylinder
whose texture varies around the axis is geometrically ``continuous_z`` but visually ``none``).
Some shapes have more symmetry than their z label names (a box also has 180 degree flips about x
and y); ``symmetry_rotations`` finds those extra flips numerically when a caller needs the group.

Only numpy, scipy, trimesh and Pillow are used. The modules, by job:

* :mod:`.objects`: the public entry points (:func:`make_object`, :func:`make_bundled_demo_object`,
  :class:`ProceduralObject`, seeds and splits), and the finishing of an object (centring,
  scaling, visuals).
* :mod:`.bodies`: closed mesh shells (sweeps of rings along profiles, tori, tubes) and rotations.
* :mod:`.shapes`: the families and their random recipes, features and deformations.
* :mod:`.symmetry`: symmetry analysis (honest labels, an object's symmetry group).
* :mod:`.textures`: procedural textures, uv mapping and vertex colours.

Speed: about 12-15 ms of CPU per object on the 2-core development machines (the symmetry check
of asymmetric objects is a few of those), so datasets can be generated on the fly.
"""

from sixd_pose_ros.render.procedural.objects import (
    FAMILIES,
    SPLIT_CODE,
    SPLITS,
    SYMMETRIES,
    ProceduralObject,
    heldout_benchmark_ids,
    make_bundled_demo_object,
    make_object,
    object_seed,
)

__all__ = [
    "SPLITS",
    "SPLIT_CODE",
    "FAMILIES",
    "SYMMETRIES",
    "ProceduralObject",
    "object_seed",
    "make_object",
    "heldout_benchmark_ids",
    "make_bundled_demo_object",
]
