"""bgprompt_ros: background prompting for object depth (ament_python package, also pip-installable).

Dependencies are declared once, in requirements/*.txt, and read here as extras. On a ROS 2 robot the
system packages named in package.xml (rosdep) provide rclpy, the messages, numpy and OpenCV instead of the
`ros` and `robot` extras; pip adds only what has no apt package (docs/DEPLOYMENT.md).
"""
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "bgprompt_ros"
HERE = Path(__file__).resolve().parent


def _requirements(name: str) -> list[str]:
    lines = (HERE / "requirements" / f"{name}.txt").read_text().splitlines()
    return [ln.split("#")[0].strip() for ln in lines if ln.split("#")[0].strip()]


# robot: the torch-free runtime (numpy, OpenCV, onnxruntime) that runs the shipped / exported graph. core and
# runtime build on it (torch, transformers, scipy; ONNX export, rembg); ros adds rclpy and the messages as wheels
# where no apt ROS is installed: `pip install ".[robot,ros]"` is a torch-free robot node.
robot = _requirements("robot")
extras = {"robot": robot, **{name: robot * (name in ("core", "runtime")) + _requirements(name)
                             for name in ("core", "train", "runtime", "ros", "test")}}
extras["all"] = sorted({req for reqs in extras.values() for req in reqs})

setup(
    name=PACKAGE,
    version="0.1.0",
    description="Object depth from one image with learned background prompts and a frozen depth network",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["bgprompt_core", "bgprompt_core.*", "bgprompt_ros", "bgprompt_ros.*"])
    + find_packages(where="training", include=["bgprompt_training", "bgprompt_training.*"]),
    package_dir={"bgprompt_training": "training/bgprompt_training"},
    package_data={"bgprompt_core": ["models/**/*", "prompts/*", "graphs/*"], "bgprompt_training": ["configs/*.json"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", [str(p) for p in sorted(Path("launch").glob("*.launch.py"))]),
        (f"share/{PACKAGE}/config", [str(p) for p in sorted(Path("config").glob("*")) if p.is_file()]),
    ],
    install_requires=["setuptools"],
    extras_require=extras,
    zip_safe=False,
    entry_points={
        "console_scripts": [
            "bgprompt = bgprompt_training.cli:main",
            "object_depth_node = bgprompt_ros.node:main",
        ],
        # verbs contributed to `bgprompt` by other layers (the CLI must not import the ROS layer)
        "bgprompt.verbs": [
            "bag = bgprompt_ros.cli:register",
        ],
    },
)
