"""tickets: severity, its source, first-response deadline and warning time

Revision ID: 0004
Revises: 0003

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel
import bot.models


revision: str = '0004'
down_revision: Union[str, None] = '0003'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.add_column(sa.Column('severity', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('severity_source', sqlmodel.sql.sqltypes.AutoString(length=20),
                                      nullable=False, server_default=''))
        batch_op.add_column(sa.Column('deadline_at', bot.models.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column('warn_at', bot.models.UTCDateTime(), nullable=True))
        batch_op.create_index(batch_op.f('ix_tickets_deadline_at'), ['deadline_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_tickets_deadline_at'))
        batch_op.drop_column('warn_at')
        batch_op.drop_column('deadline_at')
        batch_op.drop_column('severity_source')
        batch_op.drop_column('severity')
