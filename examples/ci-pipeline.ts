/**
 * A CI pipeline: build, then the test suites in parallel, then deploy if every suite passed;
 * a notification goes out whatever happened.
 *
 * The pipeline is declared in one `spawnMany`: each step names the steps it runs `after` by
 * their spawn keys. A step whose dependency failed is `skipped` and never runs; a step with
 * `runRegardless` runs once its dependencies have settled, whatever their outcome. The
 * pipeline runs twice: on a good commit, then on one that breaks the integration tests.
 * Run it with `npx tsx examples/ci-pipeline.ts`.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { NonRetryableError, open } from 'dynatask';

const SUITES = ['unit', 'integration', 'lint'];

type StepReport = { step: string; state: string; detail: string };
type Tasks = {
  pipeline: {
    payload: { commit: string; breaks?: string };
    result: { passed: boolean; steps: StepReport[] };
  };
  build: { payload: { commit: string }; result: { artifact: string } };
  test: { payload: { commit: string; suite: string; broken: boolean }; result: { passed: number } };
  deploy: { payload: { commit: string }; result: { url: string } };
  notify: { payload: { commit: string }; result: string };
};

const dt = await open<Tasks>();

dt.handle('pipeline', async (ctx, { commit, breaks }) => {
  const tests = SUITES.map((suite) => `test:${suite}`);
  const steps = await ctx.spawnMany([
    { type: 'build', payload: { commit }, options: { key: 'build' } },
    // The suites wait for the build, not for each other: they run in parallel.
    ...SUITES.map((suite) => ({
      type: 'test' as const,
      payload: { commit, suite, broken: suite === breaks },
      options: { key: `test:${suite}`, after: ['build'] },
    })),
    // Skipped, with the failed suite as the reason, unless every suite succeeds.
    { type: 'deploy', payload: { commit }, options: { key: 'deploy', after: tests } },
    // Runs once everything before it has settled, whether it succeeded, failed or was skipped.
    {
      type: 'notify',
      payload: { commit },
      options: { key: 'notify', after: ['build', ...tests, 'deploy'], runRegardless: true },
    },
  ]);

  // waitAllSettled, unlike waitAll, returns failures as outcomes instead of throwing, and so
  // observes them: a failed suite fails the pipeline's verdict, not the pipeline job itself.
  const outcomes = await ctx.waitAllSettled(steps);
  const keyOf = new Map(steps.map((s) => [s.id, s.key]));
  const report = outcomes.map((o, i): StepReport => {
    const step = steps[i]!.key;
    if (o.state === 'succeeded') {
      const detail = typeof o.result === 'string' ? o.result : JSON.stringify(o.result);
      return { step, state: o.state, detail };
    }
    // Errors name tasks by id ("dependency <id> (test) failed"): show the step's key instead.
    const detail = o.error.message.replace(/[0-9a-f]{8}-[0-9a-f-]{27}/g, (id) => keyOf.get(id) ?? id);
    return { step, state: o.state, detail: `${o.error.name}: ${detail}` };
  });
  return { passed: outcomes.every((o) => o.state === 'succeeded'), steps: report };
});

dt.handle('build', async (ctx, { commit }) => {
  await sleep(30, undefined, { signal: ctx.signal });
  return { artifact: `app-${commit}.tgz` };
});

// The most suites that ran at once, to show they ran in parallel.
let testsRunning = 0;
let mostTestsRunning = 0;

dt.handle('test', async (ctx, { suite, broken }) => {
  mostTestsRunning = Math.max(mostTestsRunning, ++testsRunning);
  try {
    await sleep(suite === 'integration' ? 60 : 20, undefined, { signal: ctx.signal });
    // A failing test fails the same way on a retry: fail at once instead of retrying.
    if (broken) throw new NonRetryableError(`2 of 48 ${suite} tests failed`);
    return { passed: 48 };
  } finally {
    testsRunning--;
  }
});

dt.handle('deploy', async (ctx, { commit }) => {
  await sleep(20, undefined, { signal: ctx.signal });
  return { url: `https://staging.example/${commit}` };
});

dt.handle('notify', async (ctx, { commit }) => {
  // A real notifier would post to chat; this one reads its siblings' states from the job's tree.
  const { tasks } = await dt.tree(ctx.task.jobId);
  const siblings = tasks.filter((t) => t.parentId === ctx.task.parentId && t.id !== ctx.task.id);
  return `${commit}: ${siblings.map((t) => `${t.key} ${t.state}`).join(', ')}`;
});

await dt.start();
for (const payload of [{ commit: 'a1b2c3d' }, { commit: 'e4f5a6b', breaks: 'integration' }]) {
  mostTestsRunning = 0;
  const job = await dt.submit('pipeline', payload);
  const { passed, steps } = await job.result();
  console.log(`pipeline ${payload.commit}: ${passed ? 'passed' : 'failed'}`);
  for (const s of steps) console.log(`  ${s.step.padEnd(16)} ${s.state.padEnd(9)} ${s.detail}`);
  console.log(`  (test suites running at once: up to ${mostTestsRunning})`);
}
await dt.close();
