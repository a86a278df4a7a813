-- The result cache: a generation produced by inference for a deterministic request (explicit seed
-- or greedy) carries a key over the model, prompt and every sampling parameter; an identical
-- request within the TTL reuses it. Rows answered from the cache are marked and carry no key, so
-- the TTL counts from the inference.
alter table generations add column cache_key bytea;
alter table generations add column cached boolean not null default false;
create index generations_cache_key on generations (cache_key, created_at desc)
    where cache_key is not null;
