"""Package layout: ament_python metadata, layering of the three packages, and a real colcon build."""
import ast
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_package_xml_is_format_3_ament_python_with_real_deps():
    root = ET.parse(ROOT / "package.xml").getroot()
    assert root.get("format") == "3" and root.findtext("name") == "bgprompt_ros"
    deps = {e.text for e in root.findall("exec_depend")}
    assert {"rclpy", "sensor_msgs", "std_msgs", "launch", "launch_ros", "python3-numpy", "python3-opencv"} <= deps
    assert root.find("export/build_type").text == "ament_python"


def _imports_of(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _imports(pkg_dir: Path) -> set[str]:
    return set().union(*(_imports_of(path) for path in pkg_dir.rglob("*.py")))


def test_dependencies_point_downward_only():
    core = _imports(ROOT / "bgprompt_core")
    assert not core & {"rclpy", "bgprompt_ros", "bgprompt_training", "sensor_msgs"}
    # rosbags (pure Python, no ROS install) is read in one core module: the bag reader that `bag eval` and
    # training from robot recordings share
    users = {p.name for p in (ROOT / "bgprompt_core").rglob("*.py") if "rosbags" in _imports_of(p)}
    assert users <= {"bag_frames.py"}, users
    training = _imports(ROOT / "training" / "bgprompt_training")
    assert not training & {"rclpy", "bgprompt_ros"}
    if (ROOT / "bgprompt_ros").is_dir():
        assert "bgprompt_training" not in _imports(ROOT / "bgprompt_ros")


def test_dependencies_declared_once():
    seen = {}
    for req in (ROOT / "requirements").glob("*.txt"):
        if req.name == "lock.txt":  # the generated closure of all of them, hashed (test_lock checks it)
            continue
        for line in req.read_text().splitlines():
            line = line.split("#")[0].strip()
            if line:
                name = line.split("==")[0].split("[")[0].lower()
                assert name not in seen, f"{name} pinned in {seen.get(name)} and {req.name}"
                seen[name] = req.name
    assert "torch" in seen and "ros-jazzy-rclpy" in seen


@pytest.mark.slow
def test_colcon_build_produces_the_layout_ros2_run_and_launch_use(tmp_path):
    colcon = shutil.which("colcon") or str(Path(sys.executable).parent / "colcon")
    if not Path(colcon).exists():
        pytest.fail("colcon is not installed: it is part of requirements/test.txt")
    (tmp_path / "src").mkdir()
    os.symlink(ROOT, tmp_path / "src" / "bgprompt_ros")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AMENT") and not k.startswith("COLCON")}
    proc = subprocess.run([colcon, "build", "--base-paths", "src", "--build-base", "build",
                           "--install-base", "install"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    share = tmp_path / "install/bgprompt_ros/share"
    assert (share / "ament_index/resource_index/packages/bgprompt_ros").is_file()
    assert (share / "bgprompt_ros/package.xml").is_file()
    for launch in (ROOT / "launch").glob("*.launch.py"):
        assert (share / "bgprompt_ros/launch" / launch.name).is_file()
    for cfg in (ROOT / "config").glob("*"):
        assert (share / "bgprompt_ros/config" / cfg.name).is_file()
    exe = tmp_path / "install/bgprompt_ros/lib/bgprompt_ros/bgprompt"
    assert exe.is_file() and os.access(exe, os.X_OK)
    site = next((tmp_path / "install/bgprompt_ros/lib").glob("python3*/site-packages"))
    for pkg in ("bgprompt_core", "bgprompt_training"):
        assert (site / pkg / "__init__.py").is_file()
    # the installed script runs from the install space (PYTHONPATH as `source install/setup.bash` sets it)
    run_env = {**env, "PYTHONPATH": str(site)}
    out = subprocess.run([sys.executable, str(exe), "--help"], env=run_env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and "usage: bgprompt" in out.stdout, out.stderr


# --- rosdep keys: every key of package.xml resolves for Jazzy on Ubuntu 24.04 (noble) in rosdistro's lists ---------
ROSDEP = ROOT / "test" / "data" / "rosdep"
DEP_TAGS = ("depend", "build_depend", "buildtool_depend", "exec_depend", "test_depend", "build_export_depend")


def _rosdep(name: str):
    import yaml

    return yaml.safe_load((ROSDEP / name).read_text()) or {}


def resolve_rosdep_key(key: str, os_name: str = "ubuntu", codename: str = "noble") -> tuple[str, list[str]] | None:
    """What `rosdep resolve KEY --rosdistro jazzy --os ubuntu:noble` gives, from the committed copy:
    ('apt', packages) or ('pip', packages); None when no rule applies (rosdep: 'no rule for key')."""
    for repo in _rosdep("jazzy-distribution.yaml")["repositories"].values():
        if key in repo["release"]["packages"]:
            return "apt", [f"ros-jazzy-{key.replace('_', '-')}"]
    entry = {**_rosdep("base.yaml"), **_rosdep("python.yaml")}.get(key)
    rule = entry.get(os_name) if entry else None
    if isinstance(rule, dict) and not {"apt", "pip", "source"} & set(rule):  # by codename, '*' for the rest
        rule = rule[codename] if codename in rule else rule.get("*")
    if rule is None:
        return None
    if isinstance(rule, list):
        return "apt", rule
    installer = next(iter(rule))
    packages = rule[installer]["packages"] if isinstance(rule[installer], dict) else rule[installer]
    return installer, packages


def _package_keys() -> set[str]:
    root = ET.parse(ROOT / "package.xml").getroot()
    return {e.text.strip() for tag in DEP_TAGS for e in root.iter(tag)}


def test_every_package_xml_key_resolves_in_rosdistro_for_jazzy_on_noble():
    prov = _rosdep("provenance.yaml")
    assert len(prov["commit"]) == 40 and prov["source"] == "https://github.com/ros/rosdistro"
    keys = _package_keys()
    assert {"python3-scipy", "ament_index_python", "rcl_interfaces", "python3-onnxruntime-pip",
            "python3-rosbags-pip", "python3-yaml"} <= keys
    unresolved = sorted(k for k in keys if resolve_rosdep_key(k) is None)
    assert not unresolved, f"no rosdep rule for {unresolved} (rosdistro {prov['commit'][:10]})"
    assert resolve_rosdep_key("rcl_interfaces") == ("apt", ["ros-jazzy-rcl-interfaces"])
    assert resolve_rosdep_key("python3-onnxruntime-pip") == ("pip", ["onnxruntime"])
    assert resolve_rosdep_key("python3-opencv") == ("apt", ["python3-opencv"])


def test_the_resolver_refuses_what_rosdep_refuses():
    assert resolve_rosdep_key("python3-safetensors") is None  # no such key
    assert resolve_rosdep_key("python3-torch", codename="focal") is None  # `focal: null` in python.yaml
    assert resolve_rosdep_key("python3-torch") == ("apt", ["python3-torch"])


# what the robot runtime imports (bgprompt_ros, the launch files, bgprompt_core outside the torch modules) -> key
IMPORT_KEYS = {"rclpy": "rclpy", "rcl_interfaces": "rcl_interfaces", "lifecycle_msgs": "lifecycle_msgs",
               "sensor_msgs": "sensor_msgs", "std_msgs": "std_msgs", "geometry_msgs": "geometry_msgs",
               "diagnostic_msgs": "diagnostic_msgs", "visualization_msgs": "visualization_msgs",
               "builtin_interfaces": "rclpy",  # a dependency of rclpy
               "ament_index_python": "ament_index_python", "launch": "launch", "launch_ros": "launch_ros",
               "numpy": "python3-numpy", "cv2": "python3-opencv", "yaml": "python3-yaml", "scipy": "python3-scipy",
               "onnxruntime": "python3-onnxruntime-pip", "rosbags": "python3-rosbags-pip"}
# runtime imports with no rosdep key at all: pip-installed (robot extra; docs/DEPLOYMENT.md's pip step)
NO_KEY = {"onnx"}
# imported only by the torch route (loading, exporting, training) or by optional features, never the robot default:
# installed with pip on a dev machine (requirements/), named in package.xml's comment
DEV_ONLY = {"torch", "transformers", "safetensors", "tqdm", "rembg", "PIL", "tensorrt", "cuda", "matplotlib",
            "pointcloud2"}


def test_package_xml_declares_a_key_for_every_runtime_import():
    first_party = {"bgprompt_core", "bgprompt_ros", "bgprompt_training"}
    imports = _imports(ROOT / "bgprompt_ros") | _imports(ROOT / "bgprompt_core") | _imports(ROOT / "launch")
    third = imports - set(sys.stdlib_module_names) - first_party - {"__future__"}
    unknown = sorted(third - set(IMPORT_KEYS) - DEV_ONLY - NO_KEY)
    assert not unknown, f"imports without a rosdep key decision: {unknown} (add the key to package.xml)"
    missing = sorted({IMPORT_KEYS[m] for m in third & set(IMPORT_KEYS)} - _package_keys())
    assert not missing, f"package.xml lacks {missing}"


def test_package_xml_says_truly_which_dependencies_have_no_key():
    comment = " ".join(c.text for c in ET.parse(ROOT / "package.xml",
                                                ET.XMLParser(target=ET.TreeBuilder(insert_comments=True))).iter()
                       if c.tag is ET.Comment and "Not declared" in (c.text or ""))
    # what it says has a key does, what it says has none has none (searched in every rosdep entry)
    assert "python3-torch" in comment and resolve_rosdep_key("python3-torch") == ("apt", ["python3-torch"])
    assert "python3-transformers-pip" in comment and resolve_rosdep_key("python3-transformers-pip") == \
        ("pip", ["transformers"])
    no_key = set(_rosdep("provenance.yaml")["pip_packages_without_any_key"])
    assert {"safetensors", "onnx"} <= no_key and "onnx (reads" in comment and "and safetensors (prompt" in comment
    assert "have no key" in comment
    assert not {"torch", "transformers", "onnxruntime", "rosbags", "scipy", "numpy", "pyyaml"} & no_key
    # every runtime import either has its key declared (test above) or is one of these named pip-only packages
    assert NO_KEY <= no_key


# --- launch files: generate_launch_description() run against a stand-in of launch / launch_ros (test/launch_standin)
PROFILE_VARS = ("FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE")


def _fake_package(prefix: Path, name: str, executables: dict[str, Path] = {}, share: dict[str, Path] = {}) -> None:
    """An install prefix holding ``name`` as colcon lays it out (ament index marker, lib/<name>/, share/<name>/)."""
    index = prefix / "share/ament_index/resource_index/packages"
    index.mkdir(parents=True, exist_ok=True)
    (index / name).write_text("")
    (prefix / "lib" / name).mkdir(parents=True, exist_ok=True)
    (prefix / "share" / name).mkdir(parents=True, exist_ok=True)
    for exe, target in executables.items():
        (prefix / "lib" / name / exe).symlink_to(target)
    for sub, target in share.items():
        (prefix / "share" / name / sub).symlink_to(target)


@pytest.fixture
def ament_prefix(tmp_path, monkeypatch):
    prefix = tmp_path / "install"
    _fake_package(prefix, "bgprompt_ros", {"object_depth_node": Path(sys.executable).parent / "object_depth_node"},
                  {"launch": ROOT / "launch", "config": ROOT / "config"})
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(prefix))
    for var in PROFILE_VARS:
        monkeypatch.delenv(var, raising=False)
    return prefix


def _launch(prefix: Path, name: str, **arguments):
    from launch_standin.run import launch_commands

    return launch_commands(prefix / "share/bgprompt_ros/launch" / name, arguments)


def _arg(cmd: list[str], flag: str) -> list[str]:
    return [cmd[i + 1] for i, a in enumerate(cmd[:-1]) if a == flag]


def test_object_depth_launch_starts_the_node_with_the_conventional_names(ament_prefix):
    (node,) = _launch(ament_prefix, "object_depth.launch.py")
    share = ament_prefix / "share/bgprompt_ros"
    assert node.cmd[0] == str(ament_prefix / "lib/bgprompt_ros/object_depth_node") and node.name == "object_depth"
    assert node.cmd[1:4] == ["--ros-args", "--log-level", "info"]
    assert node.param_files == [str(share / "config/object_depth.yaml")]
    assert node.params == {"autostart": True, "use_sim_time": False}  # YAML-typed, as launch_ros writes them
    outputs = {"object_depth/image", "object_depth/camera_info", "object_depth", "object_points", "object_markers",
               "composite"}
    assert {k: v for k, v in node.remaps.items()} == {t: t for t in outputs | {"image", "camera_info", "mask",
                                                                               "sensor_depth"}}
    # image_transport's sibling rule: the info topic is the image topic's namespace + camera_info
    assert node.remaps["object_depth/image"].rsplit("/", 1)[0] + "/camera_info" == "object_depth/camera_info"
    profile = share / "config/fastdds_large_messages.xml"
    assert node.env == {var: str(profile) for var in PROFILE_VARS} and profile.is_file()
    node_src = (ROOT / "bgprompt_ros" / "node.py").read_text()
    assert all(f'"{topic}"' in node_src for topic in node.remaps), "a remap names a topic the node does not use"


def test_object_depth_launch_arguments_reach_the_node(ament_prefix, monkeypatch):
    (node,) = _launch(ament_prefix, "object_depth.launch.py", namespace="robot1", use_sim_time="true",
                      log_level="debug", image="/cam/color/image_raw", depth="/objects/depth/image",
                      depth_camera_info="/objects/depth/camera_info", points="/objects/points", autostart="false")
    assert node.namespace == "/robot1" and ["-r", "__ns:=/robot1"] == node.cmd[node.cmd.index("__ns:=/robot1") - 1:][:2]
    assert node.cmd[1:4] == ["--ros-args", "--log-level", "debug"]
    assert node.params == {"autostart": False, "use_sim_time": True}
    assert node.remaps["image"] == "/cam/color/image_raw" and node.remaps["object_points"] == "/objects/points"
    assert node.remaps["object_depth/image"] == "/objects/depth/image"
    assert node.remaps["object_depth/camera_info"] == "/objects/depth/camera_info"
    with pytest.raises(ValueError, match="log_level"):
        _launch(ament_prefix, "object_depth.launch.py", log_level="loud")
    # a profile the user has set is left alone (Jazzy's or Kilted's variable)
    for var in PROFILE_VARS:
        monkeypatch.setenv(var, "/etc/my_profile.xml")
        assert _launch(ament_prefix, "object_depth.launch.py")[0].env == {}
        monkeypatch.delenv(var)


def test_realsense_launch_example_feeds_the_camera_topics(ament_prefix, tmp_path):
    (node,) = _launch(ament_prefix, "realsense.launch.py", mask="/seg/mask")
    assert node.remaps["image"] == "/camera/camera/color/image_raw"
    assert node.remaps["camera_info"] == "/camera/camera/color/camera_info"
    assert node.remaps["sensor_depth"] == "/camera/camera/aligned_depth_to_color/image_raw"
    assert node.remaps["mask"] == "/seg/mask"
    assert node.param_files == [str(ament_prefix / "share/bgprompt_ros/config/realsense.yaml")]
    from bgprompt_ros.params import read_params_file

    assert read_params_file(ROOT / "config" / "realsense.yaml")["scale"] == "align-to-sensor"
    # start_camera:=true includes realsense2_camera's rs_launch.py with aligned depth on
    rs = tmp_path / "rs"
    (rs / "launch").mkdir(parents=True)
    (rs / "launch" / "rs_launch.py").write_text(
        "from launch import LaunchDescription\nfrom launch.actions import DeclareLaunchArgument\n"
        "from launch.substitutions import LaunchConfiguration\nfrom launch_ros.actions import Node\n"
        "def generate_launch_description():\n"
        "    return LaunchDescription([DeclareLaunchArgument('align_depth.enable', default_value='false'),\n"
        "        Node(package='realsense2_camera', executable='realsense2_camera_node', name='camera',\n"
        "             parameters=[{'align_depth.enable': LaunchConfiguration('align_depth.enable')}])])\n")
    _fake_package(ament_prefix, "realsense2_camera", {"realsense2_camera_node": Path("/bin/true")},
                  {"launch": rs / "launch"})
    camera, node = _launch(ament_prefix, "realsense.launch.py", start_camera="true")
    assert camera.name == "camera" and camera.params == {"align_depth.enable": True}
    assert node.remaps["sensor_depth"] == "/camera/camera/aligned_depth_to_color/image_raw"


def test_nav2_lifecycle_example_hands_the_node_to_the_manager_without_bonds(ament_prefix):
    _fake_package(ament_prefix, "nav2_lifecycle_manager", {"lifecycle_manager": Path("/bin/true")})
    node, manager = _launch(ament_prefix, "nav2_lifecycle.launch.py", namespace="robot1")
    assert node.params["autostart"] is False and node.namespace == manager.namespace == "/robot1"
    assert manager.params == {"node_names": [node.name], "autostart": True, "bond_timeout": 0.0,
                              "use_sim_time": False}


def test_the_stand_in_refuses_what_launch_ros_refuses(ament_prefix):
    from launch_standin.run import HERE

    sys.path.insert(0, str(HERE))
    from launch_ros.actions import Node

    with pytest.raises(TypeError, match="unexpected keyword"):
        Node(executable="x", remaps=[])  # a misspelt argument
    with pytest.raises(LookupError, match="package 'nope' not found"):
        from launch_standin.run import _node
        from launch import LaunchContext

        _node(Node(package="nope", executable="x", name="n"), LaunchContext())
    # launch_ros' parameter typing: plain lists stay arrays, substitutions become one YAML-read string
    from launch.substitutions import LaunchConfiguration
    from launch_standin.run import _param_value

    context = LaunchContext()
    context.launch_configurations.update(n="object_depth", t="true")
    assert _param_value(["object_depth"], context) == ["object_depth"]
    assert _param_value([LaunchConfiguration("n")], context) == "object_depth"
    assert _param_value(LaunchConfiguration("t"), context) is True and _param_value(0.0, context) == 0.0
