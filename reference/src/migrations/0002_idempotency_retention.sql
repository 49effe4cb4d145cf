-- Idempotency keys are kept for `idempotency.retention`; the prune job finds the old ones by
-- their age. Keys are now scoped to the client ("<client>|<key>"); keys stored before have no
-- scope, match no new request, and age out like the others.
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
