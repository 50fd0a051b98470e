"""Database URLs shared by the Optuna storage (strbench.tune.storage) and the MLflow store (strbench.tracking).

A bare ``postgresql://`` URL leaves the driver to SQLAlchemy, which picks psycopg (3) from version 2.1 on;
strbench's dev extra installs psycopg2, so such a URL is handed on as ``postgresql+psycopg2://`` when psycopg2
is what is installed. A URL that names its driver (``postgresql+psycopg://``) is left as it is.
"""
from __future__ import annotations

import importlib.util

from strbench.errors import ConfigError


def redact(url: str) -> str:
    """The URL without its password (for messages, logs and tags)."""
    if "://" in url and "@" in url.split("://", 1)[1]:
        from sqlalchemy.engine import make_url

        try:
            return make_url(url).render_as_string(hide_password=True)
        except Exception:  # not an SQLAlchemy URL (http://user:pw@host): drop the whole user part
            scheme, rest = url.split("://", 1)
            return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def with_postgres_driver(url: str, key: str = "storage") -> str:
    """`postgresql://` -> `postgresql+psycopg2://` when psycopg2 is installed and psycopg (3) is not; a
    ConfigError naming `key` when neither driver is installed; any other URL unchanged."""
    if not url.startswith("postgresql://"):
        return url
    has2, has3 = (importlib.util.find_spec(m) is not None for m in ("psycopg2", "psycopg"))
    if has2 and not has3:
        return "postgresql+psycopg2://" + url[len("postgresql://"):]
    if not (has2 or has3):
        raise ConfigError(f"{key} {redact(url)}: PostgreSQL needs a driver: pip install psycopg2-binary (strbench's "
                          "dev extra) or 'psycopg[binary]'")
    return url
