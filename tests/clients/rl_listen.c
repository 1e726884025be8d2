/*
 * rl_listen: a libpq client that waits for capacity the way applications
 * should when they cannot block inside the server: LISTEN rl_capacity, try
 * rl_acquire, and when denied sleep on the connection's socket until a
 * notification for the model arrives, then retry.  When granted it
 * "calls the provider" and releases the lease with the actual usage.
 *
 * It reports how long after the window reset (the notification's "at", on
 * the limiter's clock) the notification arrived and the acquire succeeded.
 *
 *   rl_listen CONNINFO MODEL [TIMEOUT_SECONDS]
 *
 * Exit status: 0 granted, 1 timed out, 2 error.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <time.h>

#include <libpq-fe.h>

/* Copy the JSON string value of "key" from payload into out; 0 if absent */
static int
json_string_field(const char *payload, const char *key, char *out, size_t outlen)
{
	char		pattern[64];
	const char *p;
	size_t		n = 0;

	snprintf(pattern, sizeof(pattern), "\"%s\": \"", key);
	p = strstr(payload, pattern);
	if (p == NULL)
		return 0;
	for (p += strlen(pattern); *p && *p != '"' && n + 1 < outlen; p++)
	{
		if (*p == '\\' && p[1] != '\0')
			p++;				/* \" and \\ as the server escapes them */
		out[n++] = *p;
	}
	out[n] = '\0';
	return 1;
}

static void
die(PGconn *conn, const char *what)
{
	fprintf(stderr, "rl_listen: %s: %s", what, PQerrorMessage(conn));
	PQfinish(conn);
	exit(2);
}

/* Milliseconds from the limiter time "at" to the limiter's now */
static double
ms_since(PGconn *conn, const char *at)
{
	const char *params[1] = {at};
	PGresult   *res = PQexecParams(conn,
								   "SELECT extract(epoch FROM ratelimit.rl_clock() - $1::timestamptz) * 1000",
								   1, NULL, params, NULL, NULL, 0);
	double		ms;

	if (PQresultStatus(res) != PGRES_TUPLES_OK)
		die(conn, "rl_clock");
	ms = atof(PQgetvalue(res, 0, 0));
	PQclear(res);
	return ms;
}

/*
 * Sleep on the connection's socket until a notification on rl_capacity names
 * the model; copy its "at" (the reset or release, on the limiter's clock) into
 * at.  False when the deadline passes first.  A notification that arrived
 * with the results of the acquire is already queued: it counts.
 */
static bool
wait_for_notification(PGconn *conn, const char *model, time_t deadline,
					  char *at, size_t atlen)
{
	for (;;)
	{
		int			sock = PQsocket(conn);
		fd_set		input;
		struct timeval timeout;
		PGnotify   *notify;
		bool		found = false;
		time_t		now = time(NULL);

		while ((notify = PQnotifies(conn)) != NULL)
		{
			char		name[256];

			if (json_string_field(notify->extra, "model", name, sizeof(name)) &&
				strcmp(name, model) == 0 &&
				json_string_field(notify->extra, "at", at, atlen))
				found = true;
			PQfreemem(notify);
		}
		if (found)
			return true;
		if (now >= deadline)
			return false;
		FD_ZERO(&input);
		FD_SET(sock, &input);
		timeout.tv_sec = deadline - now;
		timeout.tv_usec = 0;
		if (select(sock + 1, &input, NULL, NULL, &timeout) < 0 && errno != EINTR)
			die(conn, "select");
		if (!PQconsumeInput(conn))
			die(conn, "PQconsumeInput");
	}
}

int
main(int argc, char **argv)
{
	PGconn	   *conn;
	PGresult   *res;
	PGresult   *rel;
	const char *params[1];
	time_t		deadline;
	char		reset_at[64] = "";
	double		notified_ms = -1;

	if (argc < 3)
	{
		fprintf(stderr, "usage: rl_listen CONNINFO MODEL [TIMEOUT_SECONDS]\n");
		return 2;
	}
	params[0] = argv[2];		/* the model */
	deadline = time(NULL) + (argc > 3 ? atoi(argv[3]) : 60);

	conn = PQconnectdb(argv[1]);
	if (PQstatus(conn) != CONNECTION_OK)
		die(conn, "connect");
	res = PQexec(conn, "LISTEN rl_capacity");
	if (PQresultStatus(res) != PGRES_COMMAND_OK)
		die(conn, "LISTEN");
	PQclear(res);

	/* try; when denied, sleep until a notification names the model, retry */
	for (;;)
	{
		res = PQexecParams(conn,
						   "SELECT granted, lease_id, limited_by FROM ratelimit.rl_acquire($1)",
						   1, NULL, params, NULL, NULL, 0);
		if (PQresultStatus(res) != PGRES_TUPLES_OK)
			die(conn, "rl_acquire");
		if (strcmp(PQgetvalue(res, 0, 0), "t") == 0)
			break;
		printf("denied by %s, waiting for a notification\n", PQgetvalue(res, 0, 2));
		fflush(stdout);
		PQclear(res);
		if (!wait_for_notification(conn, argv[2], deadline, reset_at, sizeof(reset_at)))
		{
			printf("timed out\n");
			PQfinish(conn);
			return 1;
		}
		notified_ms = ms_since(conn, reset_at);
	}

	if (reset_at[0] != '\0')
		printf("acquired %.1f ms after the reset (notified after %.1f ms)\n",
			   ms_since(conn, reset_at), notified_ms);
	else
		printf("acquired at once\n");

	/* ... call the provider here, then settle the lease with its usage ... */
	params[0] = PQgetvalue(res, 0, 1);	/* the lease */
	rel = PQexecParams(conn,
					   "SELECT released FROM ratelimit.rl_release($1, input_tokens => 120, output_tokens => 40)",
					   1, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(rel) != PGRES_TUPLES_OK)
		die(conn, "rl_release");
	printf("released: %s\n", PQgetvalue(rel, 0, 0));
	PQclear(rel);
	PQclear(res);
	PQfinish(conn);
	return 0;
}
