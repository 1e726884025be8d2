/*-------------------------------------------------------------------------
 *
 * observe.c
 *		rl_observe: what the provider said about its limits, from the
 *		headers of its response.
 *
 * A provider reports its own view of each limit on every response: OpenAI
 * as x-ratelimit-{limit,remaining,reset}-{requests,tokens} (the reset a
 * duration until the bucket is full, like "6m0s", "1s", "20ms"), Anthropic
 * as anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-
 * {limit,remaining,reset} (the reset an RFC 3339 time), and both may send
 * retry-after (seconds, or an HTTP date).  This file parses them, one by
 * one: a header of a known name whose value does not parse is ignored and
 * counted, never an error, since rl_observe runs in the caller's request
 * path.  Header names are compared without case; a value may be a JSON
 * string, a number, or an array of them (the first counts).  What the
 * parsed headers do to the limiter is the ledger's (ledger_provider.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>
#include <math.h>

#include "fmgr.h"
#include "funcapi.h"
#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"

#include "api.h"
#include "acquire.h"
#include "catalog.h"
#include "clock.h"
#include "ledger.h"
#include "names.h"
#include "observe.h"
#include "settings.h"

PG_FUNCTION_INFO_V1(rl_observe);

const char *const pgrl_provider_dim_names[RL_NUM_PROVIDER_DIMS] = {
	"requests", "tokens", "input_tokens", "output_tokens"
};

/* Longest header value looked at; longer ones are malformed */
#define RL_HEADER_VALUE_MAX		64

/* A reset or retry-after further away than this is not believed */
#define RL_PROVIDER_HORIZON_US	(2 * USECS_PER_DAY)

/* What a header says */
typedef enum RlHeaderKind
{
	RL_HEADER_LIMIT,
	RL_HEADER_REMAINING,
	RL_HEADER_RESET_DURATION,	/* OpenAI: time until full */
	RL_HEADER_RESET_TIME,		/* Anthropic: RFC 3339 time of full */
	RL_HEADER_RETRY_AFTER
} RlHeaderKind;

typedef struct RlHeaderName
{
	const char *name;
	RlHeaderKind kind;
	RlProviderDim dim;
} RlHeaderName;

static const RlHeaderName header_names[] = {
	{"x-ratelimit-limit-requests", RL_HEADER_LIMIT, RL_PROVIDER_REQUESTS},
	{"x-ratelimit-limit-tokens", RL_HEADER_LIMIT, RL_PROVIDER_TOKENS},
	{"x-ratelimit-remaining-requests", RL_HEADER_REMAINING, RL_PROVIDER_REQUESTS},
	{"x-ratelimit-remaining-tokens", RL_HEADER_REMAINING, RL_PROVIDER_TOKENS},
	{"x-ratelimit-reset-requests", RL_HEADER_RESET_DURATION, RL_PROVIDER_REQUESTS},
	{"x-ratelimit-reset-tokens", RL_HEADER_RESET_DURATION, RL_PROVIDER_TOKENS},
	{"anthropic-ratelimit-requests-limit", RL_HEADER_LIMIT, RL_PROVIDER_REQUESTS},
	{"anthropic-ratelimit-requests-remaining", RL_HEADER_REMAINING, RL_PROVIDER_REQUESTS},
	{"anthropic-ratelimit-requests-reset", RL_HEADER_RESET_TIME, RL_PROVIDER_REQUESTS},
	{"anthropic-ratelimit-tokens-limit", RL_HEADER_LIMIT, RL_PROVIDER_TOKENS},
	{"anthropic-ratelimit-tokens-remaining", RL_HEADER_REMAINING, RL_PROVIDER_TOKENS},
	{"anthropic-ratelimit-tokens-reset", RL_HEADER_RESET_TIME, RL_PROVIDER_TOKENS},
	{"anthropic-ratelimit-input-tokens-limit", RL_HEADER_LIMIT, RL_PROVIDER_INPUT_TOKENS},
	{"anthropic-ratelimit-input-tokens-remaining", RL_HEADER_REMAINING, RL_PROVIDER_INPUT_TOKENS},
	{"anthropic-ratelimit-input-tokens-reset", RL_HEADER_RESET_TIME, RL_PROVIDER_INPUT_TOKENS},
	{"anthropic-ratelimit-output-tokens-limit", RL_HEADER_LIMIT, RL_PROVIDER_OUTPUT_TOKENS},
	{"anthropic-ratelimit-output-tokens-remaining", RL_HEADER_REMAINING, RL_PROVIDER_OUTPUT_TOKENS},
	{"anthropic-ratelimit-output-tokens-reset", RL_HEADER_RESET_TIME, RL_PROVIDER_OUTPUT_TOKENS},
	{"retry-after", RL_HEADER_RETRY_AFTER, RL_PROVIDER_REQUESTS},
};

