-- Feature flags: the database tier of the relay's flag service (src/flags).
--
-- Resolution per flag: Redis override > this table > env > built-in default. Each row holds one
-- flag's whole definition (validated by the relay before it writes; a row that does not validate
-- is logged and ignored, so the flag falls back to the lower tiers).
-- Every insert, update and delete notifies channel `feature_flags` with the flag's key, so every
-- relay LISTENing reloads that flag at once; a row edited by hand (SQL editor, Supabase Studio)
-- propagates the same way.
-- Runs unchanged on Supabase, plain PostgreSQL 15+ and PGlite, and is idempotent.

create table if not exists public.feature_flags (
  key text primary key check (key ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$'),
  definition jsonb not null check (jsonb_typeof(definition) = 'object'),
  updated_at timestamptz not null default now(),
  updated_by text not null
);

-- The relay (the table's owner, or service_role) reads and writes it; the API roles never see it.
-- Row level security with no policy for them keeps PostgREST from exposing it on Supabase. The
-- roles come from 20261122000000 (or Supabase); without them there is nobody to keep out.
alter table public.feature_flags enable row level security;

do $$
begin
  if exists (select 1 from pg_catalog.pg_roles where rolname = 'anon')
     and exists (select 1 from pg_catalog.pg_roles where rolname = 'authenticated') then
    revoke all on table public.feature_flags from anon, authenticated;
  end if;
  if not exists (select 1 from pg_catalog.pg_roles where rolname = 'service_role') then
    return;
  end if;
  grant select, insert, update, delete on table public.feature_flags to service_role;
  if not exists (
    select 1 from pg_catalog.pg_policies
    where schemaname = 'public' and tablename = 'feature_flags' and policyname = 'feature_flags_service_role_all'
  ) then
    create policy feature_flags_service_role_all on public.feature_flags
      for all to service_role using (true) with check (true);
  end if;
end
$$;

-- One notification per changed row; NOTIFY is delivered at commit, so a listener that reloads the
-- key reads the committed row. Payload: the key (at most 128 characters, far below the 8000-byte limit).
create or replace function public.feature_flags_notify()
returns trigger
language plpgsql
set search_path = ''
as $fn$
begin
  perform pg_catalog.pg_notify('feature_flags', coalesce(new.key, old.key));
  return null;
end
$fn$;
-- A trigger function is not an API (firing it as a trigger needs no EXECUTE privilege); Supabase's
-- default privileges grant EXECUTE to anon and authenticated, so take it from them by name.
revoke all on function public.feature_flags_notify() from public;
do $$
begin
  if exists (select 1 from pg_catalog.pg_roles where rolname = 'anon')
     and exists (select 1 from pg_catalog.pg_roles where rolname = 'authenticated') then
    revoke all on function public.feature_flags_notify() from anon, authenticated;
  end if;
end
$$;

do $$
begin
  if not exists (
    select 1 from pg_catalog.pg_trigger
    where tgrelid = 'public.feature_flags'::regclass and tgname = 'feature_flags_notify'
  ) then
    create trigger feature_flags_notify
      after insert or update or delete on public.feature_flags
      for each row execute function public.feature_flags_notify();
  end if;
end
$$;
