/**
 * Bad input never hurts: thousands of random and malformed requests to every route, sent while
 * a guarded job runs through the same server. No answer may be a 500 or lack the error shape,
 * the server must still answer correctly afterwards, and the guarded job must finish with
 * exact counts (every task succeeded at its first attempt, the result exact).
 */
import { afterAll, beforeAll, it } from 'vitest';
import { fuzzAgainst } from './fixtures/fuzz.js';
import { startServer, type TestServer } from './fixtures/http.js';

const RUNS = Number(process.env.FUZZ_REQUESTS ?? 3000);
const BODY_LIMIT = 64 * 1024;
const LEAVES = 40;

let s: TestServer;
beforeAll(async () => {
  s = await startServer({ bodyLimit: BODY_LIMIT });
});
afterAll(() => s.close());

it(
  `${RUNS} random and malformed requests: no 500, the server still answers, a job alongside is undisturbed`,
  () => fuzzAgainst(s, RUNS, BODY_LIMIT, LEAVES),
  120_000,
);