/* A non-negative count: digits only, at most 18 of them */
static bool
pgrl_parse_count(const char *s, int64 *count)
{
	int64		value = 0;
	int			digits = 0;

	for (; *s; s++, digits++)
	{
		if (!isdigit((unsigned char) *s) || digits == 18)
			return false;
		value = value * 10 + (*s - '0');
	}
	*count = value;
	return digits > 0;
}

/* A non-negative decimal number (digits, optionally a point and digits) */
static bool
pgrl_parse_decimal(const char **s, double *value)
{
	const char *p = *s;
	double		result = 0;
	double		scale = 1;
	bool		any = false;

	for (; isdigit((unsigned char) *p) && p - *s < 18; p++, any = true)
		result = result * 10 + (*p - '0');
	if (*p == '.')
	{
		p++;
		for (; isdigit((unsigned char) *p) && scale > 1e-9; p++, any = true)
			result += (*p - '0') * (scale /= 10);
	}
	if (!any || isdigit((unsigned char) *p))
		return false;
	*s = p;
	*value = result;
	return true;
}

/*
 * A duration as OpenAI writes it: numbers with units h, m, s or ms, in that
 * order ("6m0s", "1s", "20ms", "1m30.5s"); a bare number is seconds.
 */
static bool
pgrl_parse_duration(const char *s, int64 *us)
{
	static const struct
	{
		const char *unit;
		double		us;
	}			units[] = {
		{"h", 3600e6}, {"ms", 1e3}, {"m", 60e6}, {"s", 1e6}
	};
	double		total = 0;
	int			last_order = -1;

	if (*s == '\0')
		return false;
	while (*s)
	{
		double		value;
		int			k;

		if (!pgrl_parse_decimal(&s, &value))
			return false;
		if (*s == '\0' && last_order < 0)
		{
			total = value * 1e6;
			break;
		}
		for (k = 0; k < (int) lengthof(units); k++)
			if (strncmp(s, units[k].unit, strlen(units[k].unit)) == 0)
				break;
		if (k == (int) lengthof(units))
			return false;
		/* h, m, s, ms: each at most once, larger first */
		{
			int			order = k == 0 ? 0 : k == 2 ? 1 : k == 3 ? 2 : 3;

			if (order <= last_order)
				return false;
			last_order = order;
		}
		s += strlen(units[k].unit);
		total += value * units[k].us;
	}
	if (total > RL_PROVIDER_HORIZON_US)
		return false;
	*us = (int64) ceil(total);
	return true;
}

/* n digits exactly, as a number */
static bool
pgrl_digits(const char **s, int n, int *value)
{
	int			result = 0;

	for (int i = 0; i < n; i++)
	{
		if (!isdigit((unsigned char) (*s)[i]))
			return false;
		result = result * 10 + ((*s)[i] - '0');
	}
	*s += n;
	*value = result;
	return true;
}

