-- Accounts belong to the principal that opened them ("key:<name>", "jwt:<sub>", or
-- "anonymous" on an open instance): another principal neither sees nor debits them. Accounts
-- opened before owners existed were opened anonymously.
ALTER TABLE accounts ADD COLUMN owner TEXT NOT NULL DEFAULT 'anonymous';
ALTER TABLE accounts ALTER COLUMN owner DROP DEFAULT;
-- A principal's accounts in id order (GET /v1/accounts).
CREATE INDEX accounts_owner ON accounts (owner, id);
