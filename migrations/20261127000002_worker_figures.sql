-- What each worker's heartbeat reports of its engine, for the dashboard: slots holding a sequence,
-- and tokens sampled since it started (tokens/s is the change between two beats).
alter table workers add column slots_busy int not null default 0,
                    add column generated_tokens bigint not null default 0;
