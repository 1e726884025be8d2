-- The baseline: a table-based fixed-window limiter in PL/pgSQL, the kind of
-- thing teams write by hand.  One row per model holds the limits and the
-- counters of the current minute and day; a lease table holds open leases.
SET client_min_messages = warning;
DROP TABLE IF EXISTS pl_limits, pl_leases;
CREATE TABLE pl_limits (
	model text PRIMARY KEY,
	rpm bigint, tpm bigint, rpd bigint, tpd bigint, max_concurrent integer,
	minute_start timestamptz NOT NULL DEFAULT '-infinity',
	req_minute bigint NOT NULL DEFAULT 0, tok_minute bigint NOT NULL DEFAULT 0,
	day_start timestamptz NOT NULL DEFAULT '-infinity',
	req_day bigint NOT NULL DEFAULT 0, tok_day bigint NOT NULL DEFAULT 0,
	in_flight integer NOT NULL DEFAULT 0
);
CREATE TABLE pl_leases (
	lease_id bigserial PRIMARY KEY,
	model text NOT NULL,
	tokens bigint NOT NULL,
	minute_start timestamptz NOT NULL,
	day_start timestamptz NOT NULL
);

CREATE OR REPLACE FUNCTION pl_acquire(p_model text, p_tokens bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
	l pl_limits;
	now_utc timestamp := clock_timestamp() AT TIME ZONE 'UTC';
	m timestamptz := date_trunc('minute', now_utc) AT TIME ZONE 'UTC';
	d timestamptz := date_trunc('day', now_utc) AT TIME ZONE 'UTC';
	id bigint;
BEGIN
	SELECT * INTO l FROM pl_limits WHERE model = p_model FOR UPDATE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'unknown model %', p_model;
	END IF;
	IF l.minute_start <> m THEN
		l.minute_start := m; l.req_minute := 0; l.tok_minute := 0;
	END IF;
	IF l.day_start <> d THEN
		l.day_start := d; l.req_day := 0; l.tok_day := 0;
	END IF;
	IF l.req_minute + 1 > l.rpm OR l.tok_minute + p_tokens > l.tpm
		OR l.req_day + 1 > l.rpd OR l.tok_day + p_tokens > l.tpd
		OR l.in_flight + 1 > l.max_concurrent THEN
		RETURN NULL;
	END IF;
	UPDATE pl_limits
	SET minute_start = m, req_minute = l.req_minute + 1, tok_minute = l.tok_minute + p_tokens,
		day_start = d, req_day = l.req_day + 1, tok_day = l.tok_day + p_tokens,
		in_flight = l.in_flight + 1
	WHERE model = p_model;
	INSERT INTO pl_leases (model, tokens, minute_start, day_start)
	VALUES (p_model, p_tokens, m, d) RETURNING lease_id INTO id;
	RETURN id;
END
$$;

CREATE OR REPLACE FUNCTION pl_release(p_lease bigint, p_actual bigint) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
	lease pl_leases;
BEGIN
	DELETE FROM pl_leases WHERE lease_id = p_lease RETURNING * INTO lease;
	IF NOT FOUND THEN
		RETURN false;
	END IF;
	UPDATE pl_limits
	SET tok_minute = CASE WHEN minute_start = lease.minute_start
						  THEN greatest(0, tok_minute + p_actual - lease.tokens) ELSE tok_minute END,
		tok_day = CASE WHEN day_start = lease.day_start
					   THEN greatest(0, tok_day + p_actual - lease.tokens) ELSE tok_day END,
		in_flight = in_flight - 1
	WHERE model = lease.model;
	RETURN true;
END
$$;

INSERT INTO pl_limits (model, rpm, tpm, rpd, tpd, max_concurrent)
VALUES ('bench/hot', 1000000000000, 1000000000000000, 10000000000000, 10000000000000000, 1000);
