-- The claim (repository.claim_due_deliveries) visits each endpoint with open deliveries (a skip scan
-- over endpoint_id) and reads, per endpoint, its live leases (status 'in_flight') and its first due
-- pending rows in claim order (next_attempt_at, id): each an index range of this one index, stopped
-- by the endpoint's free slots. So a claim no longer reads a busy endpoint's whole backlog (it walked
-- deliveries_due in next_attempt_at order across all endpoints and dropped the rows it could not
-- take). This index also serves the backlog gauge (status IN both) and an endpoint's cancel/resume,
-- so it replaces 0001's deliveries_due (next_attempt_at, pending) and deliveries_leased
-- (lease_expires_at, in_flight), which nothing else reads.
CREATE INDEX deliveries_open_by_endpoint ON deliveries (endpoint_id, status, next_attempt_at, id)
    WHERE status IN ('pending', 'in_flight');
DROP INDEX deliveries_due;
DROP INDEX deliveries_leased;
