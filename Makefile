# Two commands do everything on a fresh machine: `make demo` and `make test` (`make docs` builds the docs site).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test docs lint bench browser clean

$(STAMP): pyproject.toml requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m dh_tf demo $(ARGS)

# The browser test needs Debian's chromium + chromium-driver; installed here when missing (root).
browser:
	@command -v chromium >/dev/null 2>&1 || ( \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
	      || echo "browser: could not install chromium; the browser test will be skipped"; \
	  else echo "browser: chromium missing and not root; the browser test will be skipped"; fi )

test: $(STAMP) browser docs
	$(PY) -m pytest -q $(PYTEST_ARGS)

# The docs site (mkdocs.yml, docs/) into site/; --strict: a broken link or API reference fails the build.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --quiet

lint: $(STAMP)
	$(PY) -m ruff check dh_tf tests examples benchmarks

bench: $(STAMP)
	$(PY) -m benchmarks.run $(ARGS)

clean:
	rm -rf $(VENV) build site *.egg-info .pytest_cache
