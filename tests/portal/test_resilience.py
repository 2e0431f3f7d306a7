"""Which database errors are an outage (503, try again) and which are faults (500)."""

import sqlite3

import django.db.utils
import psycopg
import pytest
from django.db import OperationalError, connection

from portal.resilience import is_outage


def as_django_raises(error):
    """The driver's error as Django's ORM raises it (what DatabaseErrorWrapper does, for
    whichever driver made it): Django's class of the same name, the driver's as the cause."""
    wrapped = getattr(django.db.utils, type(error).__name__)(*error.args)
    wrapped.__cause__ = error
    return wrapped


def test_a_postgresql_server_that_does_not_answer_is_an_outage():
    with pytest.raises(psycopg.OperationalError) as caught:
        psycopg.connect("host=127.0.0.1 port=1 user=postgres dbname=x connect_timeout=2")
    assert is_outage(as_django_raises(caught.value))


def test_a_busy_sqlite_database_is_an_outage(tmp_path):
    path = tmp_path / "busy.sqlite3"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN IMMEDIATE")
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    with pytest.raises(sqlite3.OperationalError) as caught:
        other.execute("INSERT INTO t VALUES (1)")
    holder.close()
    other.close()
    assert "locked" in str(caught.value)
    assert is_outage(as_django_raises(caught.value))


def test_a_fault_of_the_query_is_not_an_outage(db):
    """Answered 500 and reported, not hidden behind 'try again': a statement timeout on
    PostgreSQL, a missing table on SQLite (both OperationalError)."""
    with pytest.raises(OperationalError) as caught, connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET LOCAL statement_timeout = 50")
            cursor.execute("SELECT pg_sleep(2)")
        else:
            cursor.execute("SELECT * FROM no_such_table")
    assert not is_outage(caught.value)


def test_other_errors_are_not_database_outages():
    assert not is_outage(ValueError("not a database error"))
