# bgprompt: every target bootstraps its own venv (.venv) with the pinned dependencies of requirements/.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Safety rule: rclpy processes keep DDS on loopback. tools/loopback-run sets the env var below and, where
# `unshare -n` is allowed (CI, development machines, with or without ../shared), a loopback-only namespace.
NETNS  := tools/loopback-run
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export HF_HUB_OFFLINE := 1

.PHONY: venv lock wheelhouse test demo bench results prompts mini graphs grasp resolution clean help

help:
	@echo "make demo   - run the main job on the embedded default, outputs in demo/"
	@echo "make test   - run the whole test suite (unit, ROS process-level, colcon build)"
	@echo "make bench  - throughput / overhead figures, printed as ratios (one run)"
	@echo "make results - regenerate docs/RESULTS.md from the shipped model and prompts"
	@echo "make prompts - retrain the shipped prompts of mini (and the finetune baseline)"
	@echo "make mini   - retrain the embedded depth network (under an hour on 2 cores)"
	@echo "make graphs - re-export the shipped ONNX graphs (mini + 1-BG / tabletop 1-BG) the torch-free node runs"
	@echo "make resolution - object depth at full resolution, before / after (docs/RESOLUTION.md)"
	@echo "make grasp  - object clouds in metres from a simulated RGB-D sensor, by material (docs/grasp/)"
	@echo "make venv   - only build .venv (from the hashed lock requirements/lock.txt)"
	@echo "make lock   - regenerate requirements/lock.txt from requirements/*.txt (pip-compile, hashes)"

