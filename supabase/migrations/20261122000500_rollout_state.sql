-- The rollout controller's state, so a restart resumes where the rollout was — never silently
-- at 0 % or 100 %. One row; the relay (service role or the database owner) writes it.
create schema if not exists monitoring_relay;

create table if not exists monitoring_relay.rollout_state (
  id boolean primary key default true check (id),
  state text not null,
  percent integer not null check (percent between 0 and 100),
  stage_index integer not null,
  reason text,
  manual boolean not null default false,
  history jsonb not null default '[]'::jsonb,
  updated_at timestamptz not null default now()
);

alter table monitoring_relay.rollout_state enable row level security;
