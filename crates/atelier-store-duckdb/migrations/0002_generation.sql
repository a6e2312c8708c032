-- Generation: conversations, media, usage records, video jobs, run-time settings.

CREATE TABLE conversations (
    id         VARCHAR PRIMARY KEY,
    user_id    VARCHAR NOT NULL,
    title      VARCHAR NOT NULL,
    model      VARCHAR,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE INDEX conversations_user ON conversations (user_id);

CREATE TABLE messages (
    id              VARCHAR PRIMARY KEY,
    conversation_id VARCHAR NOT NULL,
    role            VARCHAR NOT NULL,
    content         VARCHAR NOT NULL,
    status          VARCHAR NOT NULL,
    model           VARCHAR,
    error           VARCHAR,
    created_at      TIMESTAMP NOT NULL
);
CREATE INDEX messages_conversation ON messages (conversation_id);

CREATE TABLE media (
    id            VARCHAR PRIMARY KEY,
    user_id       VARCHAR NOT NULL,
    kind          VARCHAR NOT NULL,
    content_type  VARCHAR NOT NULL,
    size_bytes    BIGINT NOT NULL,
    storage_key   VARCHAR NOT NULL,
    generation_id VARCHAR,
    created_at    TIMESTAMP NOT NULL
);
CREATE INDEX media_user ON media (user_id);

-- Append-only, written in batches (appender): no secondary index to maintain.
CREATE TABLE generations (
    id                VARCHAR PRIMARY KEY,
    user_id           VARCHAR NOT NULL,
    kind              VARCHAR NOT NULL,
    model_requested   VARCHAR NOT NULL,
    model_served      VARCHAR,
    status            VARCHAR NOT NULL,
    prompt_tokens     BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    cost_nanousd      BIGINT NOT NULL,
    latency_ms        BIGINT NOT NULL,
    error             VARCHAR,
    summary           VARCHAR NOT NULL,
    conversation_id   VARCHAR,
    media_ids         VARCHAR NOT NULL,
    created_at        TIMESTAMP NOT NULL
);

CREATE TABLE video_jobs (
    id               VARCHAR PRIMARY KEY,
    user_id          VARCHAR NOT NULL,
    generation_id    VARCHAR NOT NULL,
    model            VARCHAR NOT NULL,
    prompt           VARCHAR NOT NULL,
    params           VARCHAR NOT NULL,
    upstream_id      VARCHAR NOT NULL,
    polling_url      VARCHAR,
    status           VARCHAR NOT NULL,
    error            VARCHAR,
    media_id         VARCHAR,
    cost_nanousd     BIGINT,
    polls            INTEGER NOT NULL,
    next_poll_at     TIMESTAMP NOT NULL,
    lease_owner      VARCHAR,
    lease_expires_at TIMESTAMP,
    created_at       TIMESTAMP NOT NULL,
    updated_at       TIMESTAMP NOT NULL,
    finished_at      TIMESTAMP
);
CREATE INDEX video_jobs_user ON video_jobs (user_id);

CREATE TABLE server_settings (
    name       VARCHAR PRIMARY KEY,
    value      VARCHAR NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
