# The README's two commands. Both create .venv on first use and install jaxden into it.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
WORKDIR ?= runs/quick

.PHONY: demo test

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) train.py --config configs/addunet_denoise.py:quick --workdir $(WORKDIR)
	$(PY) eval.py --workdir $(WORKDIR)

test: $(STAMP)
	$(PY) -m pytest -q
