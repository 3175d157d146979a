# Horodate — the common jobs. Quick start: `make demo`, `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_SECONDS ?= 60
APT_PACKAGES := chrony openssl wrk gcc linux-libc-dev default-jdk-headless libbcpkix-java \
	poppler-utils fonts-dejavu-core nginx-light

.PHONY: demo test lint bench coverage system-deps venv clean

$(BIN)/horodate: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,lint]'
	touch $@

venv: $(BIN)/horodate

demo: venv
	$(BIN)/horodate demo --seconds $(DEMO_SECONDS)

# Debian packages the tests talk to for real: chronyd (NTP peer), openssl (token
# verification), wrk (HTTP benchmark), gcc and linux-libc-dev (the PPS ioctl layout is checked
# against the kernel's own linux/pps.h), a JDK and Bouncy Castle (a third token verifier),
# poppler-utils (the audit report read back by pdftotext and pdftoppm) and the DejaVu fonts
# the report is set in; nginx-light, the reverse proxy the fast lane is tested behind.
# Installed only when missing.
system-deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

test: system-deps venv
	$(BIN)/python -m pytest

coverage: system-deps venv
	$(BIN)/python -m pytest --cov --cov-report=term

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy drivers timestamping appliance daemon horodate

bench: venv
	@for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
