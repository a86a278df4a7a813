-- Two lookups whose plans grew with the tables. Prepared statements get a generic plan from their
-- sixth run; on tables without statistics (autovacuum off, or not yet run) it ANDed in an index
-- that matches nearly every row, so each run scanned a whole history. Seen in the fault suite's
-- two hours with autovacuum off: the result cache's lookup went from 9 to 179 ms a call,
-- retention's search for expired jobs from 9 to 210 ms. Each now has an index that answers it
-- alone, and the planner took it on a copy of those tables without statistics (0.2 to 0.3 ms).
--
-- Each new index is built before the old one goes: writes wait during the build (as for any
-- index made in a migration), reads only for the drop and rename at the end.

-- The result cache (`generations::cached`) names the tenant too; `generations_tenant_seq`, a
-- tenant's whole history, was ANDed in.
create index generations_cache_key_tenant on generations (cache_key, tenant, created_at desc)
    where cache_key is not null;
drop index generations_cache_key;
alter index generations_cache_key_tenant rename to generations_cache_key;

-- Retention (`jobs::delete_finished`) names the final statuses; `jobs_status_created_at`, every
-- finished job, was ANDed in. This predicate is the query's own, so the index answers it alone,
-- in `finished_at` order.
create index jobs_finished_at_final on jobs (finished_at)
    where status in ('completed', 'failed', 'cancelled');
drop index jobs_finished_at;
alter index jobs_finished_at_final rename to jobs_finished_at;
