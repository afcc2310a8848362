# Developer entry points. `make run` and `make test` are the README's two commands.
PYTHON ?= python3
VENV ?= .venv
STATE_DIR ?= ./var
PORT ?= 8082

.PHONY: venv run test test-fast lint bench clean lock wheels rpm rpm-spec man selinux ansible

# Two stamps: `make run` installs only what the scheduler needs (the package and its runtime
# dependencies), so a first start does not wait for the test, lint and Ansible tooling (the
# [test] extra, mostly the ansible package's collections: minutes); the first `make test`,
# `test-fast`, `lint`, `ansible` or `bench` adds them.
venv: $(VENV)/.installed-run

# --no-compile: Python compiles the modules the scheduler imports on its first start, not all of
# every package beforehand (half of pip's time here).
$(VENV)/.installed-run: setup.cfg setup.py
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --no-compile -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed-run
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

# The scheduler with embedded defaults: TLS certificate, signing key and an admin account are
# generated into $(STATE_DIR); the admin password is in $(STATE_DIR)/admin-password.
run: venv
	$(VENV)/bin/luigi-appliance serve --dev --state-dir $(STATE_DIR) --port $(PORT)

# The OpenID Provider the OIDC tests run (panva's oidc-provider), from its lock file.
OIDC_PROVIDER := tests/oidc_provider/node_modules/.package-lock.json
$(OIDC_PROVIDER): tests/oidc_provider/package-lock.json
	npm ci --prefix tests/oidc_provider --no-audit --no-fund --loglevel=error

test: $(VENV)/.installed-test $(OIDC_PROVIDER)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/python -m pytest

# The developer loop: the unit tests of pure logic (tests/unit/, seconds); CI always runs
# `make test`, which adds the system tests (tests/system/: real processes, servers, packages).
test-fast: $(VENV)/.installed-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/python -m pytest -n 0 tests/unit

lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# The Ansible collection's checks alone (ansible/): ansible-lint production profile, syntax,
# build, argument specs, and real plays into a temporary root (also part of `make test`).
ansible: $(VENV)/.installed-test
	$(VENV)/bin/python -m pytest tests/system/test_ansible.py

# Stock luigid against the appliance, same workload, same machine; prints the ratio.
bench: $(VENV)/.installed-test
	$(VENV)/bin/python bench/rpc_throughput.py --rounds 3

# ---- packaging -------------------------------------------------------------------------------
# The one version string: luigi_appliance/__init__.py's __version__, which setup.cfg reads too.
VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' luigi_appliance/__init__.py)
# The spec rpmbuild reads, and the SRPM carries: rpm/luigi-appliance.spec with the version and
# the interpreter of the bundled wheels written in, so the SRPM rebuilds alone (`rpmbuild
# --rebuild`). The Ansible collection's galaxy.yml must state the version literally (ansible-galaxy
# reads the file as it is); tests/unit/test_package_structure.py keeps the two equal.
STAMP_SPEC = sed -e 's/^%{!?upstream_version:.*/%global upstream_version $(VERSION)/' \
                 -e 's/^%{!?venv_python:.*/%{!?venv_python: %global venv_python $(RPM_PYTHON)}/' \
                 rpm/luigi-appliance.spec
# EL9's interpreter for the bundled venv. The spec defaults to python3.12; a build host must
# have the same interpreter, and Debian 12 (our CI) has python3.11.
RPM_PYTHON ?= python3.11
RPM_PYTHON_VERSION = $(subst python,,$(RPM_PYTHON))
RPM_RELEASE ?= 1
WHEELS = rpm/wheels/$(RPM_PYTHON_VERSION)
# Debian's rpm database does not know the build host's packages: skip BuildRequires there.
RPMBUILD_FLAGS ?= $(if $(shell rpm -q rpm >/dev/null 2>&1 && echo yes),,--nodeps)
# Stand-ins for the macro sets an EL9 buildroot gets from systemd-rpm-macros and
# selinux-policy-devel, each loaded only where the host lacks that set (Debian's rpm).
RPM_MACROS = $(if $(shell rpm --eval '%{?systemd_post:1}'),,--load rpm/macros.systemd-fallback) \
             $(if $(shell rpm --eval '%{?selinux_modules_install:1}'),,--load rpm/macros.selinux-fallback)
RPM_DEFINES = --define "venv_python $(RPM_PYTHON)" --define "release_number $(RPM_RELEASE)"

# Re-resolve rpm/requirements.in into the hash-pinned rpm/requirements.lock (needs the index).
lock: venv
	$(VENV)/bin/python rpm/lock.py

# The locked wheels for $(RPM_PYTHON), verified against the lock's hashes.
wheels: $(WHEELS)/.complete

$(WHEELS)/.complete: rpm/requirements.lock
	rm -rf $(WHEELS) && mkdir -p $(WHEELS)
	$(PYTHON) -m pip download --quiet --disable-pip-version-check --no-deps --require-hashes \
	    --only-binary=:all: --implementation cp --python-version $(RPM_PYTHON_VERSION) \
	    --platform manylinux_2_34_x86_64 --platform manylinux_2_28_x86_64 \
	    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
	    -r rpm/requirements.lock -d $(WHEELS)
	touch $@

selinux:
	$(MAKE) -C selinux

# SRPM and binary RPMs into dist/, built with rpmbuild in a temporary topdir from the working
# tree (tracked files that exist, and untracked, not ignored ones) and the locked wheels.
rpm: wheels
	set -e; top=$$(mktemp -d); trap 'rm -rf "$$top"' EXIT; \
	mkdir -p "$$top/SOURCES" dist; \
	git ls-files -z --cached --others --exclude-standard | \
	    xargs -0 sh -c 'for f; do if [ -e "$$f" ]; then printf "%s\0" "$$f"; fi; done' sh | \
	    tar --null -T - --transform 's|^|luigi-appliance-$(VERSION)/|' -czf "$$top/SOURCES/luigi-appliance-$(VERSION).tar.gz"; \
	tar -czf "$$top/SOURCES/luigi-appliance-wheels-$(VERSION).tar.gz" \
	    -C $(WHEELS) --exclude .complete . -C $(CURDIR)/rpm requirements.lock; \
	$(STAMP_SPEC) >"$$top/luigi-appliance.spec"; \
	rpmbuild -ba $(RPMBUILD_FLAGS) $(RPM_MACROS) --define "_topdir $$top" $(RPM_DEFINES) "$$top/luigi-appliance.spec"; \
	cp "$$top"/SRPMS/*.rpm "$$top"/RPMS/*/*.rpm dist/

# The spec as `make rpm` has rpmbuild read it, macros expanded (tests/system/test_rpm.py checks that
# none is left unexpanded).
rpm-spec:
	@set -e; spec=$$(mktemp); trap 'rm -f "$$spec"' EXIT; $(STAMP_SPEC) >"$$spec"; \
	rpmspec -P $(RPM_MACROS) $(RPM_DEFINES) "$$spec"

# The man pages the RPM ships (one per top-level command, from the CLI's parser) into build/man;
# read one with `man -l build/man/luigi-appliance.1`.
man: venv
	rm -rf build/man
	$(VENV)/bin/python rpm/manpages.py build/man

clean:
	rm -rf $(VENV) build dist rpm/wheels *.egg-info .pytest_cache .ruff_cache
	$(MAKE) -C selinux clean
