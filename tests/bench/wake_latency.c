/*
 * wake_latency: how soon after a window reset blocked acquires return and
 * LISTENing clients hear about it.
 *
 * Each round exhausts the model's rpm for the current minute, blocks
 * WAITERS sessions in rl_acquire(max_wait => ...), has LISTENERS sessions
 * LISTEN rl_capacity, then moves the test clock to 200 ms before the next
 * minute boundary.  For every waiter it records when its acquire returned,
 * and for every listener when its notification arrived, both on the real
 * clock relative to the boundary (client and server share the machine's
 * clock; the limiter's offset is read from the server).
 *
 * The baseline, measured in the same run and round by round: the same
 * sessions in pg_sleep_until() of one instant 200 ms ahead.  That is how
 * soon this machine can wake as many PostgreSQL backends at once and get a
 * row back from each, with no limiter involved.
 *
 *   wake_latency CONNINFO [WAITERS [LISTENERS [ROUNDS]]]
 *
 * Prints p50, p99 and max of each, and the limiter's p50 and p99 as ratios
 * of the baseline's.  A benchmark: it asserts nothing.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <time.h>

#include <libpq-fe.h>

#define MODEL "bench/wake"

static double
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

static PGconn *
connect_or_die(const char *conninfo)
{
	PGconn	   *conn = PQconnectdb(conninfo);

	if (PQstatus(conn) != CONNECTION_OK)
	{
		fprintf(stderr, "connect: %s", PQerrorMessage(conn));
		exit(1);
	}
	return conn;
}

/* Run a query that must succeed; returns its first value as a double */
static double
query_double(PGconn *conn, const char *sql)
{
	PGresult   *res = PQexec(conn, sql);
	double		value = 0;

	if (PQresultStatus(res) != PGRES_TUPLES_OK && PQresultStatus(res) != PGRES_COMMAND_OK)
	{
		fprintf(stderr, "%s: %s", sql, PQerrorMessage(conn));
		exit(1);
	}
	if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) > 0)
		value = atof(PQgetvalue(res, 0, 0));
	PQclear(res);
	return value;
}

static int
cmp_double(const void *a, const void *b)
{
	double		x = *(const double *) a;
	double		y = *(const double *) b;

	return x < y ? -1 : x > y;
}

static void
report(const char *what, double *samples, int n, double *p50, double *p99)
{
	qsort(samples, n, sizeof(double), cmp_double);
	printf("%-44s n=%-5d p50 %7.2f ms   p99 %7.2f ms   max %7.2f ms\n", what, n,
		   samples[n / 2], samples[(int) (n * 0.99)], samples[n - 1]);
	if (p50)
		*p50 = samples[n / 2];
	if (p99)
		*p99 = samples[(int) (n * 0.99)];
}

/* Add the sockets of the connections not done yet; returns the highest fd */
static int
watch(fd_set *input, PGconn **conns, const int *done, int n, int maxfd)
{
	for (int i = 0; i < n; i++)
		if (!done[i])
		{
			FD_SET(PQsocket(conns[i]), input);
			maxfd = PQsocket(conns[i]) > maxfd ? PQsocket(conns[i]) : maxfd;
		}
	return maxfd;
}

/*
 * Baseline: every session sleeps in pg_sleep_until() to the same instant;
 * appends to samples how long after it each one's row arrived.
 */
static void
sleep_until_round(PGconn **conns, int n, double *samples, int *nsamples)
{
	double		target_ms = now_ms() + 200;
	int			pending = n;
	int		   *done = calloc(n, sizeof(int));
	char		sql[128];

	snprintf(sql, sizeof(sql), "SELECT pg_sleep_until(to_timestamp(%.6f))", target_ms / 1000);
	for (int i = 0; i < n; i++)
		if (!PQsendQuery(conns[i], sql))
		{
			fprintf(stderr, "send: %s", PQerrorMessage(conns[i]));
			exit(1);
		}
	while (pending > 0)
	{
		fd_set		input;

		FD_ZERO(&input);
		select(watch(&input, conns, done, n, 0) + 1, &input, NULL, NULL, NULL);
		for (int i = 0; i < n; i++)
		{
			PGresult   *res;

			if (done[i] || !FD_ISSET(PQsocket(conns[i]), &input))
				continue;
			PQconsumeInput(conns[i]);
			if (PQisBusy(conns[i]))
				continue;
			samples[(*nsamples)++] = now_ms() - target_ms;
			while ((res = PQgetResult(conns[i])) != NULL)
			{
				if (PQresultStatus(res) != PGRES_TUPLES_OK)
				{
					fprintf(stderr, "pg_sleep_until: %s", PQerrorMessage(conns[i]));
					exit(1);
				}
				PQclear(res);
			}
			done[i] = 1;
			pending--;
		}
	}
	free(done);
}

