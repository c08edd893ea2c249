-- v1.1 section 8 / issue 10: the analyst role cannot stall or block the projector.
-- 1. Advisory locks are how projectors own partitions and how a batch shares the
--    projection with rebuild's swap: an analyst holding one could stop the projection. The
--    lock functions are revoked from PUBLIC in this database and granted to the role that
--    migrates (the projector's, which owns the tables). pg_catalog's functions belong to
--    the bootstrap superuser: a migrating role that is not a superuser cannot revoke them,
--    and the migration says so (NOTICE) instead of failing; docs/schema.md has the SQL to
--    run once as a superuser.
-- 2. The analyst role gets a statement timeout (30 s) and a connection limit (10); roles
--    are cluster-wide, and ALTER ROLE needs CREATEROLE: otherwise a NOTICE, as above.
DO $$
DECLARE
  f text;
BEGIN
  FOREACH f IN ARRAY ARRAY[
    'pg_advisory_lock(bigint)', 'pg_advisory_lock(integer, integer)',
    'pg_advisory_lock_shared(bigint)', 'pg_advisory_lock_shared(integer, integer)',
    'pg_advisory_xact_lock(bigint)', 'pg_advisory_xact_lock(integer, integer)',
    'pg_advisory_xact_lock_shared(bigint)', 'pg_advisory_xact_lock_shared(integer, integer)',
    'pg_try_advisory_lock(bigint)', 'pg_try_advisory_lock(integer, integer)',
    'pg_try_advisory_lock_shared(bigint)', 'pg_try_advisory_lock_shared(integer, integer)',
    'pg_try_advisory_xact_lock(bigint)', 'pg_try_advisory_xact_lock(integer, integer)',
    'pg_try_advisory_xact_lock_shared(bigint)',
    'pg_try_advisory_xact_lock_shared(integer, integer)']
  LOOP
    BEGIN
      EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f);
      EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', f, current_user);
    EXCEPTION WHEN insufficient_privilege THEN
      RAISE NOTICE 'duologue: % stays executable by every role (run docs/schema.md''s '
                   'hardening as a superuser)', f;
    END;
  END LOOP;
  BEGIN
    ALTER ROLE duologue_analyst SET statement_timeout = '30s';
    ALTER ROLE duologue_analyst SET idle_in_transaction_session_timeout = '60s';
    ALTER ROLE duologue_analyst CONNECTION LIMIT 10;
  EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'duologue: duologue_analyst keeps no statement timeout or connection limit '
                 '(ALTER ROLE needs CREATEROLE)';
  END;
END
$$;
