"""The invoicing models once converted: what ``inv_0002`` migrates the tables to."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import Identity, Integer, Numeric, PrimaryKeyConstraint, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from rls_tenancy import TenantBoundMixin
from rls_tenancy.orm.tenant_keys import tenant_foreign_key


class Base(DeclarativeBase):
    pass


class Invoice(TenantBoundMixin, Base):
    __tablename__ = "invoices"
    __table_args__ = (PrimaryKeyConstraint("tenant_id", "id", name="invoices_pkey"),)

    id: Mapped[int] = mapped_column(Integer, Identity(always=True))
    __mapper_args__ = {"primary_key": [id]}
    number: Mapped[str] = mapped_column(String(20))


class InvoiceLine(TenantBoundMixin, Base):
    __tablename__ = "invoice_lines"
    __table_args__ = (
        PrimaryKeyConstraint("tenant_id", "id", name="invoice_lines_pkey"),
        tenant_foreign_key("invoice_id", "invoices", name="invoice_lines_invoice_id_fkey"),
    )

    id: Mapped[int] = mapped_column(Integer, Identity(always=True))
    __mapper_args__ = {"primary_key": [id]}
    invoice_id: Mapped[int] = mapped_column(Integer)
    amount: Mapped[Decimal] = mapped_column(Numeric(10, 2))
