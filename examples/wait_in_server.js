// LLM calls under pg_ratelimit with node-postgres, waiting for capacity in the server.
//
//   node examples/wait_in_server.js [MODEL [JOBS]]
//
// Connects to $DATABASE_URL, or by default to the database ratelimit_demo on
// the server that PGHOST, PGPORT and PGUSER name.  Each of JOBS jobs (default
// 3) acquires a lease on MODEL (default: the model of Getting started),
// waiting up to 30 s in the server, calls the provider and releases the lease
// with the usage the provider reported.  Needs pg: npm install in examples/.
'use strict';
const { Client } = require('pg');

const DATABASE_URL = process.env.DATABASE_URL ?? 'postgresql:///ratelimit_demo';
const MODEL = process.argv[2] ?? 'openai/gpt-4.1';
const JOBS = Number(process.argv[3] ?? 3);

// A STAND-IN for your provider's client: replace it with the real call.
async function providerCall(prompt) {
  await new Promise((resolve) => setTimeout(resolve, 50));
  const usage = { input_tokens: 800, output_tokens: 250, cached_tokens: 0 };
  return { text: `an answer to '${prompt}'`, usage };
}

async function callLlm(client, prompt, estimate = 1200) {
  const { rows: [grant] } = await client.query(
    `SELECT granted, lease_id, retry_after, limited_by
       FROM ratelimit.rl_acquire($1, tokens => $2, max_wait => '30 seconds')`,
    [MODEL, estimate]);
  if (!grant.granted) throw new Error(`rate limited by ${grant.limited_by}`);
  let response;
  try {
    response = await providerCall(prompt);
  } catch (err) {
    // a release without usage keeps the estimate
    await client.query('SELECT * FROM ratelimit.rl_release($1)', [grant.lease_id]);
    throw err;
  }
  const u = response.usage;
  const { rows: [settled] } = await client.query(
    `SELECT released, tokens_refunded, cost FROM ratelimit.rl_release($1,
       input_tokens => $2, output_tokens => $3, cached_tokens => $4)`,
    [grant.lease_id, u.input_tokens, u.output_tokens, u.cached_tokens ?? 0]);
  console.log(`lease ${grant.lease_id}: released ${settled.released}, ` +
              `${settled.tokens_refunded} tokens refunded, cost ${settled.cost}`);
  return response;
}

async function main() {
  const client = new Client({ connectionString: DATABASE_URL });
  await client.connect();
  try {
    for (let i = 0; i < JOBS; i++) console.log((await callLlm(client, `prompt ${i}`)).text);
  } finally {
    await client.end();
  }
}

main().catch((err) => {
  console.error(err.message);
  process.exitCode = 1;
});