# The venv is built from requirements/lock.txt: every package at one version, with its hashes (pip refuses any
# other file), then the project itself without dependencies. requirements/*.txt stay the declared source (setup.py
# reads them as extras); `make lock` regenerates the lock from them. torch resolves to the 2.13.0 CPU build: on
# these machines pip finds it on local disk (pip.conf's find-links), and the lock's hash admits that file only.
LOCK       := requirements/lock.txt
DECLARED   := $(filter-out $(LOCK),$(wildcard requirements/*.txt))
LOCK_TOOLS := .cache/lock-tools
PIP_TOOLS  := pip-tools==7.6.2

# pip first, pinned and hashed: the pip that `python3 -m venv` bundles (23.2) refuses a hashed lock as soon as a
# locked package asks for another with an extra (pytest-cov -> coverage[toml]: "all requirements must have their
# versions pinned") whenever the index holds a newer release than the lock's; pip >= 23.3 resolves the extra
# against the locked pin.
PIP_PIN    := pip==26.2.1 --hash=sha256:71138adf1f4ca900cdb7d289c21b7494329f2332b6d85f0e1c42108c0384ed3e

$(STAMP): setup.py setup.cfg $(wildcard requirements/*.txt)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	echo "$(PIP_PIN)" > $(VENV)/pip-pin.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --require-hashes -r $(VENV)/pip-pin.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --require-hashes -r $(LOCK)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

venv: $(STAMP)

# Regenerate the lock from requirements/*.txt (keeps the pins that still fit; minutes: it resolves ~200 packages).
# pip-compile runs in its own venv, so the project's venv holds only what the lock names.
lock:
	test -x $(LOCK_TOOLS)/bin/pip-compile || ($(PYTHON) -m venv $(LOCK_TOOLS) && \
		$(LOCK_TOOLS)/bin/pip install --quiet --disable-pip-version-check $(PIP_TOOLS))
	CUSTOM_COMPILE_COMMAND="make lock" $(LOCK_TOOLS)/bin/pip-compile --quiet --generate-hashes --allow-unsafe \
		--strip-extras --no-emit-index-url --no-emit-find-links --output-file $(LOCK) $(DECLARED)

# wheels for the install tests (fresh venvs without torch, an apt-like ROS prefix), downloaded once into
# ~/.cache/bgprompt/wheelhouse outside the tests' network namespace (~3 min the first time on a machine, then a
# no-op). Offline, the rest of the suite still runs; the install tests then fail naming this step.
wheelhouse: $(STAMP)
	-$(PY) test/install_envs.py

test: $(STAMP) wheelhouse
	$(NETNS) $(PY) -m pytest -q

demo: $(STAMP)
	$(NETNS) $(VENV)/bin/bgprompt demo --out demo

results: $(STAMP)
	$(VENV)/bin/bgprompt results --out docs/RESULTS.md --cache .cache/results

# Regenerating the shipped weights (minutes to an hour on 2 cores); outputs land in the package.
DATA ?= .cache/data
mini: $(STAMP)
	$(VENV)/bin/bgprompt render scenes --out $(DATA)/scenes_train --count 6000 --size 128 --seed 1000 --closeup 0.5 --workers 2
	$(VENV)/bin/bgprompt render scenes --out $(DATA)/scenes_val --count 300 --size 128 --seed 2000 --closeup 0.5 --workers 2
	$(VENV)/bin/bgprompt pretrain --data $(DATA)/scenes_train --val $(DATA)/scenes_val --out bgprompt_core/models/mini
	$(MAKE) graphs

prompts: $(STAMP)
	$(VENV)/bin/bgprompt render objects --out $(DATA)/objects_train --count 2000 --size 128 --seed 100 --families primitive superquadric lathe
	$(VENV)/bin/bgprompt render objects --out $(DATA)/objects_val --count 300 --size 128 --seed 200 --families primitive superquadric lathe
	# PNet (a U-Net) overfits 2000 objects; it learns from 6000 (the first 2000 are the same renders)
	$(VENV)/bin/bgprompt render objects --out $(DATA)/objects_train_6k --count 6000 --size 128 --seed 100 --families primitive superquadric lathe
	$(VENV)/bin/bgprompt train --model mini --data $(DATA)/objects_train --val $(DATA)/objects_val --out bgprompt_core/prompts/mini-1bg.safetensors --steps 2000 --val-every 250 --val-samples 100 --optimizer adam --lr 0.02 --local-only
	$(VENV)/bin/bgprompt train --model mini --data $(DATA)/objects_train_6k --val $(DATA)/objects_val --out bgprompt_core/prompts/mini-pnet.safetensors --prompt pnet --pnet-channels 16 --pnet-combine residual --init-bias bgprompt_core/prompts/mini-1bg.safetensors --steps 3000 --val-every 250 --val-samples 300 --optimizer adam --lr 0.001 --local-only
	$(VENV)/bin/bgprompt train --model mini --data $(DATA)/objects_train --val $(DATA)/objects_val --out training/checkpoints/mini-finetune --prompt finetune --steps 1000 --val-every 250 --val-samples 100 --optimizer adam --lr 0.0001 --local-only
	# the tabletop 1-BG: objects on tables as a robot sees them, re-centred by their masks (as the node's recenter: true)
	$(VENV)/bin/bgprompt render tabletop --out $(DATA)/tabletop_train --count 2000 --size 256 --seed 300 --families primitive superquadric lathe --workers 2
	$(VENV)/bin/bgprompt render tabletop --out $(DATA)/tabletop_val --count 200 --size 256 --seed 400 --families primitive superquadric lathe
	$(VENV)/bin/bgprompt train --model mini --data $(DATA)/tabletop_train --val $(DATA)/tabletop_val --out bgprompt_core/prompts/mini-tabletop-1bg.safetensors --recenter --steps 2000 --val-every 250 --val-samples 100 --optimizer adam --lr 0.02 --local-only
	$(MAKE) graphs

# The exported graphs shipped for the torch-free robot default (runtime.SHIPPED_GRAPHS), each with a digest
# file naming the graph and the weights it came from (the loader refuses a stale graph). Run after `make mini` or
# `make prompts` (they call it), or after a change to the export; test_package checks graph against code.
GRAPHS := bgprompt_core/graphs
GRAPH_KINDS := 1bg:mini-1bg tabletop:mini-tabletop-1bg
graphs: $(STAMP)
	mkdir -p $(GRAPHS)
	set -e; for kp in $(GRAPH_KINDS); do kind=$${kp%%:*}; prompt=$${kp#*:}; \
	  $(VENV)/bin/bgprompt export --model mini --prompt $$kind --precision fp32 --opset 17 --max-batch 16 \
	    --out $(GRAPHS)/mini-$$kind.onnx; \
	  (cd bgprompt_core && sha256sum graphs/mini-$$kind.onnx models/mini/config.json models/mini/preprocessor_config.json \
	    models/mini/model.safetensors \
	    prompts/$$prompt.safetensors > graphs/mini-$$kind.onnx.sha256); done

# Object clouds in metres (docs/grasp/): held-out tabletop frames (seeds 500 and 800, no prompt trained on them),
# procedural shapes and real household meshes (fetched from the package index, never committed), every sensor
# preset, fusion with the settings of config/object_depth_rgbd.yaml (what ships is what is measured). Design
# decisions were taken on dev frames (seeds 600 and 700), never on these.
HOUSEHOLD ?= $(DATA)/household
GRASP_FRAMES ?= 100
grasp: $(STAMP)
	test -f $(HOUSEHOLD)/milk/milk.obj || $(VENV)/bin/bgprompt assets household --out $(HOUSEHOLD)
	test -f $(DATA)/grasp_procedural/manifest.json || $(VENV)/bin/bgprompt render tabletop --out $(DATA)/grasp_procedural --count $(GRASP_FRAMES) --size 320 --seed 500 --families primitive superquadric lathe
	test -f $(DATA)/grasp_meshes/manifest.json || $(VENV)/bin/bgprompt render tabletop --out $(DATA)/grasp_meshes --count $(GRASP_FRAMES) --size 320 --seed 800 --meshes $(HOUSEHOLD) --mesh-up z
	$(VENV)/bin/bgprompt eval-grasp --data $(DATA)/grasp_procedural $(DATA)/grasp_meshes --params config/object_depth_rgbd.yaml --prompt none 1bg pnet tabletop --out docs/grasp --figures 2

# Depth at full resolution (issue 29): joint bilateral vs bilinear upsampling on 480 px tabletop and 512 px
# real-mesh renders (rendered into .cache/resolution on first use), docs/RESOLUTION.md + .png + .json
resolution: $(STAMP)
	$(VENV)/bin/bgprompt eval-resolution --out docs/RESOLUTION.md --cache .cache/resolution

bench: $(STAMP) wheelhouse
	$(NETNS) $(PY) test/bench/bench.py

clean:
	rm -rf $(VENV) demo build install log .pytest_cache .cache
