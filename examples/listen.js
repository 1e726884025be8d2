// LLM calls under pg_ratelimit with node-postgres, waiting for capacity in the client.
//
//   node examples/listen.js [MODEL [JOBS]]
//
// Connects to $DATABASE_URL, or by default to the database ratelimit_demo on
// the server that PGHOST, PGPORT and PGUSER name, and LISTENs on rl_capacity.
// Each of JOBS jobs (default 3) tries to acquire a lease on MODEL (default: the
// model of Getting started); when denied, it waits until a notification names
// the model and tries again.  Then it calls the provider and releases the
// lease with the usage the provider reported.  Needs pg: npm install in examples/.
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

// The next notification that names the model.  Its listener is removed with
// stop(), so the connection never collects listeners, however many calls wait.
function nextNotification(client, model) {
  let listener;
  const notified = new Promise((resolve) => {
    listener = (msg) => {
      if (msg.channel === 'rl_capacity' && JSON.parse(msg.payload).model === model) resolve();
    };
    client.on('notification', listener);
  });
  return { notified, stop: () => client.removeListener('notification', listener) };
}

async function acquireWhenNotified(client, estimate = 1200) {
  for (;;) {
    // listening before the acquire runs: a notification sent meanwhile is not missed
    const next = nextNotification(client, MODEL);
    try {
      const { rows: [g] } = await client.query(
        'SELECT granted, lease_id, limited_by FROM ratelimit.rl_acquire($1, tokens => $2)',
        [MODEL, estimate]);
      if (g.granted) return g.lease_id;
      console.log(`denied by ${g.limited_by}, waiting for a notification`);
      await next.notified;
    } finally {
      next.stop();
    }
  }
}

async function main() {
  const client = new Client({ connectionString: DATABASE_URL });
  await client.connect();
  await client.query('LISTEN rl_capacity');
  try {
    for (let i = 0; i < JOBS; i++) {
      const leaseId = await acquireWhenNotified(client);
      let response;
      try {
        response = await providerCall(`prompt ${i}`);
      } catch (err) {
        await client.query('SELECT * FROM ratelimit.rl_release($1)', [leaseId]);
        throw err;
      }
      const u = response.usage;
      const { rows: [settled] } = await client.query(
        `SELECT released FROM ratelimit.rl_release($1,
           input_tokens => $2, output_tokens => $3, cached_tokens => $4)`,
        [leaseId, u.input_tokens, u.output_tokens, u.cached_tokens ?? 0]);
      console.log(`lease ${leaseId}: released ${settled.released}`);
    }
  } finally {
    await client.end();
  }
}

main().catch((err) => {
  console.error(err.message);
  process.exitCode = 1;
});
