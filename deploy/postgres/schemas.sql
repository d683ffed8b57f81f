-- Baladiya's roles and schemas, run once by CloudNativePG in the `baladiya`
-- database as a superuser right after initdb (postInitApplicationSQLRefs in
-- cluster.yaml); tests/src/deploy_it.rs runs the same file against a scratch
-- database and checks each service can migrate, seed and run with its own role
-- and cannot read another service's schema.
--
-- One role per service, owning that service's schema: a compromised service
-- reaches its own tables and nothing else. The roles start without LOGIN;
-- CloudNativePG's managed roles (cluster.yaml) give them LOGIN and the passwords
-- in the Secrets baladiya-db-<service>. The database owner `baladiya` is a member
-- of every service role: it runs the all-in-one topology.

CREATE ROLE baladiya_partners NOLOGIN;
CREATE ROLE baladiya_intake NOLOGIN;
CREATE ROLE baladiya_routing NOLOGIN;
CREATE ROLE baladiya_licensing NOLOGIN;
CREATE ROLE baladiya_sla_watcher NOLOGIN;
CREATE ROLE baladiya_kpi NOLOGIN;

CREATE SCHEMA partners AUTHORIZATION baladiya_partners;
CREATE SCHEMA intake AUTHORIZATION baladiya_intake;
CREATE SCHEMA routing AUTHORIZATION baladiya_routing;
CREATE SCHEMA licensing AUTHORIZATION baladiya_licensing;
CREATE SCHEMA sla_watcher AUTHORIZATION baladiya_sla_watcher;
CREATE SCHEMA kpi AUTHORIZATION baladiya_kpi;

GRANT baladiya_partners, baladiya_intake, baladiya_routing, baladiya_licensing,
      baladiya_sla_watcher, baladiya_kpi TO baladiya;

-- Nobody else connects, and nobody creates objects in `public`.
DO $$
BEGIN
  EXECUTE format('REVOKE ALL ON DATABASE %I FROM PUBLIC', current_database());
  EXECUTE format('GRANT CONNECT ON DATABASE %I TO baladiya_partners, baladiya_intake, '
                 'baladiya_routing, baladiya_licensing, baladiya_sla_watcher, baladiya_kpi',
                 current_database());
  -- `baladiya kpi rebuild` builds the projection in a scratch schema beside kpi.
  EXECUTE format('GRANT CREATE ON DATABASE %I TO baladiya_kpi', current_database());
END
$$;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
