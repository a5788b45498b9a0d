-- Monitoring events: the relay's durable store.
-- Runs unchanged on Supabase, plain PostgreSQL 15+ and PGlite, and is idempotent (safe to run twice).
-- The relay's migration runner wraps it in a transaction; so does `supabase db push`.

create table if not exists public.monitoring_events (
  id uuid primary key,
  seq bigint not null unique,
  event_type text not null,
  "timestamp" timestamptz not null,
  source text not null,
  data jsonb not null default '{}',
  metadata jsonb not null default '{}',
  created_at timestamptz not null default now()
);

create index if not exists monitoring_events_timestamp_idx on public.monitoring_events ("timestamp");
create index if not exists monitoring_events_event_type_idx on public.monitoring_events (event_type);
create index if not exists monitoring_events_source_idx on public.monitoring_events (source);
create index if not exists monitoring_events_created_at_idx on public.monitoring_events (created_at);

-- Supabase has these roles already. On plain Postgres create them, tolerating another database on
-- the same cluster creating them at the same moment (roles are cluster-wide).
do $$
declare
  r text;
begin
  foreach r in array array['anon', 'authenticated', 'service_role'] loop
    if not exists (select 1 from pg_catalog.pg_roles where rolname = r) then
      begin
        execute format('create role %I nologin', r);
      exception when duplicate_object or unique_violation then
        null; -- created concurrently: fine
      end;
    end if;
  end loop;
end
$$;

grant usage on schema public to anon, authenticated, service_role;
grant select on table public.monitoring_events to authenticated;
grant select, insert on table public.monitoring_events to service_role;

alter table public.monitoring_events enable row level security;

do $$
begin
  if not exists (
    select 1 from pg_catalog.pg_policies
    where schemaname = 'public' and tablename = 'monitoring_events'
      and policyname = 'monitoring_events_service_role_insert'
  ) then
    create policy monitoring_events_service_role_insert on public.monitoring_events
      for insert to service_role with check (true);
  end if;
  if not exists (
    select 1 from pg_catalog.pg_policies
    where schemaname = 'public' and tablename = 'monitoring_events'
      and policyname = 'monitoring_events_authenticated_select'
  ) then
    create policy monitoring_events_authenticated_select on public.monitoring_events
      for select to authenticated using (true);
  end if;
end
$$;

-- Realtime (postgres_changes) reads the supabase_realtime publication. A publication declared
-- FOR ALL TABLES already covers the table and refuses ADD TABLE.
do $$
begin
  if not exists (select 1 from pg_catalog.pg_publication where pubname = 'supabase_realtime') then
    create publication supabase_realtime;
  end if;
  if not exists (
    select 1 from pg_catalog.pg_publication_tables
    where pubname = 'supabase_realtime' and schemaname = 'public' and tablename = 'monitoring_events'
  ) then
    alter publication supabase_realtime add table public.monitoring_events;
  end if;
end
$$;
