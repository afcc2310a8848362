# Developer entry points. `make run` and `make test` are the README's two commands.
PYTHON ?= python3
VENV ?= .venv
STATE_DIR ?= ./var
PORT ?= 8082

.PHONY: venv run test lint bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: setup.cfg setup.py
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

# The scheduler with embedded defaults: TLS certificate, signing key and an admin account are
# generated into $(STATE_DIR); the admin password is in $(STATE_DIR)/admin-password.
run: venv
	$(VENV)/bin/luigi-appliance serve --dev --state-dir $(STATE_DIR) --port $(PORT)

test: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m pytest

lint: venv
	$(VENV)/bin/ruff check .

# Stock luigid against the appliance, same workload, same machine; prints the ratio.
bench: venv
	$(VENV)/bin/python bench/rpc_throughput.py --rounds 3

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache
