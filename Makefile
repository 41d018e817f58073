# twin — `make run` and `make test` install what they need first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PINS   := constraints.txt

SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Apache Kafka's jars (`twin broker --engine kafka`), fetched once by Maven from kafka-jars/pom.xml
KAFKA_LIB   := .kafka/lib
KAFKA_STAMP := .kafka/.fetched

.PHONY: install upgrade browser kafka run test lint bench clean

install: $(STAMP)

# every dependency at the version the suite last passed with (constraints.txt): two installs a
# month apart are the same product
$(STAMP): pyproject.toml $(PINS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c $(PINS) -e '.[dev]'
	touch $(STAMP)

# the newest of everything pyproject.toml allows, in a venv of its own; the pins move only if
# the whole suite passes there
upgrade: browser kafka
	rm -rf .venv-upgrade
	$(PYTHON) -m venv .venv-upgrade
	.venv-upgrade/bin/pip install --quiet --upgrade pip
	.venv-upgrade/bin/pip install --quiet --upgrade -e '.[dev]'
	.venv-upgrade/bin/python -m pytest -q
	{ echo '# The versions the suite last passed with; make install uses them, make upgrade refreshes them.'; \
	  .venv-upgrade/bin/pip freeze --exclude-editable | grep -v '^pip=='; } > $(PINS)
	rm -rf .venv-upgrade
	$(MAKE) install

# the browser test drives Debian's Chromium (Playwright's own browser downloads are not used)
browser:
	@command -v chromium >/dev/null || { $(SUDO) apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q chromium; }

# a JRE and Maven from Debian's packages when missing, then Kafka's jars from Maven Central
kafka: $(KAFKA_STAMP)

$(KAFKA_STAMP): kafka-jars/pom.xml
	@{ command -v java && command -v mvn; } >/dev/null || { $(SUDO) apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q default-jre-headless maven; }
	rm -rf $(KAFKA_LIB)
	mvn -q -B -f kafka-jars/pom.xml dependency:copy-dependencies -DoutputDirectory=$(CURDIR)/$(KAFKA_LIB)
	touch $@

# Tansu, embedded: no Java
run: install
	$(BIN)/twin up --simulate 20 --faults 0.5 --outages 0.5

test: install browser kafka
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
	rm -rf $(VENV) .venv-upgrade twin-data .pytest_cache .kafka
