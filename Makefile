# Quick start: `make demo`, `make test`. Both install what they need into .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SYSTEM := .system-deps.stamp

.PHONY: install demo test lint format clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# Pin torch and torchvision first, as a pair that works together (timm needs torchvision):
	# this machine keeps both wheels on disk; an unpinned pair could fetch a mismatched build.
	$(PY) -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# Debian packages: Chromium and its driver for the browser tests (report, web page); FluidSynth
# and a General MIDI sound font to render generated music to WAV.
SOUNDFONT := /usr/share/sounds/sf2/FluidR3_GM.sf2
$(SYSTEM): Makefile
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 \
	  && command -v fluidsynth >/dev/null 2>&1 && [ -f $(SOUNDFONT) ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing chromium, chromium-driver, fluidsynth and fluid-soundfont-gm with apt-get"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    chromium chromium-driver fluidsynth fluid-soundfont-gm >/dev/null; \
	else echo "install chromium, chromium-driver, fluidsynth and fluid-soundfont-gm (Debian)" \
	  "for the browser and music tests"; exit 1; fi
	touch $(SYSTEM)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/polymodal demo --out demo_out --overwrite

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

format: $(STAMP)
	$(VENV)/bin/ruff format src tests benchmarks
	$(VENV)/bin/ruff check --fix src tests benchmarks

test: lint $(SYSTEM)
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) demo_out .pytest_cache .ruff_cache $(SYSTEM)
