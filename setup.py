"""ament_python package: installs the Python package, launch/config/rviz files and console scripts."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "sixd_pose_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    include_package_data=True,
    package_data={PACKAGE: ["assets/**/*", "weights/**/*"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.rviz") + glob("config/*.xml")),
    ],
    # Python dependencies are in requirements.txt (pip) and package.xml (rosdep); colcon
    # builds must not try to resolve them from an index.
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="sixd_pose_ros developers",
    maintainer_email="dev@sixd-pose.invalid",
    description="6D object pose estimation for robot grasping, as a ROS 2 node",
    license="Apache-2.0",
    python_requires=">=3.10",
    entry_points={
        "console_scripts": [
            "sixd_pose_node = sixd_pose_ros.ros.node_main:main",
            "capture_references = sixd_pose_ros.ros.capture_references:main",
            "sixd-pose = sixd_pose_ros.cli:main",
        ],
    },
)
