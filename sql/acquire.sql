-- Admission: every configured limit must have room, all or nothing.
SET timezone = 'UTC';
SELECT rl_debug_set_clock('2030-01-01 00:00:05+00');

-- rpm
SELECT rl_define_model('acq/rpm', rpm => 2);
SELECT granted, model, limited_by FROM rl_acquire('acq/rpm');
SELECT granted, model, limited_by FROM rl_acquire('acq/rpm');
SELECT granted, lease_id, model, limited_by,
	   retry_after BETWEEN '40 seconds' AND '55 seconds' AS retry_at_minute_end
FROM rl_acquire('acq/rpm');

-- tpm: the request must fit whole, a partial fit is a denial
SELECT rl_define_model('acq/tpm', tpm => 100);
SELECT granted FROM rl_acquire('acq/tpm', tokens => 60);
SELECT granted, limited_by FROM rl_acquire('acq/tpm', tokens => 41);
SELECT granted FROM rl_acquire('acq/tpm', tokens => 40);
SELECT granted, limited_by FROM rl_acquire('acq/tpm', tokens => 1);
-- requests that consume no tokens still pass
SELECT granted FROM rl_acquire('acq/tpm', tokens => 0);

-- rpd and tpd: retry_after runs to the end of the UTC day
SELECT rl_define_model('acq/rpd', rpd => 1);
SELECT granted FROM rl_acquire('acq/rpd');
SELECT granted, limited_by,
	   retry_after BETWEEN '23:59:00' AND '23:59:55' AS retry_at_day_end
FROM rl_acquire('acq/rpd');
SELECT rl_define_model('acq/tpd', tpd => 10);
SELECT granted FROM rl_acquire('acq/tpd', tokens => 10);
SELECT granted, limited_by, retry_after > '23:00:00' AS retry_at_day_end
FROM rl_acquire('acq/tpd', tokens => 1);

-- concurrency: only a release frees it, so retry_after is NULL
SELECT rl_define_model('acq/conc', max_concurrent => 2);
SELECT lease_id AS c1 FROM rl_acquire('acq/conc') \gset
SELECT granted FROM rl_acquire('acq/conc');
SELECT granted, limited_by, retry_after FROM rl_acquire('acq/conc');
SELECT released FROM rl_release(:c1);
SELECT granted FROM rl_acquire('acq/conc');

-- all or nothing: a denial reserves nothing on any limit
SELECT rl_define_model('acq/all', rpm => 5, tpm => 100, rpd => 50, tpd => 1000, max_concurrent => 3);
SELECT granted FROM rl_acquire('acq/all', tokens => 90);
SELECT granted, limited_by FROM rl_acquire('acq/all', tokens => 20);
SELECT requests_minute, tokens_minute, requests_day, tokens_day, in_flight, granted, denied
FROM rl_status WHERE model = 'acq/all';

-- limited_by names the limit that blocks longest: day before minute before
-- concurrency
SELECT rl_define_model('acq/order', rpm => 1, rpd => 1, max_concurrent => 1);
SELECT granted FROM rl_acquire('acq/order');
SELECT granted, limited_by FROM rl_acquire('acq/order');
SELECT rl_define_model('acq/order2', rpm => 1, max_concurrent => 1);
SELECT granted FROM rl_acquire('acq/order2');
SELECT granted, limited_by FROM rl_acquire('acq/order2');

-- requests as a size: 3 requests against rpm 5
SELECT rl_define_model('acq/requests', rpm => 5);
SELECT granted FROM rl_acquire('acq/requests', requests => 3);
SELECT granted, limited_by FROM rl_acquire('acq/requests', requests => 3);
SELECT granted FROM rl_acquire('acq/requests', requests => 2);

-- a model with no limits admits everything and still counts
SELECT rl_define_model('acq/free');
SELECT granted FROM rl_acquire('acq/free', tokens => 1000000);
SELECT requests_minute, tokens_minute, in_flight FROM rl_status WHERE model = 'acq/free';

