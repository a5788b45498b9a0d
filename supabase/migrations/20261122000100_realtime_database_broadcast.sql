-- REALTIME_DELIVERY=database: Postgres itself broadcasts every stored event to Supabase Realtime.
--
-- Only where the `realtime` schema exists (Supabase). Everywhere else (plain PostgreSQL, PGlite) this
-- file is a no-op that succeeds, so one migration set runs everywhere. Idempotent (safe to run twice);
-- the relay's runner wraps it in a transaction, and so does `supabase db push`.
--
-- What it creates on Supabase:
--   monitoring_relay.realtime_delivery   one-row config (enabled, topic, private), written by the relay
--                                         at start (Store#setRealtimeDelivery); seeded disabled.
--   public.monitoring_events_broadcast() trigger function (SECURITY DEFINER, search_path '').
--   monitoring_events_broadcast          AFTER INSERT ... FOR EACH ROW trigger on public.monitoring_events.
--
-- What a dashboard receives: on the channel named by the config's topic (REALTIME_CHANNEL, default
-- `monitoring`), a broadcast with event `monitoring_events` and the same payload shape the relay's own
-- broadcast mode sends, a batch of one:
--   { "first_seq": <seq>, "last_seq": <seq>, "events": [ { id, seq, event_type, timestamp, source, data, metadata } ],
--     "id": <uuid of the realtime.messages row, added by realtime.send> }
-- `timestamp` is UTC with milliseconds ('2026-01-01T00:00:00.123Z'), as the relay sends it.
-- We call realtime.send rather than realtime.broadcast_changes: broadcast_changes wraps the row as
-- { record, old_record, operation, table, schema } and always sends to private channels, so dashboards
-- would need a second code path; realtime.send lets us keep the relay's event name and batch shape and
-- honour REALTIME_PRIVATE.
--
-- One message per inserted row: rows skipped by INSERT ... ON CONFLICT (id) DO NOTHING (replays of
-- already stored events) fire no AFTER INSERT row trigger, so a replay never broadcasts twice.
-- The trigger does nothing unless the config row says enabled, so a relay in broadcast mode (which
-- sends the batches itself) never causes double delivery.
-- realtime.send traps its own errors and turns them into a WARNING, so a failing broadcast never makes
-- the insert (the durable store) fail; the trigger also returns early when realtime.send is missing.

do $migration$
begin
  if not exists (select 1 from pg_catalog.pg_namespace where nspname = 'realtime') then
    raise notice 'schema realtime not found (not Supabase): database broadcast not installed';
    return;
  end if;

  -- `supabase db push` does not run the relay's bookkeeping, which creates this schema elsewhere.
  create schema if not exists monitoring_relay;

  create table if not exists monitoring_relay.realtime_delivery (
    id boolean primary key default true check (id),
    enabled boolean not null default false,
    topic text not null default 'monitoring' check (topic <> ''),
    private boolean not null default false,
    updated_at timestamptz not null default now()
  );
  insert into monitoring_relay.realtime_delivery (id) values (true) on conflict (id) do nothing;
  -- Written by the relay's database role (the owner) only; never exposed to API roles.
  revoke all on table monitoring_relay.realtime_delivery from public, anon, authenticated;

  -- SECURITY DEFINER: the message is written with the function owner's rights (postgres on Supabase),
  -- whichever role inserted the event; search_path is pinned empty, so every name is qualified.
  create or replace function public.monitoring_events_broadcast()
  returns trigger
  language plpgsql
  security definer
  set search_path = ''
  as $fn$
  declare
    cfg record;
  begin
    select d.enabled, d.topic, d.private into cfg
    from monitoring_relay.realtime_delivery d
    where d.id;
    if not found or not cfg.enabled then
      return null;
    end if;
    if pg_catalog.to_regprocedure('realtime.send(jsonb,text,text,boolean)') is null then
      return null;
    end if;
    perform realtime.send(
      pg_catalog.jsonb_build_object(
        'first_seq', new.seq,
        'last_seq', new.seq,
        'events', pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
          'id', new.id,
          'seq', new.seq,
          'event_type', new.event_type,
          'timestamp', pg_catalog.to_char(new."timestamp" at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
          'source', new.source,
          'data', new.data,
          'metadata', new.metadata
        ))
      ),
      'monitoring_events',
      cfg.topic,
      cfg.private
    );
    return null;
  end
  $fn$;
  -- A trigger function is not an API: keep it out of PostgREST's RPC surface (firing it as a trigger
  -- needs no EXECUTE privilege).
  revoke all on function public.monitoring_events_broadcast() from public, anon, authenticated;

  if not exists (
    select 1 from pg_catalog.pg_trigger
    where tgrelid = 'public.monitoring_events'::regclass and tgname = 'monitoring_events_broadcast'
  ) then
    create trigger monitoring_events_broadcast
      after insert on public.monitoring_events
      for each row execute function public.monitoring_events_broadcast();
  end if;
end
$migration$;
