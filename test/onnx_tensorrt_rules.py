"""The real ONNX parsers' rules, applied to a graph without TensorRT (data: data/tensorrt_onnx_rules.json).

Every rule comes from onnx-tensorrt's own source of that release (tools/tensorrt-rules extracts them and checks
that the cited lines say it): the Supported and Restrictions columns of docs/operators.md, and importer rules
(training-mode BatchNormalization, more node outputs than the importer returns, Shape start/end and Reduce axes
that 8.6 ignores). ``check`` returns what the parser refuses and what it silently imports differently;
``as_imported`` rewrites a graph the way the parser would read it (8.6 drops Shape's start/end and Reduce's axes
input), so onnxruntime shows what the engine would compute. Nothing here is a rule we made up: a graph that breaks
no rule may still fail at build time on something only a real TensorRT knows (shapes, values).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

RULES = json.loads((Path(__file__).parent / "data" / "tensorrt_onnx_rules.json").read_text())
PARSER_FOR = {"8.6": "8.6", "10": "10", "11": "10"}  # 10.1-GA's parser rules stand for 10.x and 11 (see the JSON)
ONNXRUNTIME_CUDA = {  # microsoft/onnxruntime#16867: onnxruntime/core/providers/cuda/nn/batch_norm.h:43
    "source": "microsoft/onnxruntime onnxruntime/core/providers/cuda/nn/batch_norm.h:43 (issue #16867)",
    "desc": "!(is_training_mode_ && opset >= 14) was false. Training mode does not support BN opset 14 (or higher) "
            "yet."}


@dataclass(frozen=True)
class Finding:
    rule: str
    kind: str  # "refuse": the parser returns false; "ignore": the parser imports the node differently
    node: int
    name: str
    op: str
    code: str
    func: str
    desc: str
    source: str

    def error_text(self, version: tuple[int, int]) -> str:
        """``str(parser.get_error(i))`` as the real bindings format it (python/src/parsers/pyOnnx.cpp)."""
        if version[0] < 10:  # 8.6: pyOnnx.cpp:51-53
            return f"In node {self.node} ({self.func}): {self.code}: {self.desc}"
        return (f"In node {self.node} with name: {self.name} and operator: {self.op} ({self.func}): {self.code}: "
                f"{self.desc}")  # 10.x: pyOnnx.cpp:165-176 (release/10.13)


def parser_key(version: str | tuple[int, int]) -> str:
    major = int(version.split(".")[0]) if isinstance(version, str) else version[0]
    return PARSER_FOR["8.6" if major < 10 else str(min(major, 11))]


def _rules(key: str, kind: str | None = None):
    return [r for r in RULES["parsers"][key]["rules"] if kind is None or r["kind"] == kind]


def _ops(rule) -> list[str]:
    op = rule.get("op", [])
    return op if isinstance(op, list) else [op]


def _where(key: str, rule) -> str:
    p = RULES["parsers"][key]
    a, b = rule["source"]["lines"]
    return f"onnx/onnx-tensorrt {p['ref']} ({p['commit'][:12]}) {rule['source']['file']}:{a}-{b}"


def _weights(graph) -> set[str]:
    """Names the importer holds as weights: initializers and Constant outputs (constant_is_weights)."""
    names = {i.name for i in graph.initializer}
    names |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    return names


def _attr(node, name, default=None):
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _restriction_findings(key, i, node, weights, ranks) -> list[Finding]:
    row = RULES["parsers"][key]["operators"].get(node.op_type)
    if row is None or not row["checks"]:
        return []
    p = RULES["parsers"][key]
    src = f"onnx/onnx-tensorrt {p['ref']} ({p['commit'][:12]}) docs/operators.md:{row['line']}"
    out = []

    def bad(check: str, what: str) -> None:
        out.append(Finding(f"restriction:{check}", "refuse", i, node.name, node.op_type, "UNSUPPORTED_NODE",
                           f"import{node.op_type}", f"{node.op_type}: {row['restrictions']} ({what})", src))

    for check in row["checks"]:
        name, _, arg = check.partition(":")
        if name == "input_is_weights":
            index = {("axes", "Slice"): 3, ("axes", "Pad"): 3}.get((arg, node.op_type), 1)
            if len(node.input) > index and node.input[index] and node.input[index] not in weights:
                bad(check, f"input {index} {node.input[index]!r} is computed, not an initializer")
        elif name == "pool_2d_3d":
            kernel = _attr(node, "kernel_shape", [])
            if len(kernel) not in (2, 3):
                bad(check, f"kernel_shape {kernel}")
        elif name == "dilations_ones":
            if any(d != 1 for d in _attr(node, "dilations", [])):
                bad(check, f"dilations {_attr(node, 'dilations')}")
        elif name == "single_output":
            if len([o for o in node.output if o]) > 1:
                bad(check, f"{len(node.output)} outputs")
        elif name == "dropout_not_training":
            if len(node.input) > 2 and node.input[2] and node.input[2] not in weights:
                bad(check, "training_mode is computed")
        elif name == "constant_attributes":
            if any(a.name in ("sparse_value", "value_string", "value_strings") for a in node.attribute):
                bad(check, "string or sparse value")
        elif name == "attribute_absent":
            if _attr(node, arg) not in (None, "none", b"none"):
                bad(check, f"{arg}={_attr(node, arg)!r}")
        elif name == "attribute_value":
            for pair in arg.split(","):
                k, v = pair.split("=")
                if int(_attr(node, k, int(v)) or 0) != int(v):
                    bad(check, f"{k}={_attr(node, k)}")
        elif name == "rank4_input":
            if ranks.get(node.input[0], 4) != 4:
                bad(check, f"input rank {ranks.get(node.input[0])}")
        elif name == "einsum_no_ellipsis":
            if "..." in str(_attr(node, "equation", b"")):
                bad(check, "ellipsis in the equation")
        elif name == "resize_modes":
            # operators.md lists nearest and linear, but both importers also take cubic (resize_mode,
            # resize_mode_cubic rules): the mode is the importer's to refuse, not this column's
            ctm = _decode(_attr(node, "coordinate_transformation_mode", b"half_pixel"))
            if ctm not in ("half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"):
                bad(check, f"coordinate_transformation_mode {ctm}")
            if key == "10" and _attr(node, "antialias", 0):
                bad(check, "antialias")
            if key == "10" and _decode(_attr(node, "keep_aspect_ratio_policy", b"stretch")) != "stretch":
                bad(check, "keep_aspect_ratio_policy")
        elif name == "zero_point_zero":
            pass  # needs the zero point's values: our graphs hold no Q/DQ nodes (checked by the op list)
    return out


def _decode(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _ranks(model) -> dict[str, int]:
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - ranks are a refinement only
        return {}
    out = {}
    for v in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        if v.type.tensor_type.HasField("shape"):
            out[v.name] = len(v.type.tensor_type.shape.dim)
    return out


def check(model, version: str | tuple[int, int]) -> list[Finding]:
    """Every rule of ``version``'s parser that ``model`` (an onnx ModelProto) breaks, in node order."""
    key = parser_key(version)
    graph = model.graph
    operators = RULES["parsers"][key]["operators"]
    weights, ranks = _weights(graph), _ranks(model)
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    by_op: dict[str, list] = {}
    for r in _rules(key):
        for op in _ops(r):
            by_op.setdefault(op, []).append(r)
    outputs_of = {op: r["outputs"] for r in _rules(key, "outputs") for op in _ops(r)}
    multi = next(r for r in _rules(key) if r["id"] == "more_outputs_than_importer")
    plugin = next(r for r in _rules(key) if r["id"] == "fallback_plugin_not_found")
    found: list[Finding] = []

    def add(rule, i, node, desc=None):
        found.append(Finding(rule["id"], rule["kind"], i, node.name, node.op_type, rule.get("code", ""),
                             rule.get("func", f"import{node.op_type}"),
                             (desc or rule.get("desc", rule.get("why", ""))).replace("{name}", node.name),
                             _where(key, rule)))

    for i, node in enumerate(graph.node):
        row = operators.get(node.op_type)
        if node.domain not in ("", "ai.onnx") or row is None or not row["supported"]:
            add(plugin, i, node)
            continue
        for rule in by_op.get(node.op_type, []):
            if rule["id"] == "batchnorm_training_mode" and _attr(node, "training_mode", 0) == 1:
                add(rule, i, node)
            elif rule["kind"] == "ignore" and "attributes" in rule:
                if any(a.name in rule["attributes"] for a in node.attribute):
                    add(rule, i, node)
            elif rule["kind"] == "ignore" and "input" in rule:
                if len(node.input) > rule["input"] and node.input[rule["input"]]:
                    add(rule, i, node)
            elif rule.get("needs") == "weights":
                k = rule["input"]
                if len(node.input) > k and node.input[k] and node.input[k] not in weights:
                    add(rule, i, node)
            elif rule["id"].startswith("resize_") and "attribute" in rule:
                value = _decode(_attr(node, rule["attribute"], rule["default"].encode()))
                if value not in rule["allowed"]:
                    add(rule, i, node)
        n_out = len(node.output)  # the check counts every declared output (ModelImporter.cpp:222)
        if node.op_type in outputs_of and n_out > outputs_of[node.op_type]:
            add(multi, i, node, multi["desc"].format(expected=outputs_of[node.op_type], actual=n_out))
        found += _restriction_findings(key, i, node, weights, ranks)
    del opset
    return found


def refusals(model, version) -> list[Finding]:
    return [f for f in check(model, version) if f.kind == "refuse"]


def onnxruntime_cuda_refusals(model) -> list[str]:
    """What onnxruntime's CUDA provider refuses at session creation that its CPU provider runs (a GPU fallback)."""
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    return [f"{n.name}: {ONNXRUNTIME_CUDA['desc']} [{ONNXRUNTIME_CUDA['source']}]" for n in model.graph.node
            if n.op_type == "BatchNormalization" and _attr(n, "training_mode", 0) == 1 and opset >= 14]


def as_imported(model, version):
    """A copy of ``model`` that computes what ``version``'s parser imports (the "ignore" rules applied)."""
    import copy

    key = parser_key(version)
    out = copy.deepcopy(model)
    ignore = _rules(key, "ignore")
    for node in out.graph.node:
        for rule in ignore:
            if node.op_type not in _ops(rule):
                continue
            if "attributes" in rule:
                keep = [a for a in node.attribute if a.name not in rule["attributes"]]
                del node.attribute[:]
                node.attribute.extend(keep)
            if "input" in rule and len(node.input) > rule["input"]:
                del node.input[rule["input"]:]
    return out