/* A date and time of day, checked, as a UTC timestamp less tz_seconds */
static bool
pgrl_make_time(int year, int month, int day, int hour, int minute, int second,
			   int64 micros, int tz_seconds, TimestampTz *result)
{
	struct pg_tm tm;
	Timestamp	t;
	int			tz = -tz_seconds;	/* PostgreSQL counts west of UTC */

	if (year < 1970 || year > 9999 || month < 1 || month > 12 || day < 1 ||
		day > day_tab[isleap(year)][month - 1] || hour > 23 || minute > 59 || second > 60)
		return false;
	memset(&tm, 0, sizeof(tm));
	tm.tm_year = year;
	tm.tm_mon = month;
	tm.tm_mday = day;
	tm.tm_hour = hour;
	tm.tm_min = minute;
	tm.tm_sec = Min(second, 59);	/* a leap second counts as the one before */
	if (tm2timestamp(&tm, (fsec_t) micros, &tz, &t) != 0)
		return false;
	*result = (TimestampTz) t;
	return true;
}

/* RFC 3339: 2030-01-01T00:00:05Z, with a fraction and an offset allowed */
static bool
pgrl_parse_rfc3339(const char *s, TimestampTz *result)
{
	int			year,
				month,
				day,
				hour,
				minute,
				second;
	int64		micros = 0;
	int			tz_seconds = 0;

	if (!pgrl_digits(&s, 4, &year) || *s++ != '-' || !pgrl_digits(&s, 2, &month) ||
		*s++ != '-' || !pgrl_digits(&s, 2, &day) ||
		(*s != 'T' && *s != 't' && *s != ' ') || !(s++, pgrl_digits(&s, 2, &hour)) ||
		*s++ != ':' || !pgrl_digits(&s, 2, &minute) || *s++ != ':' ||
		!pgrl_digits(&s, 2, &second))
		return false;
	if (*s == '.')
	{
		int64		scale = 100000;

		s++;
		if (!isdigit((unsigned char) *s))
			return false;
		for (; isdigit((unsigned char) *s); s++, scale /= 10)
			micros += (*s - '0') * scale;
	}
	if (*s == 'Z' || *s == 'z')
		s++;
	else if (*s == '+' || *s == '-')
	{
		int			sign = *s++ == '-' ? -1 : 1;
		int			tz_hours,
					tz_minutes;

		if (!pgrl_digits(&s, 2, &tz_hours) || *s++ != ':' || !pgrl_digits(&s, 2, &tz_minutes) ||
			tz_hours > 23 || tz_minutes > 59)
			return false;
		tz_seconds = sign * (tz_hours * 3600 + tz_minutes * 60);
	}
	else
		return false;
	return *s == '\0' &&
		pgrl_make_time(year, month, day, hour, minute, second, micros, tz_seconds, result);
}

/* An HTTP date (IMF-fixdate): Sun, 06 Nov 1994 08:49:37 GMT */
static bool
pgrl_parse_http_date(const char *s, TimestampTz *result)
{
	static const char *const months[] = {
		"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"
	};
	int			day,
				year,
				hour,
				minute,
				second,
				month;

	/* the day name is not checked against the date: the date decides */
	if (strlen(s) != 29 || s[3] != ',' || s[4] != ' ' || strcmp(s + 25, " GMT") != 0)
		return false;
	s += 5;
	if (!pgrl_digits(&s, 2, &day) || *s++ != ' ')
		return false;
	for (month = 0; month < 12; month++)
		if (strncmp(s, months[month], 3) == 0)
			break;
	if (month == 12)
		return false;
	s += 3;
	if (*s++ != ' ' || !pgrl_digits(&s, 4, &year) || *s++ != ' ' ||
		!pgrl_digits(&s, 2, &hour) || *s++ != ':' || !pgrl_digits(&s, 2, &minute) ||
		*s++ != ':' || !pgrl_digits(&s, 2, &second))
		return false;
	return pgrl_make_time(year, month + 1, day, hour, minute, second, 0, 0, result);
}

/*
 * A header's value as a short string: a JSON string or number, or the first
 * element of an array of them.  False for anything else.
 */
