"""Alembic's environment for convodb's migrations.

convodb runs them itself (``Database.upgrade()``, ``convodb db upgrade``) on a connection of
the ``Database``'s, in a transaction it has begun; it hands that connection over in
``config.attributes["connection"]``. There is no ``alembic.ini`` and no offline (SQL script)
mode.
"""

from __future__ import annotations

from alembic import context

from convodb.migrations import VERSION_TABLE

connection = context.config.attributes.get("connection")
if connection is None or context.is_offline_mode():
    raise RuntimeError(
        "convodb's migrations run through convodb: `convodb db upgrade` or "
        "`await Database.upgrade()`"
    )

context.configure(
    connection=connection,
    version_table=VERSION_TABLE,
    # Autogenerate then drafts batch operations: SQLite alters most things only by copying the
    # table, which they do (elsewhere they are plain ALTER TABLE). The revisions here call
    # op.batch_alter_table themselves.
    render_as_batch=True,
)
with context.begin_transaction():  # joins the transaction convodb began
    context.run_migrations()