-- job type estimates size the request when tokens/requests are NULL
SELECT rl_define_job_type('acq/summary', est_tokens => 700, est_requests => 2);
SELECT rl_define_model('acq/jt', rpm => 100, tpm => 1000);
SELECT granted FROM rl_acquire('acq/jt', job_type => 'acq/summary');
SELECT requests_minute, tokens_minute FROM rl_status WHERE model = 'acq/jt';
SELECT granted, limited_by FROM rl_acquire('acq/jt', job_type => 'acq/summary');
-- explicit sizes win over the estimates
SELECT granted FROM rl_acquire('acq/jt', job_type => 'acq/summary', tokens => 300, requests => 1);
SELECT requests_minute, tokens_minute FROM rl_status WHERE model = 'acq/jt';
SELECT job_type, tokens, requests FROM rl_leases WHERE model = 'acq/jt' ORDER BY lease_id;

-- instance and ttl are recorded on the lease
SELECT lease_id AS ttl_lease FROM rl_acquire('acq/free', instance => 'worker-1', ttl => '30 seconds') \gset
SELECT instance, expires_at - acquired_at AS ttl, pid = pg_backend_pid() AS my_pid, role = current_user AS my_role
FROM rl_leases WHERE lease_id = :ttl_lease;
-- the default ttl is ratelimit.lease_ttl
SET ratelimit.lease_ttl = '2min';
SELECT lease_id AS ttl_lease2 FROM rl_acquire('acq/free') \gset
SELECT expires_at - acquired_at AS ttl FROM rl_leases WHERE lease_id = :ttl_lease2;
RESET ratelimit.lease_ttl;

-- max_wait 0 means try once
SELECT granted, limited_by FROM rl_acquire('acq/rpm', max_wait => '0');

-- acquire and release are not undone by a rollback (like nextval)
SELECT rl_define_model('acq/tx', rpm => 5);
BEGIN;
SELECT granted FROM rl_acquire('acq/tx');
ROLLBACK;
SELECT requests_minute, in_flight FROM rl_status WHERE model = 'acq/tx';

-- rl_acquire_any: the first model in order that admits
SELECT rl_define_model('any/small', rpm => 1, tpm => 100);
SELECT rl_define_model('any/medium', rpm => 1, tpm => 1000);
SELECT rl_define_model('any/large', rpm => 1, tpm => 10000);
SELECT granted, model FROM rl_acquire_any(ARRAY['any/small', 'any/medium', 'any/large'], tokens => 50);
SELECT granted, model FROM rl_acquire_any(ARRAY['any/small', 'any/medium', 'any/large'], tokens => 50);
SELECT granted, model FROM rl_acquire_any(ARRAY['any/small', 'any/medium', 'any/large'], tokens => 50);
-- all exhausted: denied, naming the model that frees first
SELECT granted, lease_id, model, limited_by, retry_after IS NOT NULL AS has_retry
FROM rl_acquire_any(ARRAY['any/small', 'any/medium', 'any/large'], tokens => 50);
-- denied counts refused calls: only the last call was refused, once on each
-- model; the calls that a later model granted are no denial of the earlier
SELECT model, granted, denied FROM rl_status WHERE model LIKE 'any/%' ORDER BY model;
-- models the request can never fit are skipped
SELECT rl_define_model('any/tiny', tpm => 10);
SELECT rl_define_model('any/big', tpm => 10000);
SELECT granted, model FROM rl_acquire_any(ARRAY['any/tiny', 'any/big'], tokens => 500);
-- and when no model could ever fit it, that is an error
SELECT * FROM rl_acquire_any(ARRAY['any/tiny'], tokens => 500);
SELECT * FROM rl_acquire_any(ARRAY['any/tiny', 'any/small'], tokens => 500);
-- a model named more than once is tried, and counted, once: a refused call
-- is one denial however often it names the model
SELECT rl_define_model('any/conc', max_concurrent => 1);
SELECT granted, model, limited_by, retry_after FROM rl_acquire_any(ARRAY['any/conc', 'any/conc']);
SELECT granted, model, limited_by, retry_after FROM rl_acquire_any(ARRAY['any/conc', 'any/conc']);
SELECT granted, denied FROM rl_status WHERE model = 'any/conc';
SELECT granted, model, limited_by FROM rl_acquire_any(array_fill('any/conc'::text, ARRAY[10000]));
SELECT granted, denied FROM rl_status WHERE model = 'any/conc';
-- the first copy sets the order: any/conc stays first, and any/big admits
SELECT granted, model FROM rl_acquire_any(ARRAY['any/conc', 'any/big', 'any/conc']);
SELECT granted, denied FROM rl_status WHERE model = 'any/conc';

DELETE FROM rl_model;
DELETE FROM rl_job_type;