static bool
pgrl_header_text(JsonbValue *value, char *buf)
{
	JsonbValue *first = NULL;
	const char *chars;
	int			len;

	if (value->type == jbvBinary && JsonContainerIsArray(value->val.binary.data))
	{
		first = getIthJsonbValueFromContainer(value->val.binary.data, 0);
		if (first == NULL)
			return false;
		value = first;
	}
	if (value->type == jbvString)
	{
		chars = value->val.string.val;
		len = value->val.string.len;
	}
	else if (value->type == jbvNumeric)
	{
		Datum		number = NumericGetDatum(value->val.numeric);

		/*
		 * Only what a header can say: no more than 18 digits either side of
		 * the point (1e131071 would print 131,072 of them)
		 */
		if (numeric_is_nan(value->val.numeric) ||
			DatumGetInt32(DirectFunctionCall1(numeric_scale, number)) > 18 ||
			DatumGetBool(DirectFunctionCall2(numeric_gt,
											 DirectFunctionCall1(numeric_abs, number),
											 NumericGetDatum(int64_to_numeric(PG_INT64_MAX)))))
			return false;
		chars = DatumGetCString(DirectFunctionCall1(numeric_out, number));
		len = strlen(chars);
	}
	else
		return false;
	/* surrounding blanks are allowed, as in HTTP */
	while (len > 0 && isspace((unsigned char) *chars))
	{
		chars++;
		len--;
	}
	while (len > 0 && isspace((unsigned char) chars[len - 1]))
		len--;
	if (len == 0 || len > RL_HEADER_VALUE_MAX)
		return false;
	memcpy(buf, chars, len);
	buf[len] = '\0';
	return true;
}

/* Take one header into the observation; false when its value is malformed */
static bool
pgrl_take_header(const RlHeaderName *header, const char *value, TimestampTz now,
				 int64 clock_offset, RlObservation *obs)
{
	int64		count;
	int64		us;
	double		seconds;
	TimestampTz at;
	const char *p = value;

	switch (header->kind)
	{
		case RL_HEADER_LIMIT:
			if (!pgrl_parse_count(value, &count))
				return false;
			obs->has_limit[header->dim] = true;
			obs->limit[header->dim] = count;
			return true;
		case RL_HEADER_REMAINING:
			if (!pgrl_parse_count(value, &count))
				return false;
			obs->has_remaining[header->dim] = true;
			obs->remaining[header->dim] = count;
			return true;
		case RL_HEADER_RESET_DURATION:
			if (!pgrl_parse_duration(value, &us))
				return false;
			obs->has_reset[header->dim] = true;
			obs->reset_at[header->dim] = now + us;
			return true;
		case RL_HEADER_RESET_TIME:
			if (!pgrl_parse_rfc3339(value, &at))
				return false;
			at += clock_offset;
			if (at > now + RL_PROVIDER_HORIZON_US)
				return false;
			obs->has_reset[header->dim] = true;
			obs->reset_at[header->dim] = Max(at, now);
			return true;
		case RL_HEADER_RETRY_AFTER:
			if (pgrl_parse_decimal(&p, &seconds) && *p == '\0')
			{
				if (seconds * 1e6 > RL_PROVIDER_HORIZON_US)
					return false;
				at = now + (int64) ceil(seconds * 1e6);
			}
			else if (pgrl_parse_http_date(value, &at))
			{
				at += clock_offset;
				if (at > now + RL_PROVIDER_HORIZON_US)
					return false;
				at = Max(at, now);
			}
			else
				return false;
			obs->has_retry_after = true;
			obs->retry_at = at;
			return true;
	}
	return false;
}

/*
 * Parse the headers of one response.  now is the limiter's clock; the
 * provider's own times are real times, moved by the test clock's offset.
 */
