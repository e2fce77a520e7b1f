"""Alembic environment for the admin console DB.

The server passes its own connection through `config.attributes["connection"]` (see
`app.db.database.run_migrations`); the Alembic CLI gets a fresh engine from `DATABASE_URL` or the data dir.
"""

from __future__ import annotations

import os
import sys
from logging.config import fileConfig
from pathlib import Path

from alembic import context
from sqlalchemy import Connection

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.db.models import Base  # noqa: E402

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    # Batch mode lets later migrations ALTER tables on SQLite, which cannot drop or retype columns in place.
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def _url_from_env() -> str:
    explicit = config.get_main_option("sqlalchemy.url")
    if explicit:
        return explicit
    data_dir = os.environ.get("TESSERA_DATA_DIR", "./data")
    return os.environ.get("DATABASE_URL") or f"sqlite:///{Path(data_dir).resolve() / 'tessera.db'}"


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
elif context.is_offline_mode():
    context.configure(url=_url_from_env(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    if config.config_file_name is not None:
        fileConfig(config.config_file_name, disable_existing_loggers=False)
    from app.db.database import create_db_engine

    engine = create_db_engine(_url_from_env())
    with engine.begin() as conn:
        _run(conn)
    engine.dispose()
