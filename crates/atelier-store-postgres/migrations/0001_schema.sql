-- The whole schema of atelier on PostgreSQL, at the level of DuckDB's migrations 1-3.
-- Ids are UUIDv7 (time-ordered, so `ORDER BY id` is creation order), times are
-- timestamptz in UTC. Like the DuckDB schema there are no foreign keys: the store
-- deletes a user's rows itself (usage records outlive the user, for accounting),
-- and `atelier db copy` can load tables in any order.

CREATE TABLE users (
    id                 UUID PRIMARY KEY,
    email              TEXT NOT NULL UNIQUE,
    password_hash      TEXT NOT NULL,
    role               TEXT NOT NULL CHECK (role IN ('user', 'admin')),
    created_at         TIMESTAMPTZ NOT NULL,
    updated_at         TIMESTAMPTZ NOT NULL,
    tokens_valid_after TIMESTAMPTZ NOT NULL
);

CREATE TABLE refresh_tokens (
    id                UUID PRIMARY KEY,
    family_id         UUID NOT NULL,
    user_id           UUID NOT NULL,
    token_hash        BYTEA NOT NULL UNIQUE,
    created_at        TIMESTAMPTZ NOT NULL,
    expires_at        TIMESTAMPTZ NOT NULL,
    family_expires_at TIMESTAMPTZ NOT NULL,
    used_at           TIMESTAMPTZ,
    revoked_at        TIMESTAMPTZ
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user ON refresh_tokens (user_id);

CREATE TABLE audit_log (
    id          UUID PRIMARY KEY,
    occurred_at TIMESTAMPTZ NOT NULL,
    event       TEXT NOT NULL,
    user_id     UUID,
    actor_id    UUID,
    ip          TEXT,
    request_id  TEXT,
    details     TEXT NOT NULL
);
CREATE INDEX audit_log_occurred_at ON audit_log (occurred_at);

CREATE TABLE server_secrets (
    name       TEXT PRIMARY KEY,
    value      BYTEA NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE server_settings (
    name       TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE conversations (
    id         UUID PRIMARY KEY,
    user_id    UUID NOT NULL,
    title      TEXT NOT NULL,
    model      TEXT,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX conversations_user ON conversations (user_id, updated_at DESC);

CREATE TABLE messages (
    id              UUID PRIMARY KEY,
    conversation_id UUID NOT NULL,
    role            TEXT NOT NULL,
    content         TEXT NOT NULL,
    status          TEXT NOT NULL,
    model           TEXT,
    error           TEXT,
    created_at      TIMESTAMPTZ NOT NULL
);
CREATE INDEX messages_conversation ON messages (conversation_id, created_at);

CREATE TABLE media (
    id            UUID PRIMARY KEY,
    user_id       UUID NOT NULL,
    kind          TEXT NOT NULL,
    content_type  TEXT NOT NULL,
    size_bytes    BIGINT NOT NULL,
    storage_key   TEXT NOT NULL,
    generation_id UUID,
    created_at    TIMESTAMPTZ NOT NULL
);
CREATE INDEX media_user ON media (user_id);

-- Written in batches by every instance; read per user (history) and by time (reports, budgets).
CREATE TABLE generations (
    id                UUID PRIMARY KEY,
    user_id           UUID NOT NULL,
    kind              TEXT NOT NULL,
    model_requested   TEXT NOT NULL,
    model_served      TEXT,
    status            TEXT NOT NULL,
    prompt_tokens     BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    cost_nanousd      BIGINT NOT NULL,
    latency_ms        BIGINT NOT NULL,
    error             TEXT,
    summary           TEXT NOT NULL,
    conversation_id   UUID,
    media_ids         TEXT NOT NULL,
    created_at        TIMESTAMPTZ NOT NULL
);
CREATE INDEX generations_user ON generations (user_id, id DESC);
CREATE INDEX generations_created_at ON generations (created_at);

CREATE TABLE video_jobs (
    id               UUID PRIMARY KEY,
    user_id          UUID NOT NULL,
    generation_id    UUID NOT NULL,
    model            TEXT NOT NULL,
    prompt           TEXT NOT NULL,
    params           TEXT NOT NULL,
    upstream_id      TEXT NOT NULL,
    polling_url      TEXT,
    status           TEXT NOT NULL,
    error            TEXT,
    media_id         UUID,
    cost_nanousd     BIGINT,
    polls            INTEGER NOT NULL,
    next_poll_at     TIMESTAMPTZ NOT NULL,
    lease_owner      TEXT,
    lease_expires_at TIMESTAMPTZ,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL,
    finished_at      TIMESTAMPTZ
);
CREATE INDEX video_jobs_user ON video_jobs (user_id);
-- What the pollers of every instance scan: only unfinished jobs.
CREATE INDEX video_jobs_due ON video_jobs (next_poll_at) WHERE status IN ('pending', 'in_progress');

CREATE TABLE api_keys (
    id           UUID PRIMARY KEY,
    user_id      UUID NOT NULL,
    public_id    TEXT NOT NULL,
    key_hash     BYTEA NOT NULL UNIQUE,
    name         TEXT NOT NULL,
    scopes       TEXT NOT NULL,
    expires_at   TIMESTAMPTZ,
    created_at   TIMESTAMPTZ NOT NULL,
    last_used_at TIMESTAMPTZ,
    revoked_at   TIMESTAMPTZ
);
CREATE INDEX api_keys_user ON api_keys (user_id);

CREATE TABLE user_budgets (
    user_id          UUID PRIMARY KEY,
    daily_nanousd    BIGINT,
    monthly_nanousd  BIGINT,
    daily_requests   BIGINT,
    monthly_requests BIGINT,
    updated_at       TIMESTAMPTZ NOT NULL
);
