# bgprompt: every target bootstraps its own venv (.venv) with the pinned dependencies of requirements/.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Safety rule: rclpy processes keep DDS on loopback. Tests also run in a loopback-only network namespace
# when the shared netns-run tool is there (CI, developer machines); the env var applies everywhere.
NETNS  := $(firstword $(wildcard ../shared/tools/netns-run))
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export HF_HUB_OFFLINE := 1

.PHONY: venv test demo bench results prompts mini clean help

help:
	@echo "make demo   - run the main job on the embedded default, outputs in demo/"
	@echo "make test   - run the whole test suite (unit, ROS process-level, colcon build)"
	@echo "make bench  - throughput / overhead figures, printed as ratios (one run)"
	@echo "make results - regenerate docs/RESULTS.md from the shipped model and prompts"
	@echo "make prompts - retrain the shipped prompts of mini (and the finetune baseline)"
	@echo "make mini   - retrain the embedded depth network (under an hour on 2 cores)"
	@echo "make venv   - only build .venv"

$(STAMP): setup.py setup.cfg $(wildcard requirements/*.txt)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[all]'
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	BGPROMPT_NETNS=$(if $(NETNS),1,0) $(NETNS) $(PY) -m pytest -q

demo: $(STAMP)
	$(NETNS) $(VENV)/bin/bgprompt demo --out demo

bench: $(STAMP)
	$(NETNS) $(PY) test/bench/bench.py

clean:
	rm -rf $(VENV) demo build install log .pytest_cache
