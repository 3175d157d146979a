# Horodate — the common jobs. Quick start: `make demo`, `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_SECONDS ?= 60
APT_PACKAGES := chrony openssl wrk gcc linux-libc-dev default-jdk-headless libbcpkix-java \
	poppler-utils fonts-dejavu-core nginx-light systemd prometheus chromium \
	postgresql

.PHONY: demo test lint bench coverage system-deps venv install lock clean

# Reproducible installs: every package pinned and hash-checked from a lock file, then
# horodate itself with no dependency resolution (--no-deps) and no download at build time
# (--no-build-isolation: setuptools comes from the lock too). Two locks, made together by
# `make lock` so that the packages they share have the same versions:
#   requirements.lock       what the daemons run on: `make install` (the Pi, the vault's host)
#   requirements-test.lock  that, plus the tests' and linters' tools: `make venv` (and so
#                           `make test`, `make demo`, CI)
# They are universal (uv's --universal): one lock for Python 3.11+ on every platform, with
# environment markers, and the hashes of every file of each pinned release: the Pi's
# aarch64 wheels as well as x86_64's. Checked for requirements.lock: every package has a
# hashed wheel for CPython 3.11 on linux aarch64 (manylinux 2.28 at most, Raspberry Pi OS 12
# has glibc 2.36): `pip download --only-binary=:all: --platform manylinux_2_28_aarch64
# --python-version 3.11 --no-deps --require-hashes -r requirements.lock` fetches them all,
# so nothing is built from source on the Pi.
LOCK := requirements.lock
TEST_LOCK := requirements-test.lock
LOCK_TOOLS := .venv-lock
UV_VERSION := 0.13.8
LOCK_FLAGS := --universal --python-version 3.11 --generate-hashes --quiet
LOCK_UPGRADE ?= --upgrade
BUILD_REQUIRES := setuptools>=77

define install_from
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes -r $(1)
	$(BIN)/pip install --quiet --no-deps --no-build-isolation $(2)
endef

$(BIN)/horodate: pyproject.toml $(TEST_LOCK)
	$(call install_from,$(TEST_LOCK),-e .)
	touch $@

venv: $(BIN)/horodate

# The daemons alone (no test tools), horodate installed as a package, not editable.
install: pyproject.toml $(LOCK)
	$(call install_from,$(LOCK),.)

# Refresh both locks: each dependency at its newest release within pyproject.toml's ranges
# (`make lock LOCK_UPGRADE=` keeps the pins that still fit, after a change to the ranges).
lock:
	$(PYTHON) -m venv $(LOCK_TOOLS)
	$(LOCK_TOOLS)/bin/pip install --quiet uv==$(UV_VERSION)
	echo '$(BUILD_REQUIRES)' | $(LOCK_TOOLS)/bin/uv pip compile pyproject.toml - \
	  --extra test --extra lint $(LOCK_FLAGS) $(LOCK_UPGRADE) -o $(TEST_LOCK)
	echo '$(BUILD_REQUIRES)' | $(LOCK_TOOLS)/bin/uv pip compile pyproject.toml - \
	  $(LOCK_FLAGS) --constraint $(TEST_LOCK) -o $(LOCK)

demo: venv
	$(BIN)/horodate demo --seconds $(DEMO_SECONDS)

# Debian packages the tests talk to for real: chronyd (NTP peer), openssl (token
# verification), wrk (HTTP benchmark), gcc and linux-libc-dev (the PPS ioctl layout is checked
# against the kernel's own linux/pps.h), a JDK and Bouncy Castle (a third token verifier),
# poppler-utils (the audit report read back by pdftotext and pdftoppm) and the DejaVu fonts
# the report is set in; nginx-light, the reverse proxy the fast lane is tested behind;
# systemd for systemd-analyze (the units in systemd/ verified, their exposure scored);
# prometheus for promtool (the example alerting rules checked and unit-tested); chromium,
# the headless browser the /status pages are loaded, checked and screenshotted in;
# postgresql, the primary and synchronous standby the tests run (as the postgres user).
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
	rm -rf $(VENV) $(LOCK_TOOLS) .pytest_cache .mypy_cache .ruff_cache .hypothesis
