# The README's two commands. Both create .venv on first use and install jaxden into it.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
WORKDIR ?= runs/quick

.PHONY: demo test

# Fashion-MNIST (issue 3's default labelled data) comes from Debian's dataset-fashion-mnist.
# Installed when this user may run apt-get (root, or sudo without a password); otherwise the
# tests that need it skip and name the command, and `digits` (scikit-learn) still works.
FASHION_MNIST := /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz
APT := $(shell [ "$$(id -u)" = 0 ] && echo apt-get || (sudo -n true 2>/dev/null && echo "sudo apt-get"))

$(FASHION_MNIST):
ifneq ($(APT),)
	DEBIAN_FRONTEND=noninteractive $(APT) install -y -q dataset-fashion-mnist \
	  || ($(APT) update -q && DEBIAN_FRONTEND=noninteractive $(APT) install -y -q dataset-fashion-mnist)
else
	@echo "note: cannot run apt-get here; install Fashion-MNIST with 'sudo apt-get install dataset-fashion-mnist'"
endif

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

# PyTorch for the parity tests (tests/test_port.py): the CPU wheel of the `bench` extra's pin
# (keep TORCH in step with pyproject.toml), from PyTorch's CPU index; PyPI's wheel (which pulls
# CUDA libraries) only if that index is unreachable.
TORCH := torch==2.13.0
TORCH_STAMP := $(VENV)/.torch-stamp

$(TORCH_STAMP): Makefile | $(STAMP)
	$(PY) -m pip install --quiet --retries 1 --timeout 20 "$(TORCH)" \
	  --index-url https://download.pytorch.org/whl/cpu \
	  || $(PY) -m pip install --quiet "$(TORCH)"
	touch $(TORCH_STAMP)

demo: $(STAMP)
	$(PY) train.py --config configs/addunet_denoise.py:quick --workdir $(WORKDIR)
	$(PY) eval.py --workdir $(WORKDIR)

test: $(STAMP) $(TORCH_STAMP) $(FASHION_MNIST)
	$(PY) -m pytest -q
