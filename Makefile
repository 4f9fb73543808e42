# Linear Layer from Scratch: one place for every command.
#   make train   train the course MLP (the main job)
#   make test    build .venv if needed, then run the tests (unit tests + notebooks with nbval)

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# The venv is rebuilt when pyproject.toml (the pins) changes: its hash names the stamp file.
PINS   := $(shell $(PYTHON) -c "import hashlib,sys;print(hashlib.sha256(open('pyproject.toml','rb').read()).hexdigest()[:16])")
STAMP  := $(VENV)/.installed-$(PINS)

TRAIN_ARGS ?=
TEST_ARGS  ?=
SITE_ARGS  ?=

.PHONY: help venv train test test-long test-fast lab notebooks figures bench assignments autograde clean \
        site site-test portable

help:
	@echo "make venv         create .venv and install the pinned packages (every target does it first)"
	@echo "make train        train the course MLP (see: $(PY) -m course_lib train --help)"
	@echo "make test         create/refresh .venv, run the tests and every notebook (nbval), not the long ones"
	@echo "make test-long    the autograder's sandbox tests and a lesson in JupyterLab (minutes): CI runs them"
	@echo "make test-fast    the unit tests only: no notebooks, no browser, nothing slow"
	@echo "make lab          open JupyterLab on notebooks/ (students' set-up: no nbgrader)"
	@echo "make notebooks    re-execute and re-save the lesson notebooks"
	@echo "make portable     check the lessons' saved outputs under several CPU setups"
	@echo "make figures      redraw the lesson figures in assets/"
	@echo "make bench        run the speed benchmarks in benchmarks/"
	@echo "make assignments  generate the nbgrader student release"
	@echo "make autograde    grade assignments/submitted/ and print the score table"
	@echo "make site         build the course website into build/site/ (runs every lesson in full)"
	@echo "make site-test    check build/site/ in Chromium (every page, offline)"
	@echo "make clean        delete .venv, build/ and the test caches"
	@echo "make help         this list"

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --quiet --upgrade pip
	$(PY) -m pip install --quiet --quiet -e '.[dev,site]'
	@rm -f $(VENV)/.installed-*
	@touch $@

train: $(STAMP)
	$(PY) -m course_lib train $(TRAIN_ARGS)

test: $(STAMP)
	COURSE_FAST=1 $(PY) -m pytest --nbval --nbval-sanitize-with tests/nbval_sanitize.cfg \
		--nbval-current-env -p no:cacheprovider --durations=10 -m "not long" $(TEST_ARGS)

test-long: $(STAMP)
	$(PY) -m pytest tests -m long -p no:cacheprovider --durations=10 $(TEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest tests -m "not slow and not browser" -p no:cacheprovider $(TEST_ARGS)

# From the repository's root, so the lessons' ../assets/ figures load; students' set-up (no nbgrader).
lab: $(STAMP)
	JUPYTER_CONFIG_PATH=tools/lab_config $(PY) -m jupyter lab --ServerApp.root_dir=. \
		--LabApp.default_url=/lab/tree/notebooks

notebooks: $(STAMP)
	$(PY) tools/run_notebooks.py

portable: $(STAMP) ; $(PY) tools/check_portable.py $(PORTABLE_ARGS)

figures: $(STAMP)
	$(PY) assets/make_figures.py

bench: $(STAMP)
	$(PY) benchmarks/linear_vs_torch.py
	$(PY) benchmarks/train_throughput.py

assignments: $(STAMP)
	$(PY) tools/assignments.py release

autograde: $(STAMP)
	$(PY) tools/assignments.py autograde

# SITE_ARGS=--preview: keep the lessons' committed outputs instead of running them (seconds).
site: $(STAMP)
	$(PY) site/build.py $(SITE_ARGS)

site-test: $(STAMP)
	COURSE_SITE=1 $(PY) -m pytest tests/test_site.py -p no:cacheprovider $(TEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info
