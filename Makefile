# `make run` and `make test` work on a fresh clone: they build the virtualenv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum < requirements.lock | cut -d' ' -f1)
MO := locale/es/LC_MESSAGES/django.mo

# Tests run with production-like settings (DEBUG off) on plain HTTP.
TEST_ENV := DJANGO_SECRET_KEY=test-only-secret-key-not-for-production DJANGO_DEBUG=false \
	DJANGO_HTTPS=false

.PHONY: run test lint format venv messages makemessages check-deploy clean

$(STAMP): requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	@rm -f $(VENV)/.installed-*
	@touch $@

venv: $(STAMP)

$(MO): locale/es/LC_MESSAGES/django.po
	msgfmt --check -o $@ $<

messages: $(MO)

makemessages: venv
	DJANGO_DEBUG=true $(BIN)/python manage.py makemessages -l es --ignore '$(VENV)' --ignore 'static/vendor' \
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
	rm -rf $(VENV) staticfiles .pytest_cache .ruff_cache
