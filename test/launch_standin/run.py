"""Run a launch file against the stand-in as `ros2 launch PKG FILE k:=v ...` would, up to the processes:
``launch_commands`` returns the command line and environment of every Node it would start."""
from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent


@dataclass
class NodeCommand:
    cmd: list[str]
    env: dict[str, str]
    name: str
    namespace: str
    param_files: list[str] = field(default_factory=list)
    params: dict = field(default_factory=dict)  # the dict parameters, as the node reads them from their file
    remaps: dict[str, str] = field(default_factory=dict)


def _load(path: str):
    spec = importlib.util.spec_from_file_location(f"launch_file_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.generate_launch_description()


def _executable(package: str, executable: str) -> str:
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix and (Path(prefix) / "share/ament_index/resource_index/packages" / package).is_file():
            exe = Path(prefix) / "lib" / package / executable
            if not exe.is_file():
                raise FileNotFoundError(f"executable '{executable}' not found on the libexec path of {package}")
            return str(exe)
    raise LookupError(f"package '{package}' not found")  # PackageNotFoundError


def _param_value(value, context):
    """launch_ros' rule (normalize_parameters): a substitution, or a list holding substitutions (and text), is one
    string read as YAML; a list of plain values stays a list (a string array for str items)."""
    import yaml
    from launch.substitutions import Substitution, perform

    if isinstance(value, Substitution) or (isinstance(value, (list, tuple)) and any(
            isinstance(v, Substitution) for v in value) and all(isinstance(v, (str, Substitution)) for v in value)):
        return yaml.safe_load(perform(value, context))
    return list(value) if isinstance(value, tuple) else value


def _node(node, context) -> NodeCommand:
    import yaml
    from launch.substitutions import perform

    cmd = [_executable(perform(node.package, context), perform(node.executable, context))]
    cmd += [perform(a, context) for a in node.arguments]
    if node.ros_arguments:
        cmd += ["--ros-args"] + [perform(a, context) for a in node.ros_arguments]
    cmd += ["--ros-args"]
    name = perform(node.name, context).lstrip("/")
    ns = perform(node.namespace, context) if node.namespace is not None else ""
    ns = "/" + ns.strip("/") if ns.strip("/") else ""
    out = NodeCommand(cmd=cmd, env={}, name=name, namespace=ns or "/")
    cmd += ["-r", f"__node:={name}"] + (["-r", f"__ns:={ns}"] if ns else [])
    for params in node.parameters:
        if isinstance(params, dict):
            values = {perform(k, context): _param_value(v, context) for k, v in params.items()}
            with tempfile.NamedTemporaryFile("w", prefix="launch_params_", suffix=".yaml", delete=False) as f:
                yaml.dump({"/**": {"ros__parameters": values}}, f, default_flow_style=False)
            out.params.update(values)
            path = f.name
        else:
            path = os.path.abspath(perform(params, context))
            assert os.path.isfile(path), f"parameter file {path} does not exist"
            out.param_files.append(path)
        cmd += ["--params-file", path]
    for src, dst in node.remappings:
        src, dst = perform(src, context), perform(dst, context)
        out.remaps[src] = dst
        cmd += ["-r", f"{src}:={dst}"]
    out.env = {perform(k, context): perform(v, context) for k, v in node.kwargs.get("additional_env", {}).items()}
    return out


def _process(entities, context, out: list) -> None:
    from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
    from launch.substitutions import perform
    from launch_ros.actions import Node

    for entity in entities:
        if getattr(entity, "condition", None) is not None and not entity.condition.evaluate(context):
            continue
        if isinstance(entity, DeclareLaunchArgument):
            if entity.name not in context.launch_configurations:
                if entity.default_value is None:
                    raise RuntimeError(f"missing required argument '{entity.name}'")
                context.launch_configurations[entity.name] = perform(entity.default_value, context)
            value = context.launch_configurations[entity.name]
            if entity.choices is not None and value not in entity.choices:
                raise ValueError(f"Argument '{entity.name}' provided value '{value}' is not valid. Valid options "
                                 f"are: {entity.choices}")
        elif isinstance(entity, IncludeLaunchDescription):
            path = perform(entity.launch_description_source.launch_file_path, context)
            for key, value in entity.launch_arguments:
                context.launch_configurations[perform(key, context)] = perform(value, context)
            _process(_load(path).entities, context, out)
        elif isinstance(entity, Node):
            out.append(_node(entity, context))
        else:
            raise TypeError(f"the stand-in does not implement {type(entity).__name__}")


def launch_commands(launch_file: str | Path, arguments: dict[str, str] | None = None) -> list[NodeCommand]:
    """The Nodes `ros2 launch <launch_file> k:=v...` starts (AMENT_PREFIX_PATH must hold the package)."""
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    from launch import LaunchContext

    context = LaunchContext()
    context.launch_configurations.update(arguments or {})
    out: list[NodeCommand] = []
    _process(_load(str(launch_file)).entities, context, out)
    return out
