-- The gateway: API keys and per-user budget overrides.

CREATE TABLE api_keys (
    id           VARCHAR PRIMARY KEY,
    user_id      VARCHAR NOT NULL,
    public_id    VARCHAR NOT NULL,
    key_hash     BLOB NOT NULL UNIQUE,
    name         VARCHAR NOT NULL,
    scopes       VARCHAR NOT NULL,
    expires_at   TIMESTAMP,
    created_at   TIMESTAMP NOT NULL,
    last_used_at TIMESTAMP,
    revoked_at   TIMESTAMP
);
CREATE INDEX api_keys_user ON api_keys (user_id);

CREATE TABLE user_budgets (
    user_id          VARCHAR PRIMARY KEY,
    daily_nanousd    BIGINT,
    monthly_nanousd  BIGINT,
    daily_requests   BIGINT,
    monthly_requests BIGINT,
    updated_at       TIMESTAMP NOT NULL
);
