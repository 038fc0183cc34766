# Two commands for a fresh machine:
#   make demo   # set up (when needed) and run the main job
#   make test   # set up (when needed) and run the test suite
PY := .venv/bin/python

.PHONY: setup demo test test-fast

setup:
	@tools/setup.sh

demo: setup
	$(PY) demo.py $(ARGS)

test: setup
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)
