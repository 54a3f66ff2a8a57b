# make course | make test | make lab   (each creates .venv and installs on first use)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NOTEBOOKS := $(sort $(wildcard notebooks/*.ipynb))
# Notebooks run at the cpu profile unless T2I_PROFILE says otherwise.
export T2I_PROFILE ?= cpu

.PHONY: course test unit lint notebooks browser lab strip clean

$(STAMP): pyproject.toml etc/jupyterlab-overrides.json
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e .
	mkdir -p $(VENV)/share/jupyter/lab/settings
	cp etc/jupyterlab-overrides.json $(VENV)/share/jupyter/lab/settings/overrides.json
	touch $(STAMP)

# Execute every notebook headless, in order; executed copies and HTML go to build/. The HTML
# reads offline: no script from a CDN, and MathJax from build/html/mathjax.
MATHJAX = $(shell $(BIN)/python -c "import jupyter_server_mathjax as m, os; print(os.path.dirname(m.__file__))")/static
course: $(STAMP)
	mkdir -p build/notebooks build/html
	rm -rf build/html/mathjax && cp -r $(MATHJAX) build/html/mathjax
	for nb in $(NOTEBOOKS); do \
	  echo "== $$nb"; \
	  $(BIN)/jupyter nbconvert --to notebook --execute --ExecutePreprocessor.timeout=-1 \
	    --output-dir build/notebooks $$nb || exit 1; \
	  $(BIN)/jupyter nbconvert --config etc/nbconvert/offline_html.py --to html \
	    --output-dir build/html build/notebooks/$$(basename $$nb) || exit 1; \
	done
	$(BIN)/python -m t2i summary build/notebooks

# Lint, unit tests (smoke profile), every notebook under nbval (cpu profile), then, where a
# Chromium is found, the play panels in JupyterLab in a headless browser.
CHROMIUM ?= $(or $(T2I_CHROMIUM),$(shell command -v chromium 2>/dev/null))
test: lint unit notebooks $(if $(CHROMIUM),browser)

lint: $(STAMP)
	$(BIN)/ruff check lib tests notebooks
	$(BIN)/ruff format --check lib tests notebooks

unit: $(STAMP)
	T2I_PROFILE=smoke $(BIN)/pytest tests -q --ignore=tests/browser

# The play panels in JupyterLab, driven by Playwright in Chromium (after `notebooks`: the models
# come from the cache). Screenshots: build/browser/.
browser: $(STAMP)
	$(BIN)/pip install --quiet -e .[browser]
	$(BIN)/pytest tests/browser -q -s

notebooks: $(STAMP)
	$(BIN)/pytest --nbval-lax --durations=0 -q $(NOTEBOOKS)

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks

# Clear outputs and execution counts before committing notebooks.
strip: $(STAMP)
	$(BIN)/jupyter nbconvert --clear-output --inplace $(NOTEBOOKS) tests/browser/*.ipynb

clean:
	rm -rf build
