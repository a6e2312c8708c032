-- Accounts, sessions and the audit log.
-- Ids are UUIDv7 text, timestamps are UTC. DuckDB cannot cascade deletes, so the
-- store deletes a user's refresh tokens itself and there are no foreign keys.

CREATE TABLE users (
    id                 VARCHAR PRIMARY KEY,
    email              VARCHAR NOT NULL UNIQUE,
    password_hash      VARCHAR NOT NULL,
    role               VARCHAR NOT NULL CHECK (role IN ('user', 'admin')),
    created_at         TIMESTAMP NOT NULL,
    updated_at         TIMESTAMP NOT NULL,
    tokens_valid_after TIMESTAMP NOT NULL
);

CREATE TABLE refresh_tokens (
    id                VARCHAR PRIMARY KEY,
    family_id         VARCHAR NOT NULL,
    user_id           VARCHAR NOT NULL,
    token_hash        BLOB NOT NULL UNIQUE,
    created_at        TIMESTAMP NOT NULL,
    expires_at        TIMESTAMP NOT NULL,
    family_expires_at TIMESTAMP NOT NULL,
    used_at           TIMESTAMP,
    revoked_at        TIMESTAMP
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user ON refresh_tokens (user_id);

CREATE TABLE audit_log (
    id         VARCHAR PRIMARY KEY,
    occurred_at TIMESTAMP NOT NULL,
    event      VARCHAR NOT NULL,
    user_id    VARCHAR,
    actor_id   VARCHAR,
    ip         VARCHAR,
    request_id VARCHAR,
    details    VARCHAR NOT NULL
);
CREATE INDEX audit_log_occurred_at ON audit_log (occurred_at);

CREATE TABLE server_secrets (
    name       VARCHAR PRIMARY KEY,
    value      BLOB NOT NULL,
    created_at TIMESTAMP NOT NULL
);
