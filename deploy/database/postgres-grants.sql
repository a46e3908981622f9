-- Least privilege for sluice on PostgreSQL (run as a superuser or the table owner).
CREATE ROLE sluice LOGIN REPLICATION PASSWORD 'change-me';
GRANT CONNECT ON DATABASE shop TO sluice;
GRANT USAGE ON SCHEMA public TO sluice;
-- Backfills read the captured tables.
GRANT SELECT ON public.orders, public.customers TO sluice;
-- The backfill watermarks, created once by the owner so sluice needs no CREATE.
CREATE TABLE IF NOT EXISTS public.sluice_signal (source text PRIMARY KEY, kind text NOT NULL,
  id text NOT NULL, at timestamptz NOT NULL DEFAULT now());
GRANT SELECT, INSERT, UPDATE ON public.sluice_signal TO sluice;
-- A publication owned by the owner, so sluice need not own the tables.
CREATE PUBLICATION sluice_pg1 FOR TABLE public.orders, public.customers, public.sluice_signal;
