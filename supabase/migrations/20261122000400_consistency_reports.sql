-- Consistency reports: what the relay's validator (src/validator) found in dual mode, one row per
-- validated path every VALIDATOR_REPORT_INTERVAL_MS. A row holds the sliding window's figures at
-- `at` (window_ms long): events sent, and how they arrived on the path — matched, missing (not
-- within the deadline), duplicated, reordered, mismatched (payload differs), late (arrived after
-- the deadline; also counted missing), unexpected (ids the validator did not know) — with the
-- consistency %, latency percentiles (publish → arrival), the noise floor measured by comparing the
-- WebSocket path with itself, and the mismatch samples new since the previous row (both versions
-- and a field-level diff).
-- Runs unchanged on Supabase, plain PostgreSQL 15+ and PGlite, and is idempotent.

create table if not exists public.consistency_reports (
  id bigint generated always as identity primary key,
  at timestamptz not null default now(),
  window_ms integer not null check (window_ms > 0),
  path text not null check (path in ('realtime', 'websocket')),
  sent bigint not null default 0 check (sent >= 0),
  matched bigint not null default 0 check (matched >= 0),
  missing bigint not null default 0 check (missing >= 0),
  duplicated bigint not null default 0 check (duplicated >= 0),
  reordered bigint not null default 0 check (reordered >= 0),
  mismatched bigint not null default 0 check (mismatched >= 0),
  late bigint not null default 0 check (late >= 0),
  unexpected bigint not null default 0 check (unexpected >= 0),
  consistency_pct numeric check (consistency_pct between 0 and 100),
  p50_ms double precision,
  p95_ms double precision,
  p99_ms double precision,
  noise_floor_pct numeric check (noise_floor_pct between 0 and 100),
  samples jsonb not null default '[]' check (jsonb_typeof(samples) = 'array')
);

create index if not exists consistency_reports_at_idx on public.consistency_reports (at);

-- Same access as monitoring_events: the relay (service_role, or the table's owner) writes, signed-in
-- users read, anon sees nothing. The roles come from 20261122000000 (or Supabase).
alter table public.consistency_reports enable row level security;

do $$
begin
  if not exists (select 1 from pg_catalog.pg_roles where rolname = 'service_role')
     or not exists (select 1 from pg_catalog.pg_roles where rolname = 'authenticated') then
    return;
  end if;
  grant select on table public.consistency_reports to authenticated;
  grant select, insert on table public.consistency_reports to service_role;
  if not exists (
    select 1 from pg_catalog.pg_policies
    where schemaname = 'public' and tablename = 'consistency_reports'
      and policyname = 'consistency_reports_service_role_insert'
  ) then
    create policy consistency_reports_service_role_insert on public.consistency_reports
      for insert to service_role with check (true);
  end if;
  if not exists (
    select 1 from pg_catalog.pg_policies
    where schemaname = 'public' and tablename = 'consistency_reports'
      and policyname = 'consistency_reports_authenticated_select'
  ) then
    create policy consistency_reports_authenticated_select on public.consistency_reports
      for select to authenticated using (true);
  end if;
end
$$;
