-- Test-only tables of the probe service.
CREATE TABLE notes (
    id         uuid        PRIMARY KEY,
    body       text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- One row per application of a NoteWritten event: exactly-once means one row per note.
CREATE TABLE applications (
    id         bigserial   PRIMARY KEY,
    note_id    uuid        NOT NULL,
    event_id   uuid        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
