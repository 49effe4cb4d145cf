-- The reference API's ledger: accounts, transfers between them, and the idempotency keys
-- that make a retried transfer return its first answer instead of moving money twice.

CREATE TABLE accounts (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name            TEXT NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    initial_balance BIGINT NOT NULL CHECK (initial_balance >= 0),
    balance         BIGINT NOT NULL CHECK (balance >= 0),
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE transfers (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    from_account BIGINT NOT NULL REFERENCES accounts (id),
    to_account   BIGINT NOT NULL REFERENCES accounts (id),
    amount       BIGINT NOT NULL CHECK (amount > 0),
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK (from_account <> to_account)
);

-- An account's transfers, newest first, in both directions.
CREATE INDEX transfers_from_account ON transfers (from_account, id);
CREATE INDEX transfers_to_account ON transfers (to_account, id);

CREATE TABLE idempotency_keys (
    key         TEXT PRIMARY KEY,
    -- What the first request asked for; the same key with another request is refused.
    fingerprint TEXT NOT NULL,
    status      SMALLINT NOT NULL,
    response    JSONB NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
