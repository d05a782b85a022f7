"""What ships is what docs/grasp measures: config/object_depth_rgbd.yaml, the node's fusion_* parameters and the
evaluation read the same values, and every fusion value is validated."""
from pathlib import Path

import numpy as np
import pytest

from bgprompt_core.rgbd.fusion import FUSION_FIELDS, FusionConfig
from bgprompt_ros.params import PARAMETERS, estimator_config_from_params, invalid, read_params_file
from bgprompt_training.grasp import DEFAULT_PARAMS, GraspEvalConfig

ROOT = Path(__file__).resolve().parents[1]
RGBD = ROOT / "config" / "object_depth_rgbd.yaml"


def test_the_rgbd_params_file_is_what_eval_grasp_measures():
    assert DEFAULT_PARAMS == RGBD
    node = estimator_config_from_params(read_params_file(RGBD))  # the node's path: params file -> estimator
    measured = GraspEvalConfig.from_params_file(RGBD)  # eval-grasp's path
    assert node.scale == "align-to-sensor" and node.fusion == "fill"
    assert (node.prompt, node.align, node.recenter) == (measured.goal_prompt, measured.align, measured.recenter)
    assert node.fusion_config == measured.fusion
    # and the declared defaults are those values: a user who only turns fusion on runs what was measured
    assert measured.fusion == FusionConfig() and node.align == PARAMETERS["align"][0] == "scale-shift"


def test_every_fusion_field_is_a_node_parameter_and_reaches_the_estimator():
    assert {f"fusion_{n}" for n in FUSION_FIELDS} <= set(PARAMETERS)
    params = {"scale": "align-to-sensor", "fusion": "fill", "fusion_noise_floor": 0.0015, "fusion_noise_linear": 0.001,
              "fusion_noise_quadratic": 0.0, "fusion_hole_fill": "prediction", "fusion_min_agreement": 0.7}
    cfg = estimator_config_from_params(params).fusion_config
    assert (cfg.noise_floor, cfg.noise_linear, cfg.noise_quadratic, cfg.hole_fill, cfg.min_agreement) == \
        (0.0015, 0.001, 0.0, "prediction", 0.7)
    assert cfg.noise.sigma(2.0) == pytest.approx(0.0035)
    from bgprompt_core.frame.estimator import ObjectDepthEstimator

    class Spec:
        input_size, output_kind, name = (32, 32), "relative_depth", "fake"

    est = ObjectDepthEstimator(estimator_config_from_params(params), backend=object(), spec=Spec(), model=None)
    assert est.fusion_cfg is cfg or est.fusion_cfg == cfg


@pytest.mark.parametrize("name,value", [("fusion_hole_fill", "inpaint"), ("fusion_min_agreement", 1.5),
                                        ("fusion_noise_floor", -0.001), ("fusion_consistency", 0.0),
                                        ("fusion_ring", 0), ("fusion_noise_linear", float("nan"))])
def test_bad_fusion_values_are_refused_with_a_reason(name, value):
    reason = invalid(name, value)
    assert reason and name in reason


def test_a_params_file_with_a_bad_fusion_value_is_a_clear_error(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text(RGBD.read_text().replace("fusion_min_agreement: 0.5", "fusion_min_agreement: 2.0"))
    with pytest.raises(ValueError, match="fusion_min_agreement"):
        read_params_file(bad)
    assert np.isfinite(FusionConfig().noise.sigma(1.0))


def test_eval_grasp_fuses_with_each_presets_noise_or_with_the_params_files():
    from bgprompt_core.evaluation.sensor_model import PRESETS
    from bgprompt_core.method.config import ConfigError
    from bgprompt_training.grasp import _Methods

    tof = PRESETS["tof-like"]
    for mode, want in (("preset", tof.noise), ("params", FusionConfig().noise)):
        methods = _Methods.__new__(_Methods)  # the estimators are not needed to choose fusion's settings
        methods.cfg = GraspEvalConfig.from_params_file(RGBD, fusion_noise=mode)
        got = methods.fusion_for(tof)
        assert (got.noise_floor, got.noise_linear, got.noise_quadratic) == (want.floor, want.linear, want.quadratic)
        assert got.consistency == methods.cfg.fusion.consistency  # nothing else changes
    assert tof.noise != FusionConfig().noise  # the two modes differ on this preset
    with pytest.raises(ConfigError, match="fusion_noise"):
        GraspEvalConfig(fusion_noise="camera")
