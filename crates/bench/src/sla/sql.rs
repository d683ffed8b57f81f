//! The SQL that clones the template clock a million times and later moves
//! the burst's clocks into place. Built from a few `macro_rules!` fragments
//! with `concat!` so each statement is one constant string; kept apart
//! because the statements are long and are read on their own.

/// The clones' ids and shifts, for clones `$1 <= n < $2`: clone n is the
/// template moved by `shift`. Burst clones (every `$3`-th, the first `$4`)
/// are parked at `$5 + k × $6` seconds from the template's breach, and the
/// others are at `$7 + n × $8`. `$9` and `$10` are the clock and subject id
/// prefixes.
macro_rules! clones {
    () => {
        "WITH s AS (
             SELECT n,
                    ($9::text || lpad(to_hex(n), 12, '0'))::uuid AS id,
                    ($10::text || lpad(to_hex(n), 12, '0'))::uuid AS subject_id,
                    make_interval(secs => CASE WHEN n % $3::int = 0 AND n / $3::int < $4::int
                                               THEN $5::float8 + (n / $3::int) * $6::float8
                                               ELSE $7::float8 + n * $8::float8 END) AS shift
             FROM generate_series($1::int, $2::int - 1) AS n) "
    };
}

/// A clock's inputs (`[[kind, instant], …]`) with every instant moved by `$shift`.
macro_rules! shifted_inputs {
    ($inputs:literal, $shift:literal) => {
        concat!(
            "(SELECT coalesce(jsonb_agg(jsonb_build_array(i.e->>0, (i.e->>1)::timestamptz + ",
            $shift,
            ") ORDER BY i.o), '[]'::jsonb) FROM jsonb_array_elements(",
            $inputs,
            ") WITH ORDINALITY AS i(e, o))"
        )
    };
}

/// Clones the template clock `$11`.
pub(super) const INSERT_CLOCKS: &str = concat!(
    clones!(),
    "INSERT INTO sla_watcher.clocks (id, key, subject_kind, subject_id, metric, partner_code,
         agreement_version, calendar_id, target_secs, warn_at, ladder, tracking_number,
         municipality_code, category_code, inputs, state, elapsed_secs, deadline,
         original_deadline, breached_at, started_at, ended_at, updated_at)
     SELECT s.id, s.subject_id::text || substr(t.key, position(':' in t.key)), t.subject_kind,
            s.subject_id, t.metric, t.partner_code, t.agreement_version, t.calendar_id,
            t.target_secs, t.warn_at, t.ladder, t.tracking_number || '-' || s.n,
            t.municipality_code, t.category_code, ",
    shifted_inputs!("t.inputs", "s.shift"),
    ", t.state, t.elapsed_secs, t.deadline + s.shift, t.original_deadline + s.shift,
            t.breached_at + s.shift, t.started_at + s.shift, NULL, now()
     FROM s CROSS JOIN sla_watcher.clocks AS t
     WHERE t.id = $11::uuid"
);

/// Gives every clone the template's timers (`$11` kinds, `$12` seqs, `$13`
/// due instants), clone by clone in id order.
pub(super) const INSERT_TIMERS: &str = concat!(
    clones!(),
    "INSERT INTO sla_watcher.timers (clock_id, kind, seq, due_at)
     SELECT s.id, unnest($11::text[]), unnest($12::int[]), unnest($13::timestamptz[]) + s.shift
     FROM s"
);

/// The burst's clocks: prefix `$1`, every `$2`-th clone, `$3` of them.
macro_rules! burst {
    () => {
        "WITH b AS (
             SELECT ($1::text || lpad(to_hex(k * $2::int), 12, '0'))::uuid AS id
             FROM generate_series(0, $3::int - 1) AS k) "
    };
}

/// Moves the burst's clocks by `$4` seconds.
pub(super) const MOVE_CLOCKS: &str = concat!(
    burst!(),
    "UPDATE sla_watcher.clocks AS c
     SET deadline = c.deadline + make_interval(secs => $4::float8),
         original_deadline = c.original_deadline + make_interval(secs => $4::float8),
         breached_at = c.breached_at + make_interval(secs => $4::float8),
         started_at = c.started_at + make_interval(secs => $4::float8),
         inputs = ",
    shifted_inputs!("c.inputs", "make_interval(secs => $4::float8)"),
    ", updated_at = now()
     FROM b WHERE c.id = b.id"
);

/// Moves the burst's timers by `$4` seconds. Those now in the past (the
/// warnings; never the breach) count as fired, as they would have.
pub(super) const MOVE_TIMERS: &str = concat!(
    burst!(),
    "UPDATE sla_watcher.timers AS t
     SET due_at = t.due_at + make_interval(secs => $4::float8),
         fired_at = CASE WHEN t.kind <> 'breach'
                          AND t.due_at + make_interval(secs => $4::float8) < now()
                         THEN t.due_at + make_interval(secs => $4::float8) END
     FROM b WHERE t.clock_id = b.id"
);