int
main(int argc, char **argv)
{
	const char *conninfo;
	int			waiters;
	int			listeners;
	int			rounds;
	PGconn	   *admin;
	PGconn	  **wconn;
	PGconn	  **lconn;
	double	   *wake;
	double	   *heard;
	double	   *inside;
	double	   *slept;
	int			ninside = 0;
	int			nslept = 0;
	double		base_p50,
				base_p99,
				wake_p50,
				wake_p99;
	int			nwake = 0;
	int			nheard = 0;
	char		sql[512];

	if (argc < 2)
	{
		fprintf(stderr, "usage: wake_latency CONNINFO [WAITERS [LISTENERS [ROUNDS]]]\n");
		return 2;
	}
	conninfo = argv[1];
	waiters = argc > 2 ? atoi(argv[2]) : 100;
	listeners = argc > 3 ? atoi(argv[3]) : 10;
	rounds = argc > 4 ? atoi(argv[4]) : 10;

	admin = connect_or_die(conninfo);
	snprintf(sql, sizeof(sql), "SELECT ratelimit.rl_define_model('%s', rpm => %d)", MODEL, waiters);
	query_double(admin, sql);

	wconn = calloc(waiters, sizeof(PGconn *));
	lconn = calloc(listeners, sizeof(PGconn *));
	wake = calloc(waiters * rounds, sizeof(double));
	heard = calloc(listeners * rounds, sizeof(double));
	inside = calloc(waiters * rounds, sizeof(double));
	slept = calloc(waiters * rounds, sizeof(double));
	for (int i = 0; i < waiters; i++)
		wconn[i] = connect_or_die(conninfo);
	for (int i = 0; i < listeners; i++)
	{
		lconn[i] = connect_or_die(conninfo);
		query_double(lconn[i], "LISTEN rl_capacity");
	}

	for (int round = 0; round < rounds; round++)
	{
		double		offset_ms;
		double		boundary_ms;
		int			pending_w = waiters;
		int			pending_l = listeners;
		int		   *done_w = calloc(waiters, sizeof(int));
		int		   *done_l = calloc(listeners, sizeof(int));

		sleep_until_round(wconn, waiters, slept, &nslept);

		/* the middle of a fresh minute, with rpm used up */
		snprintf(sql, sizeof(sql),
				 "SELECT ratelimit.rl_debug_set_clock('2030-01-01 00:00:30+00'::timestamptz + interval '%d min')",
				 round * 2);
		query_double(admin, sql);
		snprintf(sql, sizeof(sql),
				 "SELECT count(*) FROM generate_series(1, %d) i"
				 " WHERE (ratelimit.rl_acquire('%s', tokens => i - i, ttl => '1 hour')).granted",
				 waiters, MODEL);
		if ((int) query_double(admin, sql) != waiters)
		{
			fprintf(stderr, "could not use up the model's rpm\n");
			return 1;
		}

		for (int i = 0; i < waiters; i++)
		{
			snprintf(sql, sizeof(sql),
					 "SELECT granted, extract(epoch FROM ratelimit.rl_clock()) * 1000"
					 " FROM ratelimit.rl_acquire('%s', max_wait => '5 min', ttl => '1 hour')",
					 MODEL);
			if (!PQsendQuery(wconn[i], sql))
			{
				fprintf(stderr, "send: %s", PQerrorMessage(wconn[i]));
				return 1;
			}
		}
		snprintf(sql, sizeof(sql), "SELECT waiting FROM ratelimit.rl_status WHERE model = '%s'", MODEL);
		for (double started = now_ms(); (int) query_double(admin, sql) < waiters;)
		{
			if (now_ms() - started > 30000)
			{
				fprintf(stderr, "the waiters did not all queue\n");
				return 1;
			}
		}

		/* forget notifications of earlier rounds */
		for (int i = 0; i < listeners; i++)
		{
			PGnotify   *notify;

			PQconsumeInput(lconn[i]);
			while ((notify = PQnotifies(lconn[i])) != NULL)
				PQfreemem(notify);
		}

		/* 200 ms before the boundary; remember where the boundary is */
		snprintf(sql, sizeof(sql),
				 "SELECT ratelimit.rl_debug_set_clock('2030-01-01 00:00:59.8+00'::timestamptz + interval '%d min')",
				 round * 2);
		query_double(admin, sql);
		offset_ms = query_double(admin,
								 "SELECT extract(epoch FROM ratelimit.rl_clock() - clock_timestamp()) * 1000");
		snprintf(sql, sizeof(sql),
				 "SELECT extract(epoch FROM '2030-01-01 00:01:00+00'::timestamptz + interval '%d min') * 1000",
				 round * 2);
		boundary_ms = query_double(admin, sql) - offset_ms;

		while (pending_w > 0 || pending_l > 0)
		{
			fd_set		input;
			int			maxfd;


			FD_ZERO(&input);
			maxfd = watch(&input, wconn, done_w, waiters, 0);
			maxfd = watch(&input, lconn, done_l, listeners, maxfd);
			select(maxfd + 1, &input, NULL, NULL, NULL);

			for (int i = 0; i < waiters; i++)
			{
				PGresult   *res;

				if (done_w[i] || !FD_ISSET(PQsocket(wconn[i]), &input))
					continue;
				PQconsumeInput(wconn[i]);
				if (PQisBusy(wconn[i]))
					continue;
				wake[nwake++] = now_ms() - boundary_ms;
				while ((res = PQgetResult(wconn[i])) != NULL)
				{
					if (PQresultStatus(res) != PGRES_TUPLES_OK ||
						strcmp(PQgetvalue(res, 0, 0), "t") != 0)
					{
						fprintf(stderr, "a waiter was not granted\n");
						return 1;
					}
					inside[ninside++] = atof(PQgetvalue(res, 0, 1)) - offset_ms - boundary_ms;
					PQclear(res);
				}
				done_w[i] = 1;
				pending_w--;
			}
			for (int i = 0; i < listeners; i++)
			{
				PGnotify   *notify;

				if (done_l[i] || !FD_ISSET(PQsocket(lconn[i]), &input))
					continue;
				PQconsumeInput(lconn[i]);
				while ((notify = PQnotifies(lconn[i])) != NULL)
				{
					if (!done_l[i] && strstr(notify->extra, MODEL) != NULL)
					{
						heard[nheard++] = now_ms() - boundary_ms;
						done_l[i] = 1;
						pending_l--;
					}
					PQfreemem(notify);
				}
			}
		}
		free(done_w);
		free(done_l);
		if (getenv("WAKE_VERBOSE"))
		{
			double		first = inside[ninside - waiters];
			double		last = first;

			for (int i = ninside - waiters; i < ninside; i++)
			{
				first = inside[i] < first ? inside[i] : first;
				last = inside[i] > last ? inside[i] : last;
			}
			printf("round %d: waiters returned %.2f..%.2f ms, granted inside %.2f..%.2f ms\n",
				   round, wake[nwake - waiters], wake[nwake - 1], first, last);
		}
	}

	printf("%d waiters, %d listeners, %d window resets\n", waiters, listeners, rounds);
	report("baseline: pg_sleep_until returns after", slept, nslept, &base_p50, &base_p99);
	report("blocked rl_acquire returns after the reset", wake, nwake, &wake_p50, &wake_p99);
	report("  of which inside the server (rl_clock)", inside, ninside, NULL, NULL);
	report("LISTENing client notified after the reset", heard, nheard, NULL, NULL);
	printf("ratio blocked rl_acquire / pg_sleep_until baseline: p50 %.2f, p99 %.2f\n",
		   wake_p50 / base_p50, wake_p99 / base_p99);

	query_double(admin, "SELECT ratelimit.rl_debug_set_clock(NULL)");
	snprintf(sql, sizeof(sql), "SELECT ratelimit.rl_drop_model('%s')", MODEL);
	query_double(admin, sql);
	return 0;
}
