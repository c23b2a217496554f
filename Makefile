# The two commands of the README: `make demo` and `make test`. Everything they need is
# installed here: Debian packages when missing, Python packages into .venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
# Debian packages the suite and demo talk to (real peers, never mocks)
DEB_PKGS := mosquitto mosquitto-clients mbpoll victoria-metrics chromium
# and what only the benchmarks use (wrk drives the API from C, leaving the cores to the hub)
BENCH_PKGS := wrk
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: test demo bench lint typecheck system venv clean

system:
	@missing=""; for p in $(DEB_PKGS) $(EXTRA_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q $$missing \
	    || { echo "could not install$$missing: install them and run again" >&2; exit 1; }; \
	fi

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
	  || { echo "Python 3.11+ is required" >&2; exit 1; }
	[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	rm -f $(VENV)/.installed-*; touch $@

venv: $(STAMP)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy protocols edge simulators hub deploy

test: system venv lint typecheck
	$(BIN)/pytest

demo: system venv
	$(BIN)/python -m simulators demo

bench: venv
	$(MAKE) system EXTRA_PKGS="$(BENCH_PKGS)"
	$(BIN)/python -m bench.run all

clean:
	rm -rf $(VENV) var .bench .pytest_cache .mypy_cache .ruff_cache
