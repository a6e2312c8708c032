-- Usage records without a primary key. Its index (an ART over the text ids) was
-- most of the cost of appending a record (callgrind: about 20,000 instructions a
-- row, more than the row itself) and kept every id in memory as the table grew.
-- The ids are UUIDv7 that atelier makes, unique by construction, and nothing
-- looks a record up by its id. DuckDB cannot drop a primary key, so the table is
-- rebuilt, in this migration's transaction.
CREATE TABLE generations_v4 (
    id                VARCHAR NOT NULL,
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
INSERT INTO generations_v4 SELECT * FROM generations ORDER BY id;
DROP TABLE generations;
ALTER TABLE generations_v4 RENAME TO generations;
