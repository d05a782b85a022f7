"""The onnxruntime backend: ``run(image, mask) -> depth`` on batches (numpy float32), no torch.

Every backend has this one method: image (N, 3, S, S) float32 in [0, 1], mask (N, 1, S, S) float32 ->
depth (N, S, S) float32. The others: ``torch_backend.TorchBackend`` (the PromptedDepth module) and
``tensorrt_backend.TensorRTBackend`` (a native engine built from the same exported graph). The exported graph
carries the prompt, the network's normalization and Eq. 2, so this module and its callers need only numpy.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from bgprompt_core.runtime.graph_contract import INPUTS, METADATA_KEY, OUTPUT, GraphError, check_graph_inputs, parse_metadata

log = logging.getLogger("bgprompt.backend")
PROVIDER_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(self, onnx_path: str | Path, providers: list[str] | None = None):
        import onnxruntime as ort

        path = Path(onnx_path)
        if not path.is_file():
            raise FileNotFoundError(f"ONNX model not found: {path} (create it with `bgprompt export`)")
        available = ort.get_available_providers()
        chosen = [p for p in (providers or PROVIDER_ORDER) if p in available] or ["CPUExecutionProvider"]
        options = ort.SessionOptions()
        # onnxruntime's intra-op threads spin for work after each run by default: they held a core the node's own
        # postprocessing, message building and DDS needed on a 2-core machine (estimate() 12.2 -> 9.7 ms with
        # spinning off, make bench's node latency; issue 29)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(path), options, providers=chosen)
        except Exception as exc:  # onnxruntime's InvalidProtobuf / Fail / InvalidGraph: a truncated or foreign file
            raise GraphError(f"{path}: onnxruntime cannot load this graph ({type(exc).__name__}: "
                             f"{str(exc).strip()[:300]}); re-export it with `bgprompt export`") from exc
        self.providers = self.session.get_providers()
        log.info("onnxruntime providers: %s", self.providers)
        names = {i.name for i in self.session.get_inputs()}, {o.name for o in self.session.get_outputs()}
        if names != (set(INPUTS), {OUTPUT}):
            raise GraphError(f"{path}: inputs {sorted(names[0])} / outputs {sorted(names[1])}; a bgprompt graph has "
                             f"inputs {list(INPUTS)} and output {OUTPUT!r} (export it with `bgprompt export`)")
        self._metadata = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        self.path = path

    @property
    def metadata(self) -> dict:
        """The graph's bgprompt metadata (network spec, prompt, precision...), read by onnxruntime itself and
        checked against the graph's input shapes."""
        meta = parse_metadata(self._metadata, self.path)
        check_graph_inputs(meta, {i.name: list(i.shape) for i in self.session.get_inputs()}, self.path)
        return meta

    def run(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return self.session.run([OUTPUT], {INPUTS[0]: np.ascontiguousarray(image, np.float32),
                                           INPUTS[1]: np.ascontiguousarray(mask, np.float32)})[0]
