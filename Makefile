# d2lbn: two commands for a newcomer, `make test` and `make book`.
# Each creates .venv from requirements.txt when it is missing, and refreshes it when
# requirements.txt or pyproject.toml changed since it was built.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
STAMP  := $(VENV)/.installed
PORT   ?= 8000

# CPU training allocates activation buffers of a few megabytes on every step. By default
# glibc's malloc gives such buffers back to the system when they are freed and faults them in
# again on the next step; these two settings keep them in the process instead (its memory stays
# at its peak). book/running.md gives the time saved. Other C libraries (macOS) ignore them;
# a script run directly, such as .venv/bin/python benchmarks/bench_data.py, runs without them.
export MALLOC_MMAP_THRESHOLD_ ?= 1000000000
export MALLOC_TRIM_THRESHOLD_ ?= 1000000000

.PHONY: help venv test unit notebooks book serve lab bench clean

# A .venv whose python no longer runs (the Python it was made from was upgraded or removed),
# or that has no pip (python3 -m venv without Debian's python3-venv), counts as stale: the
# stamp goes, and the next target rebuilds the environment from scratch.
ifneq ($(wildcard $(VENV)),)
ifneq ($(shell $(PY) -m pip --version >/dev/null 2>&1 && echo ok),ok)
$(shell rm -f $(STAMP))
endif
endif

help:
	@echo "make test       unit tests, notebooks under nbval, the book built and opened in a browser"
	@echo "make book       build the HTML book into _build/html (warnings are errors)"
	@echo "make serve      preview the built book on http://127.0.0.1:$(PORT)"
	@echo "make lab        open the notebooks in JupyterLab"
	@echo "make unit       the unit tests alone (about a minute)"
	@echo "make notebooks  the notebooks alone, under nbval"
	@echo "make bench      the speed benchmarks (ratios against PyTorch and torchvision)"
	@echo "make venv       create or refresh .venv from requirements.txt (the others do it too)"
	@echo "make clean      remove the built book and the test caches"

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@py=$(PYTHON); $(PY) -c '' 2>/dev/null && py=$(PY); \
	$$py -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { \
	  echo "The pinned versions in requirements.txt need Python 3.11 or newer; $$py is" \
	  "$$($$py -V 2>&1). Install a newer one, delete .venv if it was made with the old one," \
	  "and run, for example: make test PYTHON=python3.12"; exit 1; }
	@$(PY) -m pip --version >/dev/null 2>&1 || $(PYTHON) -m venv --clear $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	@touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest d2lbn tests notebooks

unit: $(STAMP)
	$(PY) -m pytest -m "not book" d2lbn tests

notebooks: $(STAMP)
	$(PY) -m pytest notebooks

book: $(STAMP)
	$(BIN)/jupyter-book build . --all --warningiserror --nitpick --keep-going

serve: book
	$(PY) -m http.server $(PORT) --bind 127.0.0.1 --directory _build/html

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks $$(test "$$(id -u)" = 0 && echo --allow-root)

bench: $(STAMP)
	$(PY) benchmarks/bench_batchnorm.py
	$(PY) benchmarks/bench_data.py

clean:
	rm -rf _build .pytest_cache .hypothesis
