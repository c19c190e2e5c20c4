"""Geometry core: rotations, SO(3) sampling, pinhole camera, object normalization, pose errors.

Plain numpy (torch for the ``*_torch`` functions); no ROS. Conventions used everywhere:
meters; camera frame = OpenCV/ROS optical frame (x right, y down, z forward); poses are
object-to-camera, ``X_cam = R_m2c @ X_obj + t_m2c``; quaternions in ROS order ``(x, y, z, w)``.
"""

from .normalization import ObjectNormalization, normalization_from_points, object_diameter
from .pinhole import (
    backproject_depth,
    backproject_pixels,
    crop_affine,
    crop_intrinsics,
    project,
    project_model_points,
    scale_intrinsics,
)
from .pose_errors import (
    add_error,
    adds_error,
    projection_error_2d,
    rotation_error_deg,
    transform_points,
    translation_error,
)
from .rotations import (
    axis_angle_from_matrix,
    geodesic_angle,
    geodesic_angle_torch,
    inplane_rotation,
    look_at_rotation,
    matrix_from_axis_angle,
    matrix_from_quat_xyzw,
    matrix_from_quat_xyzw_torch,
    quat_xyzw_from_matrix,
    quat_xyzw_from_matrix_torch,
    random_rotations,
)
from .sampling import (
    farthest_point_sampling,
    grid_index,
    icosphere_vertices,
    inplane_angles,
    nearest_viewpoints,
    split_grid_index,
    viewpoint_rotation_grid,
)

__all__ = [
    # rotations
    "quat_xyzw_from_matrix",
    "matrix_from_quat_xyzw",
    "matrix_from_axis_angle",
    "axis_angle_from_matrix",
    "geodesic_angle",
    "inplane_rotation",
    "look_at_rotation",
    "random_rotations",
    "quat_xyzw_from_matrix_torch",
    "matrix_from_quat_xyzw_torch",
    "geodesic_angle_torch",
    # sampling
    "icosphere_vertices",
    "inplane_angles",
    "viewpoint_rotation_grid",
    "grid_index",
    "split_grid_index",
    "farthest_point_sampling",
    "nearest_viewpoints",
    # pinhole
    "project",
    "project_model_points",
    "backproject_pixels",
    "backproject_depth",
    "crop_intrinsics",
    "crop_affine",
    "scale_intrinsics",
    # normalization
    "ObjectNormalization",
    "normalization_from_points",
    "object_diameter",
    # pose errors
    "transform_points",
    "add_error",
    "adds_error",
    "projection_error_2d",
    "rotation_error_deg",
    "translation_error",
]