static void
pgrl_parse_headers(Jsonb *headers, TimestampTz now, RlObservation *obs)
{
	JsonbIterator *it;
	JsonbValue	key;
	JsonbValue	value;
	JsonbIteratorToken token;
	int64		clock_offset = now - GetCurrentTimestamp();
	MemoryContext header_context;

	if (!JB_ROOT_IS_OBJECT(headers) || JB_ROOT_IS_SCALAR(headers))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("headers must be a JSON object of header names and values")));
	/* what reading one header allocates is freed before the next */
	header_context = AllocSetContextCreate(CurrentMemoryContext, "pg_ratelimit header",
										   ALLOCSET_SMALL_SIZES);
	it = JsonbIteratorInit(&headers->root);
	while ((token = JsonbIteratorNext(&it, &key, true)) != WJB_DONE)
	{
		char		name[64];
		char		chars[RL_HEADER_VALUE_MAX + 1];
		const RlHeaderName *header = NULL;
		MemoryContext caller_context;
		bool		read;

		if (token != WJB_KEY)
			continue;
		token = JsonbIteratorNext(&it, &value, true);
		Assert(token == WJB_VALUE);
		if (key.val.string.len >= (int) sizeof(name))
			continue;
		for (int i = 0; i < key.val.string.len; i++)
			name[i] = pg_ascii_tolower((unsigned char) key.val.string.val[i]);
		name[key.val.string.len] = '\0';
		for (int k = 0; k < (int) lengthof(header_names); k++)
			if (strcmp(name, header_names[k].name) == 0)
				header = &header_names[k];
		/* not a rate-limit header: a response has many others */
		if (header == NULL)
			continue;
		caller_context = MemoryContextSwitchTo(header_context);
		read = pgrl_header_text(&value, chars);
		MemoryContextSwitchTo(caller_context);
		MemoryContextReset(header_context);
		if (read && pgrl_take_header(header, chars, now, clock_offset, obs))
			obs->understood++;
		else
			obs->ignored++;
	}
	MemoryContextDelete(header_context);
}

#define OBSERVATION_COLUMNS	4

/*
 * rl_observe(model, headers jsonb, status integer): what the provider's
 * response said.  Returns the rl_observation row: the headers understood
 * and ignored, the limits whose usage rose to match the provider's
 * remaining, and the cooldown the model is in (a 429 or retry-after).
 */
Datum
rl_observe(PG_FUNCTION_ARGS)
{
	char	   *name;
	RlObservation obs;
	RlProviderEffect effect;
	TimestampTz now;
	TupleDesc	desc;
	Datum		values[OBSERVATION_COLUMNS];
	bool		nulls[OBSERVATION_COLUMNS] = {false, false, false, false};
	Datum		raised[RL_NUM_DIMS];
	int			num_raised = 0;
	int			slot;
	bool		known;

	pgrl_api_begin();
	/* as an acquire: a standby's limiter admits nothing, so it pauses nothing */
	pgrl_require_primary("observe provider responses");
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("model must not be null")));
	name = palloc(RL_NAME_MAX_LEN + 1);
	pgrl_copy_name(name, text_to_cstring(PG_GETARG_TEXT_PP(0)), "model");
	memset(&obs, 0, sizeof(obs));
	if (!PG_ARGISNULL(2))
	{
		obs.status = PG_GETARG_INT32(2);
		if (obs.status < 100 || obs.status > 599)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("status must be an HTTP status code (100 to 599), not %d",
							obs.status)));
	}
	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	now = pgrl_now();
	if (!PG_ARGISNULL(1))
		pgrl_parse_headers(PG_GETARG_JSONB_P(1), now, &obs);

	pgrl_config_lock(LW_SHARED);
	slot = pgrl_model_slot(name);
	known = slot >= 0 && pgrl_ledger_observe(slot, &obs, now, &effect);
	pgrl_config_unlock();
	if (!known)
		pgrl_report_no_model(name);

	values[0] = Int32GetDatum(obs.understood);
	values[1] = Int32GetDatum(obs.ignored);
	for (int d = 0; d < RL_NUM_DIMS; d++)
		if (effect.raised[d])
			raised[num_raised++] = CStringGetTextDatum(pgrl_dimension_names[d]);
	values[2] = PointerGetDatum(construct_array(raised, num_raised, TEXTOID, -1, false,
												TYPALIGN_INT));
	values[3] = TimestampTzGetDatum(effect.cooldown_until);
	nulls[3] = effect.cooldown_until <= now;
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
}
