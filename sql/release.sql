-- Release: settling a lease with its actual usage.
SET timezone = 'UTC';
SELECT rl_debug_set_clock('2030-01-01 00:00:05+00');
SELECT rl_define_model('rel/m', rpm => 100, tpm => 10000, rpd => 1000, tpd => 100000,
					   max_concurrent => 10,
					   price_input => 2.50, price_output => 10, price_cached => 1.25);

-- same window: the counters move by actual - estimate (a refund)
SELECT lease_id AS l1 FROM rl_acquire('rel/m', tokens => 1000) \gset
SELECT tokens_minute, tokens_day, in_flight FROM rl_status WHERE model = 'rel/m';
SELECT * FROM rl_release(:l1, input_tokens => 300, output_tokens => 100);
SELECT tokens_minute, tokens_day, in_flight, overage_events FROM rl_status WHERE model = 'rel/m';
-- cost: 300 x 2.50 / 1e6 + 100 x 10 / 1e6 = 0.00075 + 0.001
SELECT cost_today FROM rl_status WHERE model = 'rel/m';

-- releasing again, or an unknown lease, changes nothing
SELECT * FROM rl_release(:l1, input_tokens => 300, output_tokens => 100);
SELECT * FROM rl_release(42);
SELECT tokens_minute, in_flight FROM rl_status WHERE model = 'rel/m';

-- overage in the same window: the counters grow by actual - estimate
SELECT lease_id AS l2 FROM rl_acquire('rel/m', tokens => 100) \gset
SELECT released, tokens_estimated, tokens_actual, tokens_refunded, overage
FROM rl_release(:l2, input_tokens => 150, output_tokens => 100);
SELECT tokens_minute, overage_events, overage_tokens FROM rl_status WHERE model = 'rel/m';

-- cached tokens count when count_cached (the default) ...
SELECT lease_id AS l3 FROM rl_acquire('rel/m', tokens => 500) \gset
SELECT tokens_actual, tokens_refunded, cost
FROM rl_release(:l3, input_tokens => 100, output_tokens => 100, cached_tokens => 200);
-- ... and not when count_cached is false; cached tokens are priced either way
SELECT rl_define_model('rel/m', rpm => 100, tpm => 10000, rpd => 1000, tpd => 100000,
					   max_concurrent => 10,
					   price_input => 2.50, price_output => 10, price_cached => 1.25,
					   count_cached => false);
SELECT lease_id AS l4 FROM rl_acquire('rel/m', tokens => 500) \gset
SELECT tokens_actual, tokens_refunded, cost
FROM rl_release(:l4, input_tokens => 100, output_tokens => 100, cached_tokens => 200);

-- release without actual usage keeps the reservation and frees the slot
SELECT tokens_minute AS before_minute FROM rl_status WHERE model = 'rel/m' \gset
SELECT lease_id AS l5 FROM rl_acquire('rel/m', tokens => 77) \gset
SELECT * FROM rl_release(:l5);
SELECT tokens_minute - :before_minute AS kept, in_flight FROM rl_status WHERE model = 'rel/m';

-- actual requests move the request counters the same way
SELECT requests_minute AS before_requests FROM rl_status WHERE model = 'rel/m' \gset
SELECT lease_id AS l6 FROM rl_acquire('rel/m', tokens => 10, requests => 5) \gset
SELECT released FROM rl_release(:l6, input_tokens => 10, requests => 2);
SELECT requests_minute - :before_requests AS requests_charged FROM rl_status WHERE model = 'rel/m';

-- across windows: acquired in minute 00:00, released in minute 00:01 of the
-- same day.  The minute window has ended: no refund there, and the new
-- minute starts empty.  The day window is the same: refunded.
SELECT rl_define_model('rel/x', tpm => 10000, tpd => 100000);
SELECT lease_id AS x1 FROM rl_acquire('rel/x', tokens => 1000) \gset
SELECT lease_id AS x2 FROM rl_acquire('rel/x', tokens => 1000) \gset
SELECT rl_debug_set_clock('2030-01-01 00:01:05+00');
SELECT tokens_minute, tokens_day FROM rl_status WHERE model = 'rel/x';
SELECT tokens_estimated, tokens_actual, tokens_refunded, overage FROM rl_release(:x1, input_tokens => 400);
SELECT tokens_minute, tokens_day FROM rl_status WHERE model = 'rel/x';
-- an overage after the window ended is charged to the current windows
SELECT tokens_estimated, tokens_actual, tokens_refunded, overage FROM rl_release(:x2, input_tokens => 1300);
SELECT tokens_minute, tokens_day, overage_events, overage_tokens FROM rl_status WHERE model = 'rel/x';

-- across days: no refund anywhere, the day starts empty
SELECT rl_debug_set_clock('2030-01-01 23:59:30+00');
SELECT lease_id AS x3 FROM rl_acquire('rel/x', tokens => 1000, ttl => '1 hour') \gset
SELECT rl_debug_set_clock('2030-01-02 00:00:05+00');
SELECT tokens_estimated, tokens_actual, tokens_refunded FROM rl_release(:x3, input_tokens => 10);
SELECT tokens_minute, tokens_day, cost_today FROM rl_status WHERE model = 'rel/x';

-- an expired lease: release returns false, the concurrency slot is freed and
-- the window reservation kept
SELECT rl_debug_set_clock('2030-01-02 00:00:05+00');
SELECT rl_define_model('rel/exp', tpm => 10000, max_concurrent => 1);
SELECT lease_id AS e1 FROM rl_acquire('rel/exp', tokens => 100, ttl => '10 seconds') \gset
SELECT granted, limited_by FROM rl_acquire('rel/exp', tokens => 100);
SELECT rl_debug_set_clock('2030-01-02 00:00:20+00');
SELECT released, model, tokens_estimated, tokens_actual FROM rl_release(:e1, input_tokens => 1);
SELECT tokens_minute, in_flight, expired FROM rl_status WHERE model = 'rel/exp';
-- expiry frees the slot even without a release: the next acquire sees it
SELECT lease_id AS e2 FROM rl_acquire('rel/exp', tokens => 100, ttl => '10 seconds') \gset
SELECT count(*) AS open FROM rl_leases WHERE model = 'rel/exp';
SELECT rl_debug_set_clock('2030-01-02 00:00:40+00');
SELECT count(*) AS open FROM rl_leases WHERE model = 'rel/exp';
SELECT granted FROM rl_acquire('rel/exp', tokens => 100);
SELECT in_flight, expired FROM rl_status WHERE model = 'rel/exp';
SELECT released FROM rl_release(:e2);

-- another role's lease cannot be released; members of that role may
CREATE ROLE regress_rl_other;
CREATE ROLE regress_rl_owner;
GRANT regress_rl_owner TO regress_rl_other;
CREATE ROLE regress_rl_stranger;
GRANT EXECUTE ON FUNCTION rl_acquire, rl_release
	TO regress_rl_owner, regress_rl_other, regress_rl_stranger;
SET ROLE regress_rl_owner;
SELECT lease_id AS owned FROM rl_acquire('rel/m', tokens => 1) \gset
SET ROLE regress_rl_stranger;
\set VERBOSITY terse
SELECT * FROM rl_release(:owned);
\set VERBOSITY default
SET ROLE regress_rl_other;
SELECT released FROM rl_release(:owned);
RESET ROLE;
REVOKE EXECUTE ON FUNCTION rl_acquire, rl_release
	FROM regress_rl_owner, regress_rl_other, regress_rl_stranger;
DROP ROLE regress_rl_other, regress_rl_owner, regress_rl_stranger;

DELETE FROM rl_model;
