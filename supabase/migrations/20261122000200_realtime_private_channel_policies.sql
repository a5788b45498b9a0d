-- Realtime Authorization for the relay's private channel (REALTIME_PRIVATE=true).
--
-- Supabase Realtime decides who may join a private channel by running a query on realtime.messages as
-- the joining user's role, with realtime.topic() returning the channel's topic, and rolling it back.
-- These row level security policies say:
--   * authenticated (a signed-in dashboard) may receive broadcasts on the relay's topic;
--   * only service_role (the relay, server side) may send on it. Supabase's service_role has
--     BYPASSRLS, so on Supabase it needs no policy; the insert policy states the intent and covers a
--     database where service_role does not bypass RLS. No other role gets an insert policy, so with
--     row level security on (Supabase enables it on realtime.messages) every other insert is refused.
-- The topic is not written into the policies: they compare realtime.topic() with the relay's
-- configured channel, read from monitoring_relay.realtime_delivery (created by 20261122000100 and
-- kept up to date by the relay at start from REALTIME_CHANNEL, default `monitoring`), so a
-- non-default REALTIME_CHANNEL needs no policy change.
-- Private delivery also needs "Allow public access" turned off in the project's Realtime settings,
-- and dashboards must join with { config: { private: true } } and a user's access token.
--
-- Only where realtime.messages exists (Supabase); elsewhere (plain PostgreSQL, PGlite) a no-op that
-- succeeds. Idempotent: each policy is created only when absent.

do $migration$
begin
  if to_regclass('realtime.messages') is null then
    raise notice 'realtime.messages not found (not Supabase): private channel policies not installed';
    return;
  end if;
  if to_regclass('monitoring_relay.realtime_delivery') is null then
    raise notice 'monitoring_relay.realtime_delivery not found (20261122000100 skipped?): private channel policies not installed';
    return;
  end if;

  -- The relay's topic, readable inside a policy evaluated as authenticated, which has no privilege
  -- on the config table itself.
  create or replace function monitoring_relay.realtime_topic()
  returns text
  language sql
  stable
  security definer
  set search_path = ''
  as $fn$
    select coalesce(
      (select d.topic from monitoring_relay.realtime_delivery d where d.id),
      'monitoring'
    )
  $fn$;
  revoke all on function monitoring_relay.realtime_topic() from public, anon;
  grant usage on schema monitoring_relay to authenticated, service_role;
  grant execute on function monitoring_relay.realtime_topic() to authenticated, service_role;

  if not exists (
    select 1 from pg_catalog.pg_policies
    where schemaname = 'realtime' and tablename = 'messages'
      and policyname = 'monitoring_relay_authenticated_receive'
  ) then
    create policy monitoring_relay_authenticated_receive on realtime.messages
      for select to authenticated
      using (
        realtime.topic() = (select monitoring_relay.realtime_topic())
        and realtime.messages.extension in ('broadcast')
      );
  end if;

  if not exists (
    select 1 from pg_catalog.pg_policies
    where schemaname = 'realtime' and tablename = 'messages'
      and policyname = 'monitoring_relay_service_role_send'
  ) then
    create policy monitoring_relay_service_role_send on realtime.messages
      for insert to service_role
      with check (
        realtime.topic() = (select monitoring_relay.realtime_topic())
        and realtime.messages.extension in ('broadcast')
      );
  end if;
end
$migration$;
