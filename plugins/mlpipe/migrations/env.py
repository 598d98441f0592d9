"""Alembic's environment for the registry: always online, on the connection mlpipe hands over.

mlpipe.migrations.upgrade() opens the connection (and holds the migration lock); there is no
alembic.ini and no URL here, so the same migrations run on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from alembic import context

from mlpipe.migrations import VERSION_TABLE

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    version_table=VERSION_TABLE,
    # SQLite cannot ALTER most things: batch mode copies the table instead, the same file for both.
    render_as_batch=True,
    transaction_per_migration=False,
)
with context.begin_transaction():
    context.run_migrations()
