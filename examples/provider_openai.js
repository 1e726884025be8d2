// LLM calls under pg_ratelimit with the OpenAI SDK, telling the limiter what the provider said.
//
//   node examples/provider_openai.js [MODEL [JOBS]]
//
// Connects to $DATABASE_URL, or by default to the database ratelimit_demo on
// the server that PGHOST, PGPORT and PGUSER name.  The SDK reads
// $OPENAI_API_KEY and $OPENAI_BASE_URL.  Each of JOBS calls (default 3)
// acquires a lease on MODEL (default openai/gpt-4.1-mini), waiting up to 30 s
// in the server, calls the provider, gives the response's headers and status
// to rl_observe, and releases the lease with the usage the provider reported.
// After a 429 the model pauses for every session until the provider's
// retry-after: the next acquire waits that out in the server, and the call is
// made again.  Needs pg and openai: npm install in examples/.
'use strict';
const { Client } = require('pg');
const OpenAI = require('openai');

const DATABASE_URL = process.env.DATABASE_URL ?? 'postgresql:///ratelimit_demo';
const MODEL = process.argv[2] ?? 'openai/gpt-4.1-mini';
const JOBS = Number(process.argv[3] ?? 3);
const MAX_TOKENS = 200;
// retries are the limiter's job: the SDK must not make its own
const openai = new OpenAI({ maxRetries: 0 });

async function callLlm(client, prompt) {
  // what the provider counts: the prompt (about 4 characters a token) and
  // max_tokens; tokens is the whole, output_tokens the output's part of it
  const promptTokens = Math.floor(prompt.length / 4) + 1;
  for (;;) {
    const { rows: [grant] } = await client.query(
      `SELECT granted, lease_id, limited_by FROM ratelimit.rl_acquire($1,
         tokens => $2, output_tokens => $3, max_wait => '30 seconds')`,
      [MODEL, promptTokens + MAX_TOKENS, MAX_TOKENS]);
    if (!grant.granted) throw new Error(`rate limited by ${grant.limited_by}`);
    let completion, response, failure;
    try {
      ({ data: completion, response } = await openai.chat.completions.create({
        model: MODEL.split('/').pop(),
        max_tokens: MAX_TOKENS,
        messages: [{ role: 'user', content: prompt }],
      }).withResponse());
    } catch (err) {
      if (!(err instanceof OpenAI.APIError) || err.status === undefined) {
        await client.query('SELECT * FROM ratelimit.rl_release($1)', [grant.lease_id]);
        throw err;
      }
      failure = err; // an answer from the provider: its headers count too
    }
    const status = response?.status ?? failure.status;
    const headers = Object.fromEntries(response?.headers ?? failure.headers);
    // every session now sees what the provider has left, and a 429's pause
    const { rows: [seen] } = await client.query(
      'SELECT cooldown_until FROM ratelimit.rl_observe($1, $2, $3)', [MODEL, headers, status]);
    if (status === 429) {
      // the provider took nothing: give it all back, and try again
      await client.query(
        `SELECT * FROM ratelimit.rl_release($1, input_tokens => 0, output_tokens => 0,
                                            requests => 0)`, [grant.lease_id]);
      console.log(`429 from the provider: every session waits until ${seen.cooldown_until?.toISOString()}`);
      continue;
    }
    if (failure) {
      await client.query('SELECT * FROM ratelimit.rl_release($1)', [grant.lease_id]);
      throw failure;
    }
    const u = completion.usage;
    await client.query(
      'SELECT * FROM ratelimit.rl_release($1, input_tokens => $2, output_tokens => $3)',
      [grant.lease_id, u.prompt_tokens, u.completion_tokens]);
    console.log(`lease ${grant.lease_id}: ${u.total_tokens} tokens, ` +
                `the provider has ${headers['x-ratelimit-remaining-tokens']} left`);
    return completion.choices[0].message.content;
  }
}

async function main() {
  const client = new Client({ connectionString: DATABASE_URL });
  await client.connect();
  try {
    for (let i = 0; i < JOBS; i++) console.log(await callLlm(client, `prompt ${i}`));
  } finally {
    await client.end();
  }
}

main().catch((err) => {
  console.error(err.message);
  process.exitCode = 1;
});
