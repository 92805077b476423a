"""Passwords in storage URLs: redacted wherever the URL travels, revealed only where a connection opens."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from forecasting.core import secrets


@pytest.mark.parametrize(("url", "want"), [
    ("postgresql://u:pw@db.example:5432/optuna", "postgresql://u:***@db.example:5432/optuna"),
    ("postgresql+psycopg2://u:p%40ss@host/db?sslmode=require", "postgresql+psycopg2://u:***@host/db?sslmode=require"),
    ("mysql://u:pw@[::1]:3306/x", "mysql://u:***@[::1]:3306/x"),
    ("postgresql://u@host/db", "postgresql://u@host/db"),  # no password: unchanged
    ("sqlite:////home/me/mlruns/optuna.db", "sqlite:////home/me/mlruns/optuna.db"),
    ("postgresql://u:pw@host:notaport/db", "postgresql://***@host:notaport/db"),
])
def test_a_password_is_redacted_and_nothing_else_changes(url, want):
    assert secrets.redact(url) == want


def test_hidden_urls_are_revealed_in_this_process_and_in_its_workers(monkeypatch):
    monkeypatch.setattr(secrets, "_REAL", {})
    monkeypatch.delenv(secrets.SECRET_ENV, raising=False)
    real = "postgresql://u:hunter2@h/db"
    masked = secrets.hide(real)
    assert masked == "postgresql://u:***@h/db" and secrets.reveal(masked) == real
    assert secrets.hide(None) is None and secrets.reveal("sqlite:///x.db") == "sqlite:///x.db"
    code = "from forecasting.core.secrets import reveal; import sys; print(reveal(sys.argv[1]))"
    out = subprocess.run([sys.executable, "-c", code, masked], env={**secrets.child_env(), "PATH": ""},
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == real
    assert json.loads(secrets.child_env()[secrets.SECRET_ENV]) == {masked: real}
