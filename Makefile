# `make run` and `make test` work on a fresh clone: they build the virtualenv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The venv is rebuilt when the lock file or the interpreter (path and exact version) changes.
PYTHON_ID := $(shell $(PYTHON) -c 'import sys; print(sys.executable, sys.version)' | cksum | cut -d' ' -f1)
STAMP := $(VENV)/.installed-$(shell cksum < requirements.lock | cut -d' ' -f1)-$(PYTHON_ID)
MO := locale/es/LC_MESSAGES/django.mo

# Tests run with production-like settings (DEBUG off) on plain HTTP.
TEST_ENV := DJANGO_SECRET_KEY=test-only-secret-key-not-for-production DJANGO_DEBUG=false \
	DJANGO_HTTPS=false

.PHONY: run test lint format venv messages makemessages check-deploy clean

$(STAMP): requirements.lock
	@if [ -x $(BIN)/python ] && [ ! -e $(VENV)/.python-$(PYTHON_ID) ]; then \
		echo "$(VENV) was built with another Python than $(PYTHON): rebuilding it"; rm -rf $(VENV); fi
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@touch $(VENV)/.python-$(PYTHON_ID)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	@rm -f $(VENV)/.installed-*
	@touch $@

venv: $(STAMP)

$(MO): locale/es/LC_MESSAGES/django.po
	msgfmt --check -o $@ $<

messages: $(MO)

makemessages: venv
	DJANGO_DEBUG=true $(BIN)/python manage.py makemessages -l es --ignore '.venv*' --ignore 'static/vendor' \
		--ignore bench --ignore tests --no-obsolete

run: venv messages
	DJANGO_DEBUG=$${DJANGO_DEBUG:-true} $(BIN)/python -m portal.run

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(TEST_ENV) $(BIN)/python manage.py makemigrations --check --dry-run
	DJANGO_SECRET_KEY=$$($(BIN)/python -c 'import secrets; print(secrets.token_urlsafe(50))') \
		DJANGO_DEBUG=false DJANGO_ALLOWED_HOSTS=portal.example.org \
		$(BIN)/python manage.py check --deploy --fail-level WARNING

test: venv messages lint
	$(TEST_ENV) $(BIN)/python -m pytest $(PYTEST_ARGS)

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) .venv-* staticfiles .pytest_cache .ruff_cache
