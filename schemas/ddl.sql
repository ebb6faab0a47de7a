-- DuckDB schema of tao-loop. Applied by the collector (the only writer) at start.
-- Idempotent: every statement may run again on an existing file.

-- One row per ChatCompleted event; raw is the event exactly as produced.
CREATE TABLE IF NOT EXISTS completions (
    event_id       VARCHAR PRIMARY KEY,
    completion_id  VARCHAR NOT NULL UNIQUE,
    occurred_at    TIMESTAMPTZ NOT NULL,
    tenant         VARCHAR NOT NULL,
    model_version  VARCHAR NOT NULL,
    task           VARCHAR,
    messages       JSON NOT NULL,
    params         JSON NOT NULL,
    response       VARCHAR NOT NULL,      -- text of choice 0, the served answer
    choices        JSON NOT NULL,
    prompt_tokens  INTEGER,
    completion_tokens INTEGER,
    latency_ms     DOUBLE,
    stream         BOOLEAN,
    raw            VARCHAR NOT NULL
);

-- A feedback_id is the client's, so it is unique per tenant only: another tenant reusing
-- one must not drop yours. (Files made before had feedback_id UNIQUE alone: CREATE TABLE IF
-- NOT EXISTS leaves them as they are, and feedback.store migrates them when it opens one.)
CREATE TABLE IF NOT EXISTS feedback (
    event_id       VARCHAR PRIMARY KEY,
    feedback_id    VARCHAR NOT NULL,
    completion_id  VARCHAR NOT NULL,
    occurred_at    TIMESTAMPTZ NOT NULL,
    tenant         VARCHAR NOT NULL,
    kind           VARCHAR NOT NULL,
    value          JSON NOT NULL,
    choice_index   INTEGER NOT NULL,
    raw            VARCHAR NOT NULL,
    UNIQUE (tenant, feedback_id)
);

-- Model registry, written from ModelPromoted / ModelRolledBack events on tao.control.
CREATE TABLE IF NOT EXISTS model_events (
    event_id       VARCHAR PRIMARY KEY,
    occurred_at    TIMESTAMPTZ NOT NULL,
    type           VARCHAR NOT NULL,
    version        VARCHAR NOT NULL,
    artifact_path  VARCHAR NOT NULL,
    swap_mode      VARCHAR NOT NULL,
    parent         VARCHAR,
    cycle_id       VARCHAR,
    metrics        JSON,
    raw            VARCHAR NOT NULL
);

-- Consumed positions, written in the same transaction as the rows they produced.
CREATE TABLE IF NOT EXISTS consumer_offsets (
    topic          VARCHAR NOT NULL,
    partition      INTEGER NOT NULL,
    next_offset    BIGINT NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (topic, partition)
);

-- One row per TAO cycle; stage outputs below are keyed by cycle_id.
CREATE TABLE IF NOT EXISTS cycles (
    cycle_id       VARCHAR PRIMARY KEY,
    started_at     TIMESTAMPTZ NOT NULL,
    finished_at    TIMESTAMPTZ,
    status         VARCHAR NOT NULL,     -- running | promoted | skipped | failed | interrupted
    reason         VARCHAR,
    watermark      TIMESTAMPTZ,          -- newest completion this cycle considered
    version        VARCHAR,
    report         JSON
);

CREATE TABLE IF NOT EXISTS cycle_candidates (
    cycle_id       VARCHAR NOT NULL,
    prompt_id      VARCHAR NOT NULL,     -- completion_id of the logged prompt
    strategy       VARCHAR NOT NULL,
    text           VARCHAR NOT NULL,
    score          DOUBLE,
    scores         JSON
);

CREATE TABLE IF NOT EXISTS cycle_pairs (
    cycle_id       VARCHAR NOT NULL,
    prompt_id      VARCHAR NOT NULL,
    prompt         JSON NOT NULL,
    chosen         VARCHAR NOT NULL,
    rejected       VARCHAR NOT NULL,
    margin         DOUBLE NOT NULL
);

-- Fingerprint of the record at next_offset - 1: on start the collector reads that record
-- again and compares, so a broker that lost its log (Tansu restarted: offsets start at 0
-- again and soon pass the old ones) is noticed and re-read instead of silently skipped.
ALTER TABLE consumer_offsets ADD COLUMN IF NOT EXISTS last_record VARCHAR;
