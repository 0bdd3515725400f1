# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
FMNIST_DIR ?= /usr/share/datasets/fashion-mnist
STAMP := $(VENV)/.installed

.PHONY: demo test security lint typecheck fmnist chromium compose-tool bench clean

$(STAMP): pyproject.toml constraints-ci.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints-ci.txt -e '.[torch,server,postgres,tracking,plot,privacy,ray,images,tables,hf,dev]'
	touch $(STAMP)

# Fashion-MNIST comes from Debian's dataset-fashion-mnist package; installed when we are root.
fmnist:
	@if [ ! -f $(FMNIST_DIR)/train-images-idx3-ubyte.gz ]; then \
	  if [ "$$(id -u)" = "0" ]; then apt-get install -y -q dataset-fashion-mnist >/dev/null || \
	    (apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null); \
	  else echo "Fashion-MNIST missing: run 'sudo apt-get install dataset-fashion-mnist' or set FEDLOOM_DATA"; exit 1; fi; \
	fi

# The dashboard's browser tests drive Debian's Chromium (Playwright's own download cannot work offline).
chromium:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = "0" ]; then apt-get install -y -q chromium >/dev/null || \
	    (apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null); \
	  else echo "Chromium missing: run 'sudo apt-get install chromium' (the dashboard's browser tests need it)"; exit 1; fi; \
	fi

# The container tests validate deploy/compose.yaml with Debian's docker-compose (no daemon needed).
compose-tool:
	@if ! command -v docker-compose >/dev/null; then \
	  if [ "$$(id -u)" = "0" ]; then apt-get install -y -q docker-compose >/dev/null || \
	    (apt-get update -q >/dev/null && apt-get install -y -q docker-compose >/dev/null); \
	  else echo "docker-compose missing: run 'sudo apt-get install docker-compose' (the container tests need it)"; exit 1; fi; \
	fi

demo: $(STAMP) fmnist
	$(BIN)/fedloom sim --dataset fmnist --model cnn --clients 100 --partition dirichlet --alpha 0.5 \
	  --fraction 0.1 --rounds 15 --epochs 1 --batch-size 32 --lr 0.1 --seed 0 --executor parallel

test: $(STAMP) fmnist chromium compose-tool
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples
	$(BIN)/mypy
	$(BIN)/pytest -q

# The hostile-input suite, the API fuzz and the deployed attack alone (make test runs them too).
security: $(STAMP)
	$(BIN)/pytest -q tests/security

bench: $(STAMP) fmnist
	$(BIN)/python benchmarks/accuracy_fmnist.py

clean:
	rm -rf $(VENV) fedloom-runs .pytest_cache .mypy_cache .ruff_cache
