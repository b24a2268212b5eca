"""tickets.flags: matters the contract may exclude, for the agent

Revision ID: 0003
Revises: 0002

Its own revision because 0002 was already applied to databases without it.
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel


revision: str = '0003'
down_revision: Union[str, None] = '0002'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.add_column(sa.Column('flags', sqlmodel.sql.sqltypes.AutoString(length=400),
                                      nullable=False, server_default=''))


def downgrade() -> None:
    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.drop_column('flags')
