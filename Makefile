# twin — `make run` and `make test` install what they need first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install browser run test lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# the browser test drives Debian's Chromium (Playwright's own browser downloads are not used)
browser:
	@command -v chromium >/dev/null || { $(SUDO) apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q chromium; }

run: install
	$(BIN)/twin up --simulate 20

test: install browser
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check src streams replay dashboards tests benches
	$(BIN)/mypy src/twin streams replay dashboards

bench: install
	$(BIN)/python benches/gateway.py
	$(BIN)/python benches/validation.py
	$(BIN)/python benches/fold.py
	$(BIN)/python benches/freshness.py
	$(BIN)/python benches/simulator.py
	$(BIN)/python benches/replay_speed.py

clean:
	rm -rf $(VENV) twin-data .pytest_cache
